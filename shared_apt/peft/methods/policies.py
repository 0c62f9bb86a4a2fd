"""The two methods without modules: ``full`` (every parameter trains) and ``classifier`` (only the backbone's common
trainable set: task heads, poolers, modal-type embeddings, class token)."""
from __future__ import annotations

from dataclasses import dataclass

from ..config import MethodConfig
from ..registry import register_method


@dataclass
class FullConfig(MethodConfig):
    """Full fine-tuning: no options."""


@dataclass
class ClassifierConfig(MethodConfig):
    """Classifier only (linear probing of the heads): no options."""


def attach_nothing(spec, config) -> list:
    return []


register_method("full", FullConfig, attach_nothing, trains_backbone=True)
register_method("classifier", ClassifierConfig, attach_nothing)
