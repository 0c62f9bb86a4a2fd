"""APT, Approximated Prompt Tuning (AAAI 2024), as the authors' released code computes it (Wang et al., arXiv:2306.15706; DoubtedSteam/APT; docs/methods.md).

Per attention module with query-side input X [B, n, d] and output O [B, n, d] (after the output projection):

    K      = P' + (P' W1) W2                  [p, d]   (identity / dense variants: Table 3)
    A      = ReLU(X K^T)                      [B, n, p] single head, no scaling, no mask, no softmax
    alpha  = max_j A[..., j]  (detached)      [B, n, 1] per input token
    dX     = alpha * (A P')                   [B, n, d]
    out    = e^s * (O + dX)

``apt_delta`` below is THE definition of the method. ``_FusedAPT`` computes the same thing with a hand-written
backward (one saved n x p matrix, no autograd graph of five small ops); tests hold it equal to ``apt_delta``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import BOOL, MethodConfig, POSITIVE_INT, PROBABILITY, one_of, option
from ..registry import register_method
from ..sites import map_output
from .base import InputStash, TuningModule

APT_VARIANTS = ("lowrank", "identity", "dense")
APT_ALPHA_MODES = ("token", "prompt", "global", "none")


@dataclass
class APTConfig(MethodConfig):
    """APT's options; flat (Sacred) keys ``num_prompts`` and ``apt_<option>``. Paper setting: p = 200, r = 4."""

    legacy_prefix: ClassVar[str] = "apt_"
    unprefixed: ClassVar[tuple] = ("num_prompts",)
    paper_options: ClassVar[tuple] = ("num_prompts", "rank")
    runtime_options: ClassVar[tuple] = ("fast",)
    unset_defaults: ClassVar[dict] = {"train_scale": True}

    num_prompts: int = option(200, POSITIVE_INT, "p: prompts per attention module")
    rank: int = option(4, POSITIVE_INT, "r of W1 (d x r) and W2 (r x d)")
    variant: str = option("lowrank", one_of(*APT_VARIANTS),
                          "Table 3: lowrank K = P' + P'W1W2; identity K = P'; dense K = P' + Linear(P')")
    alpha: str = option("token", one_of(*APT_ALPHA_MODES),
                        "token: row max of ReLU(XK^T) per input token (official); prompt / global / none: ablations")
    detach_alpha: bool = option(True, BOOL, "official: alpha carries no gradient")
    train_scale: Optional[bool] = option(
        None, (lambda v: v is None or isinstance(v, bool), "None (the backbone's official choice), True or False"),
        "None: as the authors' code per backbone (ViLT trains s, METER's name filter leaves it frozen); "
        "True (the paper: s is learnable) / False force it")
    dropout: float = option(0.0, PROBABILITY, "dropout on A (the attention dropout: 0 for ViLT and METER)")
    fast: bool = option(True, BOOL, "fused kernel (same math as apt_delta)")
    gate: bool = option(False, BOOL, "zero-start gate (not in the paper): dX times a scalar g initialised to 0")


def apt_scores(x: torch.Tensor, keys: torch.Tensor, dropout_p: float = 0.0, training: bool = False) -> torch.Tensor:
    """APT's scores A = ReLU(X K^T) [B, n, p] (single head, no scaling, no mask), with the optional dropout on A."""
    a = torch.relu(x @ keys.transpose(-1, -2))
    if dropout_p > 0.0:
        a = F.dropout(a, dropout_p, training)
    return a


def apt_delta(x: torch.Tensor, keys: torch.Tensor, prompts: torch.Tensor, alpha: str = "token",
              detach_alpha: bool = True, dropout_p: float = 0.0, training: bool = False) -> torch.Tensor:
    """Reference APT update dX = alpha * ReLU(X K^T) P' (docs/methods.md).

    ``alpha``: "token" (official: per input token, max over the p prompts of A), "prompt" (per prompt, max over the
    d features of K), "global" (one max over K), "none" (alpha = 1). The last three are docs/methods.md's ablation readings."""
    a = apt_scores(x, keys, dropout_p, training)  # [B, n, p]
    if alpha == "token":
        scale = a.amax(dim=-1, keepdim=True)
    elif alpha == "prompt":
        scale = keys.amax(dim=-1)  # [p]: weights each prompt's column of A
    elif alpha == "global":
        scale = keys.amax()
    elif alpha == "none":
        return a @ prompts
    else:
        raise ValueError(f"apt alpha mode {alpha!r} unknown")
    if detach_alpha:
        scale = scale.detach()
    if alpha == "prompt":
        return (a * scale) @ prompts
    return scale * (a @ prompts)


