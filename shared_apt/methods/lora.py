"""LoRA as the APT paper's baseline (apt.md §2.1): rank r updates x A B on W_q and W_v of every attention module,
A ~ N(0, 1), B = 0, no alpha/r scaling, dropout on the LoRA input in training; mergeable into the frozen weights so
inference costs nothing extra."""
from __future__ import annotations

import torch
from torch import nn

from .base import TuningModule


class LoRAModule(TuningModule):
    """Low-rank updates on some slots (q / k / v) of one attention module."""

    method = "lora"

    def __init__(self, slots: dict, rank: int = 4, dropout: float = 0.1):
        super().__init__()
        self.slots = slots  # name -> LinearSlot (plain dict: the frozen linears stay owned by the backbone)
        self.rank = rank
        self.dropout = nn.Dropout(dropout)
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        for name, slot in slots.items():
            self.lora_A[name] = nn.Parameter(torch.empty(slot.in_features, rank))
            self.lora_B[name] = nn.Parameter(torch.empty(rank, slot.out_features))
        self.merged = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            for name in self.slots:
                nn.init.normal_(self.lora_A[name], std=1.0)
                nn.init.zeros_(self.lora_B[name])

    def delta_weight(self, name: str) -> torch.Tensor:
        """(A B)^T: the [out, in] matrix added to the slot's rows of the frozen weight."""
        return (self.lora_A[name] @ self.lora_B[name]).t()

    def _apply_update(self, linear: nn.Linear, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return out
        h = self.dropout(x)
        pieces, cursor, total = [], 0, out.shape[-1]
        for name, slot in sorted(((n, s) for n, s in self.slots.items() if s.linear is linear),
                                 key=lambda ns: ns[1].rows.start if ns[1].rows is not None else 0):
            d = (h @ self.lora_A[name]) @ self.lora_B[name]
            start = slot.rows.start if slot.rows is not None else 0
            if start > cursor:
                pieces.append(d.new_zeros(*d.shape[:-1], start - cursor))
            pieces.append(d)
            cursor = start + d.shape[-1]
        if cursor < total:
            pieces.append(pieces[-1].new_zeros(*out.shape[:-1], total - cursor))
        return out + torch.cat(pieces, dim=-1).to(out.dtype)

    def attach(self, site) -> "LoRAModule":
        self.register(site.host)
        for linear in {id(s.linear): s.linear for s in self.slots.values()}.values():
            self.hook_output(linear, lambda args, out, lin=linear: self._apply_update(lin, args[0], out))
        return self

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the updates into the frozen weights (zero inference overhead). Idempotent."""
        if self.merged:
            return
        for name, slot in self.slots.items():
            w = slot.linear.weight
            rows = slot.rows if slot.rows is not None else slice(None)
            w[rows] += self.delta_weight(name).to(w.dtype)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged:
            return
        for name, slot in self.slots.items():
            w = slot.linear.weight
            rows = slot.rows if slot.rows is not None else slice(None)
            w[rows] -= self.delta_weight(name).to(w.dtype)
        self.merged = False


def attach(spec, config) -> list:
    mods = []
    for site in spec.attention_sites:
        slots = {t: getattr(site, t) for t in config.lora_targets}
        missing = sorted(t for t, slot in slots.items() if slot is None)
        if missing:
            raise ValueError(f"lora_targets {missing}: attention site {site.name!r} declares no such projection")
        mods.append(LoRAModule(slots, config.lora_rank, config.lora_dropout).attach(site))
    return mods
