"""Bad-image accounting over DataLoader workers and processes, and the end-of-run report.

Datasets never count against the limit themselves: a sample whose image cannot be decoded becomes a
:class:`~shared_apt.vl.data.datasets.BadSample`, and the collate records it in the batch (``batch["bad_images"]``,
``batch["samples_read"]``). :class:`BadImageAccounting` is a Lightning callback that reads those keys where the batches
arrive (the main process of every rank), so the counts are the totals over all DataLoader workers; with several
processes (DDP) they are summed over ranks:

* training: the limit is checked at every batch on the counts summed over ranks (training batches are aligned
  across ranks, so the reduction is collective-safe);
* validation / test: at every batch on this process's counts when there is one process, and on the counts summed
  over ranks at the end of every epoch (ranks may have one batch more or less there).

The limit: more than ``max_bad_image_fraction`` of the samples read so far in a stage (train / val / test) raises
:class:`~shared_apt.vl.data.datasets.TooManyBadImagesError`, the fraction taken over at least
``min(len(dataset), MIN_DENOMINATOR)`` samples so that one early bad image does not stop a large run. At the end of
every fit (train and validation) and every evaluation one line is logged per stage: how many samples were skipped,
of how many, and from which files (WARNING when any was skipped, INFO otherwise).
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Dict, List, Optional, Tuple

import pytorch_lightning as pl
import torch
import torch.distributed as dist

from .datasets import BAD_IMAGES_KEY, SAMPLES_READ_KEY, TooManyBadImagesError

log = logging.getLogger(__name__)

MIN_DENOMINATOR = 1000


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class StageCount:
    """Samples read and bad samples ((table file, row, column)) of one stage."""

    def __init__(self):
        self.read = 0
        self.bad: List[Tuple[str, int, str]] = []

    def add(self, batch) -> None:
        if not isinstance(batch, dict) or SAMPLES_READ_KEY not in batch:
            raise TypeError(f"bad-image accounting: a batch without {SAMPLES_READ_KEY!r} "
                            f"(got {type(batch).__name__}); batches must come from BaseDataset.collate")
        self.read += int(batch[SAMPLES_READ_KEY])
        self.bad.extend(tuple(b) for b in batch[BAD_IMAGES_KEY])

    def merged(self, others: List["StageCount"]) -> "StageCount":
        out = StageCount()
        for c in others:
            out.read += c.read
            out.bad.extend(c.bad)
        return out


def summary(stage: str, count: StageCount, limit: float) -> str:
    """The one-line report of a stage."""
    per_file = Counter(t for t, _, _ in count.bad)
    files = ", ".join(f"{t}: {n}" for t, n in sorted(per_file.items()))
    pct = 100.0 * len(count.bad) / count.read if count.read else 0.0
    return (f"bad images ({stage}): {len(count.bad)} of {count.read} samples skipped ({pct:.2f}%, limit "
            f"max_bad_image_fraction={limit})" + (f" from {files}" if files else ""))


def check_limit(stage: str, count: StageCount, limit: float, dataset_len: int) -> None:
    """TooManyBadImagesError when `count` exceeds the limit (see the module docstring)."""
    denominator = max(count.read, min(dataset_len, MIN_DENOMINATOR), 1)
    if len(count.bad) / denominator > limit:
        first = ", ".join(f"{t}[{r}] ({c})" for t, r, c in count.bad[:10])
        raise TooManyBadImagesError(
            f"{summary(stage, count, limit)}: more than max_bad_image_fraction={limit} of the samples read "
            f"(counted over at least {denominator} samples) have an undecodable image; first: {first}. "
            f"Re-write the arrow files or raise max_bad_image_fraction.")


class BadImageAccounting(pl.Callback):
    """See the module docstring. ``counts[stage]`` holds this process's counts; ``reports`` the logged lines."""

    def __init__(self, max_bad_image_fraction: float = 0.01):
        if (isinstance(max_bad_image_fraction, bool) or not isinstance(max_bad_image_fraction, (int, float))
                or not 0.0 <= max_bad_image_fraction <= 1.0):
            raise ValueError(f"max_bad_image_fraction={max_bad_image_fraction!r}: expected a fraction in [0, 1]")
        self.limit = float(max_bad_image_fraction)
        self.counts: Dict[str, StageCount] = {}
        self.reports: List[str] = []

    # -- counting ---------------------------------------------------------------------------------------------

    def _count(self, stage: str) -> StageCount:
        return self.counts.setdefault(stage, StageCount())

    @staticmethod
    def _dataset_len(trainer, stage: str) -> int:
        """Samples of the dataset(s) behind the stage's loader(s) (0 when unknown)."""
        loaders = {"train": lambda: trainer.train_dataloader, "val": lambda: trainer.val_dataloaders,
                   "test": lambda: trainer.test_dataloaders}[stage]()
        if loaders is None:
            return 0
        total = 0
        for loader in (loaders if isinstance(loaders, (list, tuple)) else [loaders]):
            try:
                total += len(loader.dataset)
            except (AttributeError, TypeError):
                return 0
        return total

    def _reduced(self, trainer, pl_module, stage: str) -> StageCount:
        """This stage's counts summed over ranks (collective: every rank must call it)."""
        count = self._count(stage)
        if _world() == 1:
            return count
        gathered: List[Optional[StageCount]] = [None] * _world()
        dist.all_gather_object(gathered, count)
        return StageCount().merged(gathered)

    def _reduced_numbers(self, trainer, stage: str) -> Tuple[int, int]:
        count = self._count(stage)
        t = torch.tensor([count.read, len(count.bad)], dtype=torch.float64,
                         device=trainer.strategy.root_device)
        t = trainer.strategy.reduce(t, reduce_op="sum")
        return int(t[0].item()), int(t[1].item())

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        count = self._count("train")
        count.add(batch)
        if _world() == 1:
            check_limit("train", count, self.limit, self._dataset_len(trainer, "train"))
            return
        read, bad = self._reduced_numbers(trainer, "train")
        dataset_len = self._dataset_len(trainer, "train")  # the whole dataset: each rank samples a share of it
        if bad / max(read, min(dataset_len, MIN_DENOMINATOR), 1) > self.limit:
            check_limit("train", self._reduced(trainer, pl_module, "train"), self.limit, dataset_len)

    def _eval_batch(self, trainer, stage: str, batch) -> None:
        count = self._count(stage)
        count.add(batch)
        if _world() == 1:
            check_limit(stage, count, self.limit, self._dataset_len(trainer, stage))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._eval_batch(trainer, "val", batch)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._eval_batch(trainer, "test", batch)

    def _epoch_check(self, trainer, pl_module, stage: str) -> StageCount:
        total = self._reduced(trainer, pl_module, stage)
        check_limit(stage, total, self.limit, self._dataset_len(trainer, stage))
        return total

    def on_validation_epoch_end(self, trainer, pl_module):
        self._epoch_check(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer, pl_module):
        self._epoch_check(trainer, pl_module, "test")

    # -- reports ----------------------------------------------------------------------------------------------

    def _report(self, trainer, pl_module, stages) -> None:
        for stage in stages:
            total = self._reduced(trainer, pl_module, stage)
            line = summary(stage, total, self.limit)
            if trainer.global_rank == 0:
                self.reports.append(line)
                log.log(logging.WARNING if total.bad else logging.INFO, "%s", line)

    def on_fit_end(self, trainer, pl_module):
        self._report(trainer, pl_module, ("train", "val"))

    def on_test_end(self, trainer, pl_module):
        self._report(trainer, pl_module, ("test",))

    def on_validation_end(self, trainer, pl_module):
        if trainer.state.fn == "validate":  # a stand-alone evaluation (during fit, on_fit_end reports)
            self._report(trainer, pl_module, ("val",))
