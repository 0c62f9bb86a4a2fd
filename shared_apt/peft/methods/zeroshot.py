"""Zero-shot CLIP (Radford et al. 2021; CoOp's ``ZeroshotCLIP``): the hand-written template per class, nothing
attached, nothing trained."""
from __future__ import annotations

from dataclasses import dataclass

from ..config import MethodConfig
from ..registry import register_method
from .prompt_learning import PROMPT_SITES, prompt_sites


@dataclass
class ZeroShotConfig(MethodConfig):
    """No options."""


def attach(spec, config: ZeroShotConfig) -> list:
    prompt_sites(spec, config.method)
    return []


register_method("zeroshot", ZeroShotConfig, attach, requires=PROMPT_SITES)
