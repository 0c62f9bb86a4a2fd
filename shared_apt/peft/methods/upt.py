"""UPT, Unified Prompt Tuning (Zang et al., "Unified Vision and Language Prompt Learning", arXiv 2210.07225;
released code yuhangzang/UPT ``trainers/unified.py``): one learnable token set U (text context + visual prompts,
width of the text encoder) passes a lightweight Transformer layer theta; the output is split, the text part replaces
the context slots of the class prompt "a photo of a <class>." and the visual part, mapped to the image width by a
Linear, joins the image sequence as VPT prompts.

Theta as released: ``A = LN1(U + Drop(SA(U)))``, ``U_hat = A + Drop(Linear2(Drop(ReLU(Linear1(LN2(A))))))``, one head,
dropout 0.1, FFN hidden = width. ``token_mixing``:

* ``False``: bit-compatible with the release, which feeds U of shape (1, 2n, d) to a sequence-first
  ``nn.MultiheadAttention``: sequence length 1, so each token attends only to itself and the tokens never interact;
* ``True``: the paper's intent, attention across the 2n tokens (the place where the two modalities meet).

In training the release produces the text half and the visual half by two separate calls of theta (independent
dropout masks); this does the same (in eval both are one deterministic function).

``upt`` is the released shallow architecture (ViT-B/16: 4,096 + 1,050,624 + 2 x 1,024 + 2 x 262,656 + 393,984 =
1,976,064 trainable). ``upt_deep`` is the paper's multi-layer reading (sizes are this project's choice): one U^i per
layer, theta and the visual Linear shared; layer 0's text part enters at the input embedding and its visual part after
``ln_pre``, and before every later layer both replace the previous layer's prompt outputs (as VPT-deep)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import OPTIONAL_POSITIVE_INT, POSITIVE_INT, PROBABILITY, MethodConfig, option
from ..registry import register_method
from .base import TuningModule
from .coop import context_prompts
from .prompt_learning import (PROMPT_SITES, hook_text_deep_slots, hook_visual_prompts,
                              prompt_sites)


@dataclass
class UPTConfig(MethodConfig):
    """UPT's options; flat (Sacred) keys ``upt_<option>``."""

    legacy_prefix: ClassVar[str] = "upt_"

    ctx_init: str = option("a photo of a", None,
                           "the template whose words are replaced (fixes n_ctx; its embeddings are not used)")
    n_ctx: Optional[int] = option(None, OPTIONAL_POSITIVE_INT,
                                  "text context tokens (None: the token count of ctx_init)", type=int)
    num_prompts: int = option(4, POSITIVE_INT, "visual prompt tokens")
    token_mixing: bool = option(False, None,
                                "False: released behaviour (per-token); True: attention across the tokens (paper)")
    heads: int = option(1, POSITIVE_INT, "attention heads of theta")
    ffn_dim: Optional[int] = option(None, OPTIONAL_POSITIVE_INT,
                                    "theta's FFN hidden width (None: the text width, as released)", type=int)
    dropout: float = option(0.1, PROBABILITY, "theta's dropout")


@dataclass
class UPTDeepConfig(UPTConfig):
    """UPT's options, the paper's multi-layer reading (token mixing on by default)."""

    method: ClassVar[str] = ""
    token_mixing: bool = option(True, None,
                                "False: released behaviour (per-token); True: attention across the tokens (paper)")


