"""What the prompt learners of CLIP-style backbones share (CoOp, CoCoOp, VPT, UPT and its ablations): class prompts
with learned context slots, and visual tokens inserted into / replaced in the image encoder's sequence. The backbone
declares where (``BackboneSpec.prompt_sites``); nothing here names a backbone.

Class prompts follow CoOp (KaiyangZhou/CoOp ``trainers/coop.py``): the text "<prefix> <class name>." is tokenised,
where the prefix is ``n_ctx`` placeholder words ("X X X X") or the init phrase; its token embeddings are computed
once per class list (frozen); the embeddings at positions 1..n_ctx are replaced by the learned context, and the
prompt is pooled at the end-of-text token of the tokenised text. Class position "middle" puts the first half of the
context before the class tokens and the rest after them, "front" puts the class tokens first (CoOp's orders)."""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from .base import TuningModule

from ..sites import input_of

CLASS_POSITIONS = ("end", "middle", "front")
PLACEHOLDER = "X"
PROMPT_SITES = ("prompt_sites",)  # what the prompt learners require of a backbone (register_method(requires=...))


def prompt_sites(spec, method: str):
    if spec.prompt_sites is None:
        raise TypeError(f"method {method!r} needs a backbone that classifies with class prompts and declares "
                        "BackboneSpec.prompt_sites (CLIP); this backbone declares none")
    return spec.prompt_sites


class TextPromptProvider(TuningModule):
    """A method whose parameters make the text encoder's class prompts: it installs ``self.provide(classnames,
    image_features)`` on its text prompt site (``self.site``) when attached and removes it when detached."""

    def provide(self, classnames, image_features=None):
        raise NotImplementedError

    def attach(self) -> "TextPromptProvider":
        self.register(self.site.host)
        self.site.install(self.provide)
        return self

    def detach_hooks(self) -> None:
        super().detach_hooks()
        self.site.install(None)


class ClassPrompts:
    """Tokenised class prompts with ``n_ctx`` context slots (not an nn.Module: holds no parameters, only caches of
    frozen embeddings, so learned context transfers to any other class list)."""

    def __init__(self, site, n_ctx: int, prefix: Optional[str] = None, position: str = "end"):
        if position not in CLASS_POSITIONS:
            raise ValueError(f"class_token_position={position!r}: expected one of {CLASS_POSITIONS}")
        self.site, self.n_ctx, self.position = site, n_ctx, position
        self.prefix = prefix if prefix else " ".join([PLACEHOLDER] * n_ctx)
        n_prefix = self.prefix_tokens(site, self.prefix)
        if n_prefix != n_ctx:
            raise ValueError(f"prompt prefix {self.prefix!r} is {n_prefix} tokens, not n_ctx={n_ctx}")
        self._cache = None

    @staticmethod
    def prefix_tokens(site, phrase: str) -> int:
        ids = site.tokenize([phrase])[0]
        return int(ids.argmax()) - 1  # tokens between SOT and EOT

    def _build(self, classnames: list):
        key = (tuple(classnames), self.site.embed.weight.device)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        names = [c.replace("_", " ") for c in classnames]
        ids = self.site.tokenize([f"{self.prefix} {name}." for name in names])
        eot = ids.argmax(dim=-1)
        order = None
        if self.position != "end":
            n, rows = self.n_ctx, []
            length = ids.shape[1]
            for i, name in enumerate(names):
                m = self.prefix_tokens(self.site, name)
                ctx = list(range(1, 1 + n))
                cls = list(range(1 + n, 1 + n + m))
                rest = list(range(1 + n + m, length))
                if self.position == "middle":
                    h = n // 2
                    rows.append([0] + ctx[:h] + cls + ctx[h:] + rest)
                else:
                    rows.append([0] + cls + ctx + rest)
            order = torch.tensor(rows, dtype=torch.long)
        device = self.site.embed.weight.device
        with torch.no_grad():
            base = self.site.embed(ids.to(device)).detach()
        value = (base, eot.to(device), None if order is None else order.to(device))
        self._cache = (key, value)
        return value

    def eot_index(self, classnames: list) -> torch.Tensor:
        return self._build(classnames)[1]

    def assemble(self, ctx: torch.Tensor, classnames: list) -> tuple:
        """Prompt embeddings and pooling positions. ``ctx``: [n, d] (one context for all classes), [K, n, d]
        (class-specific) or, with ``per_image``, see :meth:`assemble_per_image`. Returns ([K, L, d], eot [K])."""
        base, eot, order = self._build(classnames)
        k = base.shape[0]
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(k, -1, -1)
        elif ctx.shape[0] != k:
            raise ValueError(f"class-specific context has {ctx.shape[0]} classes, the class list has {k}: "
                             "class-specific context cannot be used for another class list")
        x = torch.cat([base[:, :1], ctx.to(base.dtype), base[:, 1 + self.n_ctx:]], dim=1)
        if order is not None:
            x = x.gather(1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        return x, eot

    def assemble_per_image(self, ctx: torch.Tensor, classnames: list) -> tuple:
        """``ctx`` [B, n, d] -> prompts [B, K, L, d] (every class with each image's context), eot [K]."""
        base, eot, order = self._build(classnames)
        b, k = ctx.shape[0], base.shape[0]
        c = ctx.to(base.dtype).unsqueeze(1).expand(b, k, -1, -1)
        bb = base.unsqueeze(0).expand(b, -1, -1, -1)
        x = torch.cat([bb[:, :, :1], c, bb[:, :, 1 + self.n_ctx:]], dim=2)
        if order is not None:
            x = x.gather(2, order.unsqueeze(0).unsqueeze(-1).expand(b, -1, -1, x.shape[-1]))
        return x, eot

    def init_from_words(self) -> torch.Tensor:
        """Token embeddings of the prefix words (positions 1..n_ctx of the tokenised prefix), [n_ctx, d]."""
        ids = self.site.tokenize([self.prefix]).to(self.site.embed.weight.device)
        with torch.no_grad():
            return self.site.embed(ids)[0, 1:1 + self.n_ctx].detach().clone()


# ----------------------------------------------------------------------------------------------------------------
# Hooks on the token sequences.


def _pre_hook(owner, module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """``fn(x) -> new x`` replaces the first input of ``module`` (batch-first sequence)."""

    def pre(m, args, kwargs):
        x = input_of(args, kwargs)
        if args:
            return (fn(x),) + tuple(args[1:]), kwargs
        return args, {**kwargs, "hidden_states": fn(x)}

    owner._handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))


