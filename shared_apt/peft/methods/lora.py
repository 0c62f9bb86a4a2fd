"""LoRA as the APT paper's baseline (docs/methods.md, baselines): rank r updates x A B on W_q and W_v of every attention module,
A ~ N(0, 1), B = 0, no alpha/r scaling, dropout on the LoRA input in training; mergeable into the frozen weights so
inference costs nothing extra."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..config import MethodConfig, POSITIVE_INT, PROBABILITY, option
from ..registry import register_method
from .base import TuningModule


@dataclass
class LoRAConfig(MethodConfig):
    """LoRA's options; flat (Sacred) keys ``lora_<option>``. Paper setting: r = 4 on W_q and W_v, dropout 0.1."""

    legacy_prefix: ClassVar[str] = "lora_"
    paper_options: ClassVar[tuple] = ("rank", "dropout")
    runtime_options: ClassVar[tuple] = ("dropout",)

    rank: int = option(4, POSITIVE_INT, "r of A (d_in x r) and B (r x d_out)")
    dropout: float = option(0.1, PROBABILITY, "dropout on the LoRA input in training")
    targets: tuple = option(("q", "v"), (lambda v: len(v) >= 1 and set(v) <= {"q", "k", "v", "o"},
                                         "a non-empty subset of ('q', 'k', 'v', 'o')"),
                            "projections updated (o: the output projection, where a backbone declares it)")