class UPTLayer(nn.Module):
    """Theta: the released lightweight Transformer layer (post-norm attention, pre-norm FFN)."""

    def __init__(self, width: int, heads: int, ffn_dim: int, dropout: float, token_mixing: bool, device=None):
        super().__init__()
        self.token_mixing = token_mixing
        self.self_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True, device=device)
        self.norm1 = nn.LayerNorm(width, device=device)
        self.norm2 = nn.LayerNorm(width, device=device)
        self.linear1 = nn.Linear(width, ffn_dim, device=device)
        self.linear2 = nn.Linear(ffn_dim, width, device=device)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u [S, T, d]: S token sets (layers) of T tokens; tokens interact only within a set, and only if
        ``token_mixing``."""
        x = u if self.token_mixing else u.reshape(-1, 1, u.shape[-1])
        a = self.norm1(x + self.dropout1(self.self_attn(x, x, x, need_weights=False)[0]))
        h = a + self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(self.norm2(a))))))
        return h.reshape(u.shape)


class TokenMLP(nn.Module):
    """Two token-wise Linear layers with a ReLU (the UPT paper's "MLP" ablation)."""

    def __init__(self, width: int, hidden: int, device=None):
        super().__init__()
        self.linear1 = nn.Linear(width, hidden, device=device)
        self.linear2 = nn.Linear(hidden, width, device=device)

    def forward(self, u):
        return self.linear2(F.relu(self.linear1(u)))


class UnifiedPrompts(TuningModule):
    """Text context and visual prompts generated from one token set ``uni_ctx`` [layers, T, d_text] by ``generator``
    (theta, an MLP, or nothing). ``shared``: the same n tokens serve as text context and (projected) visual prompts;
    otherwise the first n_ctx tokens are text and the rest visual. ``deep``: one token set per layer."""

    def __init__(self, method: str, sites, ctx_init: str, n_ctx: Optional[int], num_prompts: int,
                 generator: Optional[nn.Module], deep: bool = False, shared: bool = False):
        super().__init__()
        self.method = method
        self.text_site, self.visual_site = sites.text, sites.visual
        self.prompts = context_prompts(self.text_site, n_ctx, ctx_init)
        self.n_text = self.prompts.n_ctx
        self.n_vis = self.n_text if shared else num_prompts
        self.shared, self.deep = shared, deep
        layers = len(self.text_site.blocks)
        if deep and layers != len(self.visual_site.blocks):
            raise ValueError(f"{method}: deep prompts need as many text layers ({layers}) as image layers "
                             f"({len(self.visual_site.blocks)})")
        d, device = self.text_site.dim, self.text_site.embed.weight.device
        tokens = self.n_text if shared else self.n_text + self.n_vis
        self.uni_ctx = nn.Parameter(torch.empty(layers if deep else 1, tokens, d, device=device))
        self.generator = generator
        self.mlp = nn.Linear(d, self.visual_site.dim, device=device)  # text width -> image width
        with torch.no_grad():
            nn.init.normal_(self.uni_ctx, std=0.02)
        self._visual = None
        self._text = None

    def generate(self) -> torch.Tensor:
        return self.uni_ctx if self.generator is None else self.generator(self.uni_ctx)

    def text_part(self) -> torch.Tensor:
        return self.generate()[:, :self.n_text]

    def visual_part(self) -> torch.Tensor:
        u = self.generate()
        return self.mlp(u if self.shared else u[:, self.n_text:])

    def provide(self, classnames, image_features=None):
        t = self.text_part()
        if self.deep:
            self._text = t
        return self.prompts.assemble(t[0], classnames)

    def _shallow_visual(self):
        v = self.visual_part()
        self._visual = v
        return v[0]

    def _text_slot(self, i: int):
        if self._text is None:
            return None
        t = self._text[i]
        if i == self._text.shape[0] - 1:
            self._text = None
        return t

    def attach(self) -> "UnifiedPrompts":
        self.register(self.text_site.host)
        self.text_site.install(self.provide)
        if self.deep:
            hook_visual_prompts(self, self.visual_site, self._shallow_visual, "post_ln", lambda i: self._visual[i])
            hook_text_deep_slots(self, self.text_site, self._text_slot, start=1)
        else:
            hook_visual_prompts(self, self.visual_site, self._shallow_visual, "pre_ln")
        return self

    def detach_hooks(self) -> None:
        super().detach_hooks()
        self.text_site.install(None)


def _upt(spec, config: UPTConfig, deep: bool) -> list:
    sites = prompt_sites(spec, config.method)
    d = sites.text.dim
    theta = UPTLayer(d, config.heads, config.ffn_dim or d, config.dropout, config.token_mixing,
                     device=sites.text.embed.weight.device)
    return [UnifiedPrompts(config.method, sites, config.ctx_init, config.n_ctx, config.num_prompts, theta,
                           deep=deep).attach()]


def attach(spec, config: UPTConfig) -> list:
    return _upt(spec, config, deep=False)


def attach_deep(spec, config: UPTDeepConfig) -> list:
    return _upt(spec, config, deep=True)


register_method("upt", UPTConfig, attach, requires=PROMPT_SITES)
register_method("upt_deep", UPTDeepConfig, attach_deep, requires=PROMPT_SITES)
