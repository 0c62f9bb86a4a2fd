"""APT, Approximated Prompt Tuning (AAAI 2024), as the authors' released code computes it (fact sheet apt.md §1).

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


import torch
import torch.nn.functional as F
from torch import nn

from ..sites import map_output
from .base import InputStash, TuningModule


def apt_delta(x: torch.Tensor, keys: torch.Tensor, prompts: torch.Tensor, alpha: str = "token",
              detach_alpha: bool = True, dropout_p: float = 0.0, training: bool = False) -> torch.Tensor:
    """Reference APT update dX = alpha * ReLU(X K^T) P' (apt.md §1.2-1.3).

    ``alpha``: "token" (official: per input token, max over the p prompts of A), "prompt" (per prompt, max over the
    d features of K), "global" (one max over K), "none" (alpha = 1). The last three are apt.md's ablation readings."""
    a = torch.relu(x @ keys.transpose(-1, -2))  # [B, n, p]
    if dropout_p > 0.0:
        a = F.dropout(a, dropout_p, training)
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
    Saves X, K, P' and A (the relu mask is A > 0), nothing else."""

    @staticmethod
    def forward(ctx, x, keys, prompts):
        a = torch.relu(torch.matmul(x, keys.t()))
        alpha = a.amax(dim=-1, keepdim=True)
        out = torch.matmul(a, prompts).mul_(alpha)
        ctx.save_for_backward(x, keys, prompts, a, alpha)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, keys, prompts, a, alpha = ctx.saved_tensors
        dy = grad * alpha
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


def apt_delta_fused(x: torch.Tensor, keys: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
    """Same value and gradients as ``apt_delta(x, keys, prompts)`` with the official options."""
    dtype = torch.promote_types(x.dtype, keys.dtype)
    device = x.device.type
    if device in ("cuda", "cpu") and torch.is_autocast_enabled(device):
        # autocast would run the forward's matmuls in half precision while the hand-written backward (which autocast
        # does not reach) multiplies by the fp32 prompts: run the fused op at the promoted dtype with autocast off
        with torch.autocast(device_type=device, enabled=False):
            return _FusedAPT.apply(x.to(dtype), keys.to(dtype), prompts.to(dtype))
    return _FusedAPT.apply(x.to(dtype), keys.to(dtype), prompts.to(dtype))


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

    def keys(self) -> torch.Tensor:
        """K = P' + P'W1W2 (input-independent: computed once per forward, cached while nothing can change it)."""
        caching = not torch.is_grad_enabled()
        params = [p for p in self.parameters() if p is not self.log_scale and p is not self.gate]
        stamp = tuple((p.data_ptr(), p._version) for p in params) if caching else None
        if caching and self._key_cache is not None and self._key_cache[0] == stamp:
            return self._key_cache[1]
        if self.variant == "lowrank":
            k = self.prompts + (self.prompts @ self.w1) @ self.w2
        elif self.variant == "dense":
            k = self.prompts + self.dense(self.prompts)
        else:
            k = self.prompts
        self._key_cache = (stamp, k) if caching else None
        return k

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


def attach(spec, config) -> list:
    return [
        APTModule(site.dim, config.num_prompts, config.apt_rank, config.apt_variant, config.apt_alpha,
                  config.apt_detach_alpha, config.apt_train_scale, config.apt_dropout, config.apt_fast,
                  config.apt_gate).attach(site)
        for site in spec.attention_sites
    ]
