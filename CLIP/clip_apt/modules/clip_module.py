"""Lightning module: a CLIP classifier trained with a tuning method on class prompts (cross-entropy over the
classes of the training split), with CoOp's optimiser and per-epoch schedule."""
from __future__ import annotations

import math
from typing import Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

import shared_apt


def coop_lr_factor(epoch: int, lr: float, max_epochs: int, warmup_epochs: int = 1, warmup_lr: float = 1e-5) -> float:
    """Dassl's schedule as a factor of the base lr: constant ``warmup_lr`` for the warm-up epochs, then cosine
    annealing over ``max_epochs`` from the base lr: lr(e) = lr / 2 * (1 + cos(pi * (e - warmup) / max_epochs))."""
    if epoch < warmup_epochs:
        return warmup_lr / lr
    return 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup_epochs) / max_epochs))


class CLIPPromptModule(pl.LightningModule):
    def __init__(self, model, classnames: Sequence[str], template: str, config: dict):
        super().__init__()
        self.model = model
        self.classnames = list(classnames)
        self.template = template
        self.cfg = dict(config)

    def forward(self, images, classnames=None):
        return self.model.classify(images, classnames or self.classnames, self.template)

    def training_step(self, batch, batch_idx):
        images, labels = batch
        loss = F.cross_entropy(self(images), labels)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(labels))
        return loss

    def configure_optimizers(self):
        params = list(shared_apt.trainable_parameters(self.model).values())
        c = self.cfg
        opt = torch.optim.SGD(params, lr=c["lr"], momentum=c["momentum"], weight_decay=c["weight_decay"])
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda e: coop_lr_factor(e, c["lr"], c["max_epochs"], c["warmup_epochs"], c["warmup_lr"]))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


@torch.no_grad()
def accuracy(model, loader, classnames: Sequence[str], template: str, device, autocast: bool = False) -> float:
    """Top-1 accuracy (%) over a loader of (images, labels)."""
    model.eval()
    correct = total = 0
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        with torch.autocast(device.type, enabled=autocast and device.type == "cuda"):
            logits = model.classify(images, classnames, template)
        correct += int((logits.argmax(-1) == labels).sum())
        total += len(labels)
    if total == 0:
        raise ValueError("accuracy over an empty test split")
    return 100.0 * correct / total


def harmonic_mean(base: float, new: float) -> float:
    """H = 2 B N / (B + N) (0 when both are 0)."""
    return 0.0 if base + new == 0 else 2.0 * base * new / (base + new)
