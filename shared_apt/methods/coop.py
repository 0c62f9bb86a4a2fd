"""CoOp, Context Optimization (Zhou et al., IJCV 2022; KaiyangZhou/CoOp ``trainers/coop.py``): ``n_ctx`` learned
context vectors replace the words of the class prompt "<context> <class name>." of a frozen CLIP.

* ``ctx_init`` words (e.g. "a photo of a"): n_ctx = their token count, context initialised with their token
  embeddings; empty: N(0, 0.02^2) context and the placeholder prefix "X X ... X".
* ``class_specific``: one context per class ([n_cls, n_ctx, d], CoOp's CSC), which cannot transfer to other classes.
* ``class_token_position``: "end", "middle" or "front" (CoOp's orders).
Trainable: n_ctx x d (ViT-B/16: 4 x 512 = 2,048; 16 x 512 = 8,192), CSC n_cls times that."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from .base import TuningModule
from .options import MethodOptions, positive_int
from .prompt_learning import CLASS_POSITIONS, ClassPrompts, prompt_sites


@dataclass
class CoOpConfig(MethodOptions):
    method = "coop"
    n_ctx: Optional[int] = None            # None: 16 with random init, the token count of ctx_init otherwise
    ctx_init: str = ""                     # e.g. "a photo of a" (CoOp's base-to-new setting); "" = random
    class_specific: bool = False           # CSC: one context per class
    n_cls: Optional[int] = None            # number of classes (class_specific only)
    class_token_position: str = "end"      # end | middle | front

    def check(self) -> list:
        bad = []
        if self.n_ctx is not None and not positive_int(self.n_ctx):
            bad.append(("n_ctx", self.n_ctx, "an integer >= 1 or None"))
        if self.class_token_position not in CLASS_POSITIONS:
            bad.append(("class_token_position", self.class_token_position, f"one of {CLASS_POSITIONS}"))
        if self.class_specific and not positive_int(self.n_cls):
            bad.append(("n_cls", self.n_cls, "the number of classes (an integer >= 1) when class_specific=True"))
        if not self.class_specific and self.n_cls is not None:
            bad.append(("n_cls", self.n_cls, "None unless class_specific=True"))
        return bad


def context_prompts(site, n_ctx: Optional[int], ctx_init: str, position: str = "end",
                    default_n_ctx: int = 16) -> ClassPrompts:
    """The class prompts of a context of ``n_ctx`` tokens (or of the words of ``ctx_init``)."""
    if ctx_init:
        n_words = ClassPrompts.prefix_tokens(site, ctx_init)
        if n_ctx is not None and n_ctx != n_words:
            raise ValueError(f"n_ctx={n_ctx} but ctx_init={ctx_init!r} is {n_words} tokens: give one of them "
                             "(n_ctx follows the init words)")
        return ClassPrompts(site, n_words, ctx_init, position)
    return ClassPrompts(site, n_ctx or default_n_ctx, None, position)


class CoOp(TuningModule):
    method = "coop"

    def __init__(self, site, config: CoOpConfig):
        super().__init__()
        self.site = site
        self.prompts = context_prompts(site, config.n_ctx, config.ctx_init, config.class_token_position)
        n, d = self.prompts.n_ctx, site.dim
        shape = (config.n_cls, n, d) if config.class_specific else (n, d)
        self.ctx = nn.Parameter(torch.empty(shape, device=site.embed.weight.device))
        with torch.no_grad():
            if config.ctx_init:
                self.ctx.copy_(self.prompts.init_from_words().expand(shape))
            else:
                nn.init.normal_(self.ctx, std=0.02)

    def provide(self, classnames, image_features=None):
        return self.prompts.assemble(self.ctx, classnames)

    def attach(self) -> "CoOp":
        self.register(self.site.host)
        self.site.install(self.provide)
        return self

    def detach_hooks(self) -> None:
        super().detach_hooks()
        self.site.install(None)


def attach(spec, config: CoOpConfig) -> list:
    return [CoOp(prompt_sites(spec, config.method).text, config).attach()]
