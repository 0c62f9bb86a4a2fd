"""Stop (or skip) a training step whose loss or gradients are not finite, and never write a non-finite model.

Lightning public callback hooks only:

* ``on_before_backward``: the loss of every training batch is checked;
* ``on_before_optimizer_step``: the gradients are checked before the update (not under fp16 mixed precision, where
  the grad scaler skips overflowing steps itself and tunes its scale from them);
* ``on_save_checkpoint``: a checkpoint whose weights are not all finite is refused (so neither ``last.ckpt`` nor
  the best one can hold a diverged model).

``on_nonfinite="stop"`` (default) raises :class:`NonFiniteError` naming the step and the last checkpoint written
with finite weights; ``"skip"`` drops the update of that optimiser step (gradients cleared: the optimiser leaves
parameters without gradients unchanged) up to ``max_nonfinite_skips`` times in a run, then stops the same way."""
from __future__ import annotations

import logging
import math
from typing import Optional

import torch
from pytorch_lightning.callbacks import Callback

log = logging.getLogger(__name__)


class NonFiniteError(FloatingPointError):
    """Training produced a non-finite loss, gradient or weight."""


def _first_nonfinite(named) -> Optional[str]:
    for name, t in named:
        if t is not None and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


class NonFiniteGuard(Callback):
    def __init__(self, mode: str = "stop", max_skips: int = 0):
        if mode not in ("stop", "skip"):
            raise ValueError(f"on_nonfinite={mode!r}: expected 'stop' or 'skip'")
        self.mode, self.max_skips = mode, int(max_skips)
        self.skipped = 0
        self._skip_pending = False
        self.last_finite_checkpoint: Optional[str] = None

    def _where(self, trainer) -> str:
        return f"step {trainer.global_step + 1} (epoch {trainer.current_epoch}, global_step {trainer.global_step})"

    def _last(self, trainer) -> str:
        ckpt = trainer.checkpoint_callback
        path = getattr(ckpt, "last_model_path", "") or getattr(ckpt, "best_model_path", "") if ckpt else ""
        return f"the last checkpoint with finite weights is {path}" if path else "no checkpoint had been written yet"

    def _problem(self, trainer, what: str) -> None:
        if self.mode == "skip" and self.skipped < self.max_skips:
            if not self._skip_pending:
                self.skipped += 1
                log.warning("%s at %s: skipping this optimiser step (%d of at most %d skips, on_nonfinite=skip)",
                            what, self._where(trainer), self.skipped, self.max_skips)
            self._skip_pending = True
            return
        limit = f" after {self.skipped} skipped step(s) (max_nonfinite_skips={self.max_skips})" \
            if self.mode == "skip" else ""
        raise NonFiniteError(f"{what} at {self._where(trainer)}{limit}: training stopped; {self._last(trainer)} "
                             "(lower learning_rate, or on_nonfinite=skip max_nonfinite_skips=N to skip such steps)")

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        value = float(loss.detach().float())
        if not math.isfinite(value):
            self._problem(trainer, f"non-finite loss ({value})")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        scaled = "16" in str(trainer.precision) and "bf16" not in str(trainer.precision)
        if not scaled and not self._skip_pending:
            bad = _first_nonfinite((n, p.grad) for n, p in pl_module.named_parameters())
            if bad is not None:
                self._problem(trainer, f"non-finite gradient of {bad}")
        if self._skip_pending:
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.grad = None
            self._skip_pending = False

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        bad = _first_nonfinite(checkpoint.get("state_dict", {}).items())
        if bad is not None:
            raise NonFiniteError(f"refusing to write a checkpoint at {self._where(trainer)}: weight {bad} is not "
                                 f"finite; {self._last(trainer)}")