class _FusedAPT(torch.autograd.Function):
    """alpha * (ReLU(X K^T) P') with alpha = detached row max, and its backward written out:

    dY = alpha*G;  dA = dY P'^T;  dP' = A^T dY;  dS = dA * [A > 0];  dX = dS K;  dK = dS^T X.
    Saves X, K, P' and A (the relu mask is A > 0), nothing else. The three inputs arrive in one dtype (the
    caller casts them, see ``apt_delta_fused``) and everything inside runs in that dtype with autocast off, so saved
    tensors and gradients keep consistent dtypes under bf16 / fp16 autocast. First order only: asking for a graph
    of the backward (``create_graph=True``) is refused."""

    @staticmethod
    def forward(ctx, x, keys, prompts):
        with _autocast_off(x.device.type):
            a = torch.relu(torch.matmul(x, keys.t()))
            alpha = a.amax(dim=-1, keepdim=True)
            out = torch.matmul(a, prompts).mul_(alpha)
        ctx.save_for_backward(x, keys, prompts, a, alpha)
        return out

    @staticmethod
    def backward(ctx, grad):
        if torch.is_grad_enabled():
            raise RuntimeError(
                "APT's fused function (shared_apt.peft.methods.apt._FusedAPT) has no double backward: a backward with "
                "create_graph=True would give wrong second-order gradients. Set the peft option apt_fast=False "
                "(the reference path apt_delta, differentiable twice) for higher-order gradients.")
        x, keys, prompts, a, alpha = ctx.saved_tensors
        with _autocast_off(x.device.type):
            dy = grad.to(a.dtype) * alpha
            gx = gk = gp = None
            p = a.shape[-1]
            if ctx.needs_input_grad[2]:
                gp = a.reshape(-1, p).t().matmul(dy.reshape(-1, dy.shape[-1]))
            if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
                ds = torch.matmul(dy, prompts.t()).mul_(a > 0)
                if ctx.needs_input_grad[0]:
                    gx = torch.matmul(ds, keys)
                if ctx.needs_input_grad[1]:
                    gk = ds.reshape(-1, p).t().matmul(x.reshape(-1, x.shape[-1]))
        return gx, gk, gp