class LoRAModule(TuningModule):
    """Low-rank updates on some slots (q / k / v) of one attention module.

    Dropout: one ``nn.Dropout`` per slot, so q and v draw independent masks even when they share a fused qkv Linear
    (the official code has one Dropout per LoRA module).

    Merge state: ``merge()`` keeps a copy of the frozen rows it overwrites and ``unmerge()`` restores that copy, so a
    merge/unmerge cycle is bit-exact. While merged:
    * ``merge()`` in training mode is refused, and ``train()`` unmerges (a merged model would get no LoRA gradient);
    * an in-place change of A or B (optimiser step, ``load_tuned``) is seen by its version counter and the next forward
      re-merges from the kept copy (edits through ``.data`` are invisible to version counters: unmerge first);
    * ``state_dict()`` of the host holds the unmerged frozen weights (a reload never applies the update twice), and
      ``load_state_dict()`` into the host unmerges first."""

    method = "lora"

    def __init__(self, slots: dict, rank: int = 4, dropout: float = 0.1):
        super().__init__()
        self.slots = slots  # name -> LinearSlot (plain dict: the frozen linears stay owned by the backbone)
        self.rank = rank
        self.dropouts = nn.ModuleDict({name: nn.Dropout(dropout) for name in slots})
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        for name, slot in slots.items():
            self.lora_A[name] = nn.Parameter(torch.empty(slot.in_features, rank))
            self.lora_B[name] = nn.Parameter(torch.empty(rank, slot.out_features))
        self._unmerged_rows = None  # name -> copy of the frozen rows, while merged
        self._merge_stamp = None
        self.reset_parameters()

    @property
    def merged(self) -> bool:
        return self._unmerged_rows is not None

    def reset_parameters(self) -> None:
        with torch.no_grad():
            for name in self.slots:
                nn.init.normal_(self.lora_A[name], std=1.0)
                nn.init.zeros_(self.lora_B[name])

    def delta_weight(self, name: str) -> torch.Tensor:
        """(A B)^T: the [out, in] matrix added to the slot's rows of the frozen weight."""
        return (self.lora_A[name] @ self.lora_B[name]).t()

    def _stamp(self) -> tuple:
        return tuple((p.data_ptr(), p._version) for p in self.parameters())

    def _apply_update(self, linear: nn.Linear, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if self.merged:
            if self.training:
                raise RuntimeError("LoRA is merged into the frozen weights while the module is in training mode: "
                                   "call model.train() (which unmerges) or shared_apt.unmerge(model) first")
            if self._merge_stamp != self._stamp():  # A or B changed since the merge: fold the new update in
                self._remerge()
                return F.linear(x, linear.weight, linear.bias)
            return out
        pieces, cursor, total = [], 0, out.shape[-1]
        for name, slot in sorted(((n, s) for n, s in self.slots.items() if s.linear is linear),
                                 key=lambda ns: ns[1].rows.start if ns[1].rows is not None else 0):
            d = (self.dropouts[name](x) @ self.lora_A[name]) @ self.lora_B[name]
            start = slot.rows.start if slot.rows is not None else 0
            if start > cursor:
                pieces.append(d.new_zeros(*d.shape[:-1], start - cursor))
            pieces.append(d)
            cursor = start + d.shape[-1]
        if cursor < total:
            pieces.append(pieces[-1].new_zeros(*out.shape[:-1], total - cursor))
        return out + torch.cat(pieces, dim=-1).to(out.dtype)

    def _weight_keys(self, host: nn.Module) -> dict:
        """name of each slot's frozen weight relative to ``host`` (for the host's state_dict hooks)."""
        names = {id(m): n for n, m in host.named_modules()}
        keys = {}
        for slot in self.slots.values():
            if id(slot.linear) not in names:
                raise RuntimeError(f"LoRA slot Linear is not inside its host {type(host).__name__}")
            keys[id(slot.linear)] = (names[id(slot.linear)] + "." if names[id(slot.linear)] else "") + "weight"
        return keys

    def attach(self, site) -> "LoRAModule":
        self.register(site.host)
        for linear in {id(s.linear): s.linear for s in self.slots.values()}.values():
            self.hook_output(linear, lambda args, out, lin=linear: self._apply_update(lin, args[0], out))
        keys = self._weight_keys(site.host)

        def saving(module, state_dict, prefix, local_metadata):
            if self.merged:
                for linear in {id(s.linear): s.linear for s in self.slots.values()}.values():
                    state_dict[prefix + keys[id(linear)]] = self.unmerged_weight(linear)
            return state_dict

        def loading(module, state_dict, prefix, *args):
            self.unmerge()

        self._handles.append(site.host._register_state_dict_hook(saving))
        self._handles.append(site.host._register_load_state_dict_pre_hook(loading, with_module=True))
        return self

    def train(self, mode: bool = True) -> "LoRAModule":
        if mode and self.merged:
            self.unmerge()
        return super().train(mode)

    @torch.no_grad()
    def unmerged_weight(self, linear: nn.Linear) -> torch.Tensor:
        """The frozen weight of ``linear`` without the LoRA update (a copy; the kept rows while merged)."""
        w = linear.weight.detach().clone()
        if self.merged:
            for name, slot in self.slots.items():
                if slot.linear is linear:
                    w[slot.rows if slot.rows is not None else slice(None)] = self._unmerged_rows[name]
        return w

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the updates into the frozen weights (zero inference overhead). Idempotent; inference only."""
        if self.merged:
            return
        if self.training:
            raise RuntimeError("LoRA merge is for inference: call model.eval() before shared_apt.merge(model) "
                               "(a merged model in training mode would train no LoRA parameter)")
        kept = {}
        for name, slot in self.slots.items():
            w = slot.linear.weight
            rows = slot.rows if slot.rows is not None else slice(None)
            kept[name] = w[rows].clone()
            w[rows] += self.delta_weight(name).to(w.dtype)
        self._unmerged_rows = kept
        self._merge_stamp = self._stamp()

    @torch.no_grad()
    def unmerge(self) -> None:
        """Restore the kept frozen rows (bit-exact, whatever happened to A and B meanwhile)."""
        if not self.merged:
            return
        for name, slot in self.slots.items():
            w = slot.linear.weight
            rows = slot.rows if slot.rows is not None else slice(None)
            w[rows] = self._unmerged_rows[name]
        self._unmerged_rows = None
        self._merge_stamp = None

    def _remerge(self) -> None:
        self.unmerge()
        self.merge()


def attach(spec, config: LoRAConfig) -> list:
    mods = []
    for site in spec.attention_sites:
        slots = {t: getattr(site, t) for t in config.targets}
        missing = sorted(t for t, slot in slots.items() if slot is None)
        if missing:
            raise ValueError(f"lora_targets {missing}: attention site {site.name!r} declares no such projection")
        mods.append(LoRAModule(slots, config.rank, config.dropout).attach(site))
    return mods


register_method("lora", LoRAConfig, attach)
