"""Bottleneck adapters: the sequential VL-Adapter baseline and the scaled parallel adapter (docs/methods.md, baselines)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..config import NUMBER, MethodConfig, POSITIVE_INT, option
from ..registry import register_method
from ..sites import map_output
from .base import InputStash, TuningModule


@dataclass
class AdapterConfig(MethodConfig):
    """Sequential adapter; flat (Sacred) key ``adapter_bottleneck``. Paper setting: bottleneck 96."""

    legacy_prefix: ClassVar[str] = "adapter_"
    paper_options: ClassVar[tuple] = ("bottleneck",)

    bottleneck: int = option(96, POSITIVE_INT, "hidden units of the down/up projection")


@dataclass
class ScaledPAConfig(MethodConfig):
    """Scaled parallel adapter; flat (Sacred) keys ``pa_bottleneck``, ``pa_scale``. Paper setting: 96, scale 4."""

    legacy_prefix: ClassVar[str] = "pa_"
    paper_options: ClassVar[tuple] = ("bottleneck", "scale")

    bottleneck: int = option(96, POSITIVE_INT, "hidden units of the down/up projection")
    scale: float = option(4.0, NUMBER, "fixed factor on the parallel branch")


class Bottleneck(nn.Module):
    """Up(ReLU(Down(x))) with biases."""

    def __init__(self, dim: int, bottleneck: int, std: float):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        with torch.no_grad():
            for lin in (self.down, self.up):
                nn.init.normal_(lin.weight, std=std)
                nn.init.zeros_(lin.bias)

    def forward(self, x):
        return self.up(torch.relu(self.down(x)))


class Adapter(TuningModule):
    """Sequential adapter x -> x + Up(ReLU(Down(x))) on the output of an attention or feed-forward sub-layer,
    before the residual add (where exactly: the site's ``adapter_out`` / ``ffn_out``; ViLT: after the projection
    dropout and after the MLP's final dropout, METER: after the dense layer, before dropout and LayerNorm, as the
    authors' code); weights N(0, 0.01), biases 0, no LN, no scale."""

    method = "adapter"

    def __init__(self, dim: int, bottleneck: int = 96):
        super().__init__()
        self.body = Bottleneck(dim, bottleneck, std=0.01)

    def forward(self, x):
        return x + self.body(x)

    def attach(self, host: nn.Module, module: nn.Module, suffix: str) -> "Adapter":
        self.register(host, suffix)
        self.hook_output(module, lambda args, out: map_output(out, self))
        return self


class ScaledParallelAdapter(TuningModule):
    """z = scale * Up(ReLU(Down(LN(X)))) from the attention input X, added to the output of the site's ``branch``
    (ViLT: after the projection dropout, before the residual; METER: after the post-attention LayerNorm,
    h = LN(dropout(dense(ctx)) + X) + z, as the authors' bert_model_PA.py); own trainable LayerNorm, weights
    N(0, 0.02), fixed scale 4.0 (He et al. 2022 as the APT authors run it)."""

    method = "scaled_pa"

    def __init__(self, dim: int, bottleneck: int = 96, scale: float = 4.0):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.body = Bottleneck(dim, bottleneck, std=0.02)
        self.scale = scale
        self._stash = InputStash()

    def forward(self, x, out):
        return out + (self.scale * self.body(self.norm(x))).to(out.dtype)

    def attach(self, site) -> "ScaledParallelAdapter":
        self.register(site.host)
        self.hook_input(site.query_input, self._stash.put)
        self.hook_output(site.branch, lambda args, o: map_output(o, lambda t: self(self._stash.take(), t)))
        return self


def attach_adapter(spec, config: AdapterConfig) -> list:
    mods = []
    for site in spec.attention_sites:
        mods.append(Adapter(site.dim, config.bottleneck).attach(site.host, site.adapter_out, ""))
        if site.ffn_out is not None:
            mods.append(Adapter(site.dim, config.bottleneck).attach(site.host, site.ffn_out, "_ffn"))
    return mods


def attach_scaled_pa(spec, config: ScaledPAConfig) -> list:
    return [ScaledParallelAdapter(site.dim, config.bottleneck, config.scale).attach(site)
            for site in spec.attention_sites]


register_method("adapter", AdapterConfig, attach_adapter)
register_method("scaled_pa", ScaledPAConfig, attach_scaled_pa)
