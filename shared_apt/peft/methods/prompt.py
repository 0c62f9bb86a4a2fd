"""Shallow and deep prompt tuning (VPT-style), as the APT authors' baselines implement them (docs/methods.md, baselines).

* Shallow: p learnable tokens join the token sequence once, before the first layer, and flow through every layer.
* Deep: every attention module gets its own p tokens; they enter as extra keys/values only (through the module's own
  frozen normalisation and projections); queries of prompt positions are never formed and prompt outputs are
  discarded, so the sequence length of the backbone does not change.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..config import MethodConfig, POSITIVE_INT, one_of, option
from ..registry import register_method
from .base import TuningModule


@dataclass
class ShallowPromptConfig(MethodConfig):
    """Shallow prompt; flat (Sacred) keys ``num_prompts``, ``prompt_placement``. Paper setting: p = 200."""

    legacy_prefix: ClassVar[str] = "prompt_"
    unprefixed: ClassVar[tuple] = ("num_prompts",)
    paper_options: ClassVar[tuple] = ("num_prompts",)

    num_prompts: int = option(200, POSITIVE_INT, "p: prompt tokens per sequence site")
    placement: str = option("default", one_of("default", "append", "prepend"),
                            "backbone default (ViLT append, METER prepend) or forced")


@dataclass
class DeepPromptConfig(MethodConfig):
    """Deep prompt; flat (Sacred) keys ``num_prompts``, ``deep_prompt_sites``. Paper setting: p = 200."""

    legacy_prefix: ClassVar[str] = "deep_prompt_"
    unprefixed: ClassVar[tuple] = ("num_prompts",)
    paper_options: ClassVar[tuple] = ("num_prompts",)

    num_prompts: int = option(200, POSITIVE_INT, "p: prompt tokens per attention module")
    sites: str = option("all", one_of("all", "cross"),
                        "all: every attention module (paper); cross: cross-attention only (METER's official code)")


def vpt_uniform_bound(dim: int, patch: int = 16) -> float:
    """VPT's Xavier-uniform bound sqrt(6 / (3 * patch^2 + d)), literally with patch 16 as the official code."""
    return math.sqrt(6.0 / (3 * patch * patch + dim))


class PromptTokens(TuningModule):
    def __init__(self, dim: int, num_prompts: int):
        super().__init__()
        self.prompts = nn.Parameter(torch.empty(num_prompts, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        v = vpt_uniform_bound(self.prompts.shape[1])
        with torch.no_grad():
            nn.init.uniform_(self.prompts, -v, v)


class ShallowPrompt(PromptTokens):
    method = "shallow_prompt"

    def attach(self, site, placement: str) -> "ShallowPrompt":
        self.register(site.host)
        site.install(lambda batch: self.prompts.unsqueeze(0).expand(batch, -1, -1), placement)
        self._uninstall = lambda: site.install(None, placement)
        return self

    def detach_hooks(self) -> None:
        super().detach_hooks()
        if getattr(self, "_uninstall", None):
            self._uninstall()


class DeepPrompt(PromptTokens):
    method = "deep_prompt"

    def attach(self, site) -> "DeepPrompt":
        self.register(site.host)
        norm = site.kv_norm
        site.install_extra_kv(lambda: norm(self.prompts) if norm is not None else self.prompts)
        self._uninstall = lambda: site.install_extra_kv(None)
        return self

    def detach_hooks(self) -> None:
        super().detach_hooks()
        if getattr(self, "_uninstall", None):
            self._uninstall()


def attach_shallow(spec, config: ShallowPromptConfig) -> list:
    """One prompt set of ``num_prompts`` tokens per sequence site (one for ViLT; text and image streams for METER)."""
    sites = spec.shallow_sites()
    if not sites:
        raise ValueError(f"backbone {spec.signature.get('backbone')} declares no sequence site for shallow prompts")
    mods = []
    for site in sites:
        placement = site.default_placement if config.placement == "default" else config.placement
        mods.append(ShallowPrompt(site.dim, config.num_prompts).attach(site, placement))
    return mods


def attach_deep(spec, config: DeepPromptConfig) -> list:
    """One prompt set per attention site; ``sites="cross"``: cross-attention sites only (the METER variant of the
    authors' code: prompts are extra keys/values of the other stream, entering raw)."""
    sites = [s for s in spec.attention_sites if config.sites == "all" or s.kind == "cross"]
    if not sites:
        raise ValueError(f"deep_prompt_sites={config.sites!r}: backbone {spec.signature.get('backbone')} has no "
                         f"such attention site")
    return [DeepPrompt(site.dim, config.num_prompts).attach(site) for site in sites]


register_method("shallow_prompt", ShallowPromptConfig, attach_shallow)
register_method("deep_prompt", DeepPromptConfig, attach_deep)
