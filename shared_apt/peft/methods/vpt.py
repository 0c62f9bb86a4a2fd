"""VPT on a CLIP image encoder, as the UPT release runs it (yuhangzang/UPT ``trainers/vpt_shallow.py``,
``vpt_deep.py``, ``clip/model.py``); the text side keeps the hand-written template.

* ``vpt_shallow``: p tokens (width of the image encoder, N(0, 0.02^2)) inserted after the class token, after the
  position embedding and before ``ln_pre`` (no position embedding; ``ln_pre`` normalises them), through every layer.
  ViT-B/16, p = 4: 3,072.
* ``vpt_deep``: p tokens per layer ([layers, p, d]); layer 0's are inserted after ``ln_pre``, and before every later
  layer the prompt outputs are discarded and replaced by that layer's prompts. ViT-B/16: 12 x 4 x 768 = 36,864.
The class token alone is pooled. (The official VPT, KMnP/vpt, uses xavier-uniform init and has no ln_pre.)"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..config import POSITIVE_INT, MethodConfig, option
from ..registry import register_method
from .base import TuningModule
from .prompt_learning import PROMPT_SITES, hook_visual_prompts, prompt_sites


@dataclass
class VPTShallowConfig(MethodConfig):
    """VPT-shallow on a class-prompt backbone's image encoder; flat (Sacred) key ``vpt_num_prompts``."""

    legacy_prefix: ClassVar[str] = "vpt_"

    num_prompts: int = option(4, POSITIVE_INT, "visual prompt tokens")


@dataclass
class VPTDeepConfig(VPTShallowConfig):
    """VPT-deep: the same option, one prompt set per layer."""

    method: ClassVar[str] = ""


class VisualPrompts(TuningModule):
    def __init__(self, site, num_prompts: int, deep: bool):
        super().__init__()
        self.method = "vpt_deep" if deep else "vpt_shallow"
        self.site, self.deep = site, deep
        shape = (len(site.blocks), num_prompts, site.dim) if deep else (num_prompts, site.dim)
        self.prompts = nn.Parameter(torch.empty(shape, device=site.ln_pre.weight.device))
        with torch.no_grad():
            nn.init.normal_(self.prompts, std=0.02)

    def attach(self) -> "VisualPrompts":
        self.register(self.site.host)
        if self.deep:
            hook_visual_prompts(self, self.site, lambda: self.prompts[0], "post_ln", lambda i: self.prompts[i])
        else:
            hook_visual_prompts(self, self.site, lambda: self.prompts, "pre_ln")
        return self


def attach_shallow(spec, config: VPTShallowConfig) -> list:
    return [VisualPrompts(prompt_sites(spec, config.method).visual, config.num_prompts, deep=False).attach()]


def attach_deep(spec, config: VPTDeepConfig) -> list:
    return [VisualPrompts(prompt_sites(spec, config.method).visual, config.num_prompts, deep=True).attach()]


register_method("vpt_shallow", VPTShallowConfig, attach_shallow, requires=PROMPT_SITES)
register_method("vpt_deep", VPTDeepConfig, attach_deep, requires=PROMPT_SITES)
