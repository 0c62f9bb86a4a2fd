"""CoCoOp, Conditional Context Optimization (Zhou et al., CVPR 2022; KaiyangZhou/CoOp ``trainers/cocoop.py``): CoOp's
context plus a meta-net pi = Linear(D, D // 16) -> ReLU -> Linear(D // 16, D) of the L2-normalised image feature,
added to every context token, so each image gets its own class prompts (the text encoder runs B x K prompts).
Trainable at ViT-B/16: meta-net 16,416 + 16,896, context 4 x 512: 35,360."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
from torch import nn

from ..config import OPTIONAL_POSITIVE_INT, POSITIVE_INT, MethodConfig, option
from ..registry import register_method
from .coop import context_prompts
from .prompt_learning import PROMPT_SITES, TextPromptProvider, prompt_sites


@dataclass
class CoCoOpConfig(MethodConfig):
    """CoCoOp's options; flat (Sacred) keys ``cocoop_<option>``."""

    legacy_prefix: ClassVar[str] = "cocoop_"

    n_ctx: Optional[int] = option(None, OPTIONAL_POSITIVE_INT,
                                  "context tokens (None: the token count of ctx_init, 16 if it is empty)", type=int)
    ctx_init: str = option("a photo of a", None, "init words (CoCoOp's vit_b16_c4_ep10_batch1_ctxv1)")
    meta_hidden_ratio: int = option(16, POSITIVE_INT, "meta-net hidden width = feature_dim // ratio")


class CoCoOp(TextPromptProvider):
    method = "cocoop"

    def __init__(self, sites, config: CoCoOpConfig):
        super().__init__()
        self.site = sites.text
        self.prompts = context_prompts(self.site, config.n_ctx, config.ctx_init)
        n, d, f = self.prompts.n_ctx, self.site.dim, sites.feature_dim
        device = self.site.embed.weight.device
        self.ctx = nn.Parameter(torch.empty(n, d, device=device))
        hidden = f // config.meta_hidden_ratio
        if hidden < 1:
            raise ValueError(f"cocoop meta-net hidden width {f} // {config.meta_hidden_ratio} is 0")
        self.meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(f, hidden, device=device)), ("relu", nn.ReLU(inplace=True)),
            ("linear2", nn.Linear(hidden, d, device=device))]))
        with torch.no_grad():
            if config.ctx_init:
                self.ctx.copy_(self.prompts.init_from_words())
            else:
                nn.init.normal_(self.ctx, std=0.02)

    def provide(self, classnames, image_features):
        if image_features is None:
            raise RuntimeError("CoCoOp prompts depend on the image: the backbone must pass the normalised image "
                               "features to the text prompt provider")
        bias = self.meta_net(image_features.to(self.ctx.dtype))  # [B, d]
        return self.prompts.assemble_per_image(self.ctx.unsqueeze(0) + bias.unsqueeze(1), classnames)


def attach(spec, config: CoCoOpConfig) -> list:
    return [CoCoOp(prompt_sites(spec, config.method), config).attach()]


register_method("cocoop", CoCoOpConfig, attach, requires=PROMPT_SITES)