def _post_hook(owner, module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    owner._handles.append(module.register_forward_hook(lambda m, args, out: fn(out)))


def insert_tokens(x: torch.Tensor, tokens: torch.Tensor, at: int) -> torch.Tensor:
    """x [B, n, d] with ``tokens`` ([p, d] shared or [B, p, d]) inserted before index ``at``."""
    t = tokens.to(x.dtype)
    if t.dim() == 2:
        t = t.unsqueeze(0).expand(x.shape[0], -1, -1)
    return torch.cat([x[:, :at], t, x[:, at:]], dim=1)


def replace_tokens(x: torch.Tensor, tokens: torch.Tensor, at: int) -> torch.Tensor:
    """x [B, n, d] with positions at..at+p replaced by ``tokens`` ([p, d] or [B, p, d])."""
    t = tokens.to(x.dtype)
    if t.dim() == 2:
        t = t.unsqueeze(0).expand(x.shape[0], -1, -1)
    return torch.cat([x[:, :at], t, x[:, at + t.shape[1]:]], dim=1)


def hook_visual_prompts(owner, site, shallow: Callable[[], torch.Tensor], where: str,
                        deep: Optional[Callable[[int], torch.Tensor]] = None) -> None:
    """Visual prompt tokens: ``shallow()`` -> [p, d] inserted after the class token, before ``ln_pre``
    (``where="pre_ln"``: they are normalised with the patches and get no position embedding, as the UPT release's
    shallow VPT) or after it (``"post_ln"``: VPT-deep's first layer). ``deep(i)`` -> [p, d]: before every later layer
    i >= 1 the prompt outputs of the previous layer are discarded and replaced (VPT-deep). The replacement acts only
    on sequences that received prompts in the same forward pass."""
    if where not in ("pre_ln", "post_ln"):
        raise ValueError(f"visual prompt position {where!r}: expected 'pre_ln' or 'post_ln'")
    state = {"active": False}

    def add(x):
        state["active"] = True
        return insert_tokens(x, shallow(), site.insert_at)

    if where == "pre_ln":
        _pre_hook(owner, site.ln_pre, add)
    else:
        _post_hook(owner, site.ln_pre, add)
    last = len(site.blocks) - 1
    for i, blk in enumerate(site.blocks):
        if i >= 1 and deep is not None:
            _pre_hook(owner, blk, lambda x, i=i: replace_tokens(x, deep(i), site.insert_at)
                      if state["active"] else x)
        if i == last:
            _post_hook(owner, blk, lambda out: (state.__setitem__("active", False), out)[1])


def hook_text_deep_slots(owner, site, slots: Callable[[int], Optional[torch.Tensor]], start: int = 1) -> None:
    """Deep text context: before text layer i >= 1, positions start..start+n of the prompt sequences are replaced by
    ``slots(i)`` ([n, d]); ``slots`` returns None when the sequence is not a learned prompt (hard templates)."""
    for i, blk in enumerate(site.blocks):
        if i >= 1:
            def fn(x, i=i):
                t = slots(i)
                return x if t is None else replace_tokens(x, t, start)
            _pre_hook(owner, blk, fn)