def _autocast_off(device_type: str):
    return torch.autocast(device_type, enabled=False) if device_type in ("cuda", "cpu", "xpu", "mps") \
        else contextlib.nullcontext()


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The dtype APT's matrix products run in: the autocast dtype when autocast is on for the tensors' device
    (as ``torch.matmul`` itself would run), else the promoted dtype of the inputs."""
    device_type = tensors[0].device.type
    if device_type in ("cuda", "cpu", "xpu", "mps") and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def apt_delta_fused(x: torch.Tensor, keys: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
    """Same value and gradients as ``apt_delta(x, keys, prompts)`` with the official options, also under autocast
    (the inputs are cast to the autocast dtype, as the matmuls of ``apt_delta`` are; gradients flow back to the
    inputs' own dtypes)."""
    dtype = compute_dtype(x, keys, prompts)
    return _FusedAPT.apply(x.to(dtype), keys.to(dtype), prompts.to(dtype))


@contextlib.contextmanager
def cached_keys(model: nn.Module):
    """Inference helper: inside the block every APT module of ``model`` computes K = P' + P'W1W2 once per (device,
    dtype, autocast state) and reuses it. The caller promises that no APT parameter changes inside the block
    (in-place edits through ``.data`` cannot be detected); the cache is dropped on exit. Outside such a block K is
    computed in every forward (2pdr multiply-adds, negligible next to the 2npd of the method), so training, EMA
    updates, dtype moves and autocast switches can never see a stale K."""
    mods = [m for m in model.modules() if isinstance(m, APTModule)]
    for m in mods:
        m._key_cache = {}
    try:
        yield model
    finally:
        for m in mods:
            m._key_cache = None


class APTModule(TuningModule):
    method = "apt"

    def __init__(self, dim: int, num_prompts: int = 200, rank: int = 4, variant: str = "lowrank",
                 alpha: str = "token", detach_alpha: bool = True, train_scale: bool = True,
                 dropout: float = 0.0, fast: bool = True, gate: bool = False):
        super().__init__()
        self.dim, self.num_prompts, self.rank, self.variant = dim, num_prompts, rank, variant
        self.alpha, self.detach_alpha, self.dropout, self.fast = alpha, detach_alpha, dropout, fast
        self.prompts = nn.Parameter(torch.empty(num_prompts, dim))
        if variant == "lowrank":
            self.w1 = nn.Parameter(torch.empty(dim, rank))
            self.w2 = nn.Parameter(torch.empty(rank, dim))
        elif variant == "dense":
            self.dense = nn.Linear(dim, dim)
        elif variant != "identity":
            raise ValueError(f"apt variant {variant!r} unknown (lowrank, identity, dense)")
        self.log_scale = nn.Parameter(torch.zeros(1), requires_grad=train_scale)
        self.fixed_parameters = () if train_scale else ("log_scale",)
        # zero-start gate (not in the paper): out = e^s (O + g dX) with g = 0 at init, so training starts exactly at
        # the base model while every APT parameter still receives gradient once g moves
        self.gate = nn.Parameter(torch.zeros(1)) if gate else None
        self._stash = InputStash()
        self._key_cache = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official initialisation: P' ~ N(0, 0.02^2), W1 ~ N(0, 1), W2 = 0, s = 0 (dense: zero map)."""
        with torch.no_grad():
            nn.init.normal_(self.prompts, std=0.02)
            if self.variant == "lowrank":
                nn.init.normal_(self.w1, std=1.0)
                nn.init.zeros_(self.w2)
            elif self.variant == "dense":
                nn.init.zeros_(self.dense.weight)
                nn.init.zeros_(self.dense.bias)
            self.log_scale.zero_()
            if self.gate is not None:
                self.gate.zero_()
        self._key_cache = None

    def reset_caches(self) -> None:
        if isinstance(self._key_cache, dict):  # inside cached_keys: drop the K computed before
            self._key_cache.clear()

    def keys(self) -> torch.Tensor:
        """K = P' + P'W1W2, input-independent: computed in every forward, except inside ``cached_keys(model)``."""
        cache = self._key_cache
        if cache is not None:
            device_type = self.prompts.device.type
            autocast = torch.is_autocast_enabled(device_type) if device_type in ("cuda", "cpu", "xpu", "mps") \
                else False
            stamp = (self.prompts.device, self.prompts.dtype, autocast,
                     torch.get_autocast_dtype(device_type) if autocast else None, torch.is_grad_enabled(),
                     tuple((p.data_ptr(), p._version) for p in self.parameters()))
            if stamp in cache:
                return cache[stamp]
        if self.variant == "lowrank":
            k = self.prompts + (self.prompts @ self.w1) @ self.w2
        elif self.variant == "dense":
            k = self.prompts + self.dense(self.prompts)
        else:
            k = self.prompts
        if cache is not None:
            cache.clear()
            cache[stamp] = k
        return k

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """This module's A = ReLU(X K^T) [B, n, p] for its query-side input ``x`` (``apt_scores``; the APT paper's
        attention maps, Fig. 3, are drawn from it)."""
        return apt_scores(x, self.keys(), self.dropout, self.training)

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        keys = self.keys()
        official = self.alpha == "token" and self.detach_alpha and (self.dropout == 0.0 or not self.training)
        if self.fast and official:
            return apt_delta_fused(x, keys, self.prompts)
        return apt_delta(x, keys, self.prompts, self.alpha, self.detach_alpha, self.dropout, self.training)

    def forward(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """e^s * (O + dX)."""
        delta = self.delta(x)
        if self.gate is not None:
            delta = delta * self.gate
        res = out + delta.to(out.dtype)
        return res * torch.exp(self.log_scale).to(out.dtype)

    def attach(self, site) -> "APTModule":
        self.register(site.host)
        self.hook_input(site.query_input, self._stash.put)
        self.hook_output(site.out_proj, lambda args, o: map_output(o, lambda t: self(self._stash.take(), t)))
        return self

    @staticmethod
    def num_parameters(dim: int, num_prompts: int, rank: int, variant: str = "lowrank", gate: bool = False) -> int:
        extra = {"lowrank": 2 * dim * rank, "identity": 0, "dense": dim * dim + dim}[variant]
        return num_prompts * dim + extra + 1 + int(gate)


def attach(spec, config: APTConfig) -> list:
    return [
        APTModule(site.dim, config.num_prompts, config.rank, config.variant, config.alpha, config.detach_alpha,
                  config.train_scale, config.dropout, config.fast, config.gate).attach(site)
        for site in spec.attention_sites
    ]


register_method("apt", APTConfig, attach)
