"""CoOp, Context Optimization (Zhou et al., IJCV 2022; KaiyangZhou/CoOp ``trainers/coop.py``): ``n_ctx`` learned
context vectors replace the words of the class prompt "<context> <class name>." of a frozen CLIP.

* ``ctx_init`` words (e.g. "a photo of a"): n_ctx = their token count, context initialised with their token
  embeddings; empty: N(0, 0.02^2) context and the placeholder prefix "X X ... X".
* ``class_specific``: one context per class ([n_cls, n_ctx, d], CoOp's CSC), which cannot transfer to other classes.
* ``class_token_position``: "end", "middle" or "front" (CoOp's orders).
Trainable: n_ctx x d (ViT-B/16: 4 x 512 = 2,048; 16 x 512 = 8,192), CSC n_cls times that."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
from torch import nn

from ..config import OPTIONAL_POSITIVE_INT, MethodConfig, OptionValueError, one_of, option
from ..registry import register_method
from .prompt_learning import CLASS_POSITIONS, ClassPrompts, PROMPT_SITES, TextPromptProvider, prompt_sites


@dataclass
class CoOpConfig(MethodConfig):
    """CoOp's options; flat (Sacred) keys ``coop_<option>``."""

    legacy_prefix: ClassVar[str] = "coop_"

    n_ctx: Optional[int] = option(None, OPTIONAL_POSITIVE_INT,
                                  "context tokens (None: 16 with random init, the token count of ctx_init otherwise)",
                                  type=int)
    ctx_init: str = option("", None, 'init words, e.g. "a photo of a" (base-to-new); "" = random N(0, 0.02^2)')
    class_specific: bool = option(False, None, "CSC: one context per class")
    n_cls: Optional[int] = option(None, OPTIONAL_POSITIVE_INT, "number of classes (class_specific only)", type=int)
    class_token_position: str = option("end", one_of(*CLASS_POSITIONS), "where the class tokens go")

    def validate(self) -> None:
        super().validate()
        if self.class_specific and self.n_cls is None:
            raise OptionValueError(self.method, "n_cls", self.n_cls,
                                   "the number of classes (an integer >= 1) when class_specific=True")
        if not self.class_specific and self.n_cls is not None:
            raise OptionValueError(self.method, "n_cls", self.n_cls, "None unless class_specific=True")


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


class CoOp(TextPromptProvider):
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


def attach(spec, config: CoOpConfig) -> list:
    return [CoOp(prompt_sites(spec, config.method).text, config).attach()]


register_method("coop", CoOpConfig, attach, requires=PROMPT_SITES)
