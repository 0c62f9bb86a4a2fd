"""The LightningModule shared by ViLT and METER (upstream: the training half of ViLTransformerSS /
METERTransformerSS). Backbone classes subclass it and provide the modules, ``infer`` and ``peft_spec``."""
from __future__ import annotations

import pytorch_lightning as pl


class VisionLanguageModule(pl.LightningModule):
    backbone_name = "vl"

    def __init__(self, config: dict):
        super().__init__()
        self.save_hyperparameters({"config": dict(config)})
        self.current_tasks: list = []

    def setup_metrics(self) -> None:
        """Create the metric objects of every task in ``loss_names`` (filled in by the training code)."""

    def forward(self, batch):
        if not self.current_tasks:
            return self.infer(batch)
        raise NotImplementedError("task objectives are provided by shared_apt.training")
