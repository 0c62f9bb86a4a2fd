"""The LightningModule shared by ViLT and METER (upstream: the training half of ViLTransformerSS /
METERTransformerSS, vilt/modules/vilt_utils.py and objectives.py; docs/backbones.md, ViLT).

Backbone classes subclass :class:`VisionLanguageModule` and provide the nn modules, ``infer(batch, ...)`` (upstream's
output dict), the heads (``vqa_classifier``, ``nlvr2_classifier``, ``itm_score``, ``mlm_score``, ``rank_output``) and
``peft_spec``. Everything here uses only those and config keys:

* tasks: ``loss_names`` values are thresholds: > 0 builds a head (backbone's job), >= 1 runs the objective;
  all executed losses are summed with weight 1;
* metrics: upstream names (``vqa/train/score``, ``nlvr2/dev/accuracy``, ``irtr/val/irtr_loss``, ``…_epoch``,
  ``train/the_metric``, ``val/the_metric``, ``recalls/ir_r1`` …); epoch values are corpus-level and synchronised
  over processes (``shared_apt.vl.data.metrics`` all-reduce at compute);
* IR/TR recall over the whole validation/test split (every image against every caption), images split over
  processes, score rows gathered in memory;
* VQA test submission gathered over processes in memory and written once by rank 0 as
  ``<log_dir>/vqa_submit_<load_path stem>.json`` (upstream format, no per-rank files);
* randomness: every training step re-seeds the global generators from (seed, global step, rank), so a run resumed
  from a checkpoint draws the same random numbers as an uninterrupted one.
"""
from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch import nn

import shared_apt
from shared_apt.peft.atomic import atomic_write_json
from shared_apt.peft.config import options_from_config
from shared_apt.vl import official
from shared_apt.vl.checkpoint import load_checkpoint, state_dict_of
from shared_apt.vl.data.datasets import is_empty_batch
from shared_apt.vl.data.metrics import Accuracy, Scalar, VQAScore, compute_recall_at_k
from shared_apt.vl.speed import apply_speed_options

from . import objectives
from .optim import set_schedule

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Metric:
    """One epoch metric of a task: the attribute ``<split>_<task>_<name>`` (a metric object fed ``inputs``, keys of
    the objective's output), logged per step as ``<task>/<split>/<log_name>`` (``step_value(*inputs)``, default
    the first input detached) and per epoch with ``_epoch`` appended."""

    name: str
    kind: type
    inputs: Tuple[str, ...]
    step_value: Optional[Callable] = None
    log_name: Optional[str] = None

    @property
    def logged(self) -> str:
        return self.log_name or self.name


@dataclass(frozen=True)
class Task:
    """What the training module does with a task's output (upstream names): its metrics; ``selects``: the metric
    whose epoch value enters ``the_metric`` (None: the task adds 0); ``eval_splits``: evaluation metrics kept per
    table-name split (NLVR2: dev and test; the loss recomputed on each split's rows by ``row_loss``)."""

    metrics: Tuple[Metric, ...]
    selects: Optional[str] = None
    eval_splits: Tuple[str, ...] = ()
    row_loss: Optional[Callable] = None


def _accuracy_and_loss(task: str) -> Task:
    return Task((Metric("accuracy", Accuracy, (f"{task}_logits", f"{task}_labels"), objectives.batch_accuracy),
                 Metric("loss", Scalar, (f"{task}_loss",))), selects="accuracy")


# The task table, in upstream's execution order inside forward.
TASKS: Dict[str, Task] = {
    "mlm": _accuracy_and_loss("mlm"),
    "mpp": _accuracy_and_loss("mpp"),
    "itm": Task((Metric("accuracy", Accuracy, ("itm_logits", "itm_labels"), objectives.batch_accuracy),
                 Metric("loss", Scalar, ("itm_loss",)), Metric("wpa_loss", Scalar, ("itm_wpa_loss",))),
                selects="accuracy"),
    "vqa": Task((Metric("score", VQAScore, ("vqa_logits", "vqa_targets"), objectives.batch_vqa_score),
                 Metric("loss", Scalar, ("vqa_loss",))), selects="score"),
    # both NLVR2 evaluation splits are computed (same order on every rank); the backbone's nlvr2_selection_split
    # feeds the_metric (ViLT: test-P, as upstream overwrites dev with test; METER: dev)
    "nlvr2": Task((Metric("accuracy", Accuracy, ("nlvr2_logits", "nlvr2_labels"), objectives.batch_accuracy),
                   Metric("loss", Scalar, ("nlvr2_loss",))), selects="accuracy", eval_splits=("dev", "test"),
                  row_loss=lambda logits, labels: torch.nn.functional.cross_entropy(logits.float(), labels)),
    "irtr": Task((Metric("loss", Scalar, ("irtr_loss",), log_name="irtr_loss"),)),
}
TASK_ORDER = tuple(TASKS)
KNOWN_TASKS = set(TASK_ORDER)


def _dist_ready() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_gather_objects(obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] (in memory, ``all_gather_object``); [obj] without a process group."""
    if not _dist_ready():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def step_seed(seed: int, step: int, rank: int, salt: int = 0) -> int:
    return (int(seed) * 1_000_003 + int(step) * 9_176 + int(rank) * 7_919 + salt * 104_729) % (2 ** 31 - 1)


def seed_all(value: int) -> None:
    random.seed(value)
    np.random.seed(value % (2 ** 32))
    torch.manual_seed(value)


NLVR2_SPLITS = TASKS["nlvr2"].eval_splits


class VisionLanguageModule(pl.LightningModule):
    backbone_name = "vl"
    head_lr_names: Tuple[str, ...] = ()  # parameters at lr x lr_mult (a backbone fact: each backbone declares its)
    # NLVR2 split whose validation accuracy enters val/the_metric (checkpoint selection): upstream ViLT overwrites
    # dev with test-P ("test"); METER selects on "dev" (docs/backbones.md, METER)
    nlvr2_selection_split: str = "test"

    def __init__(self, config: dict):
        super().__init__()
        if self.nlvr2_selection_split not in NLVR2_SPLITS:
            raise ValueError(f"{type(self).__name__}.nlvr2_selection_split={self.nlvr2_selection_split!r}: expected "
                             f"one of {NLVR2_SPLITS}")
        self.save_hyperparameters({"config": dict(config)})
        self.current_tasks: List[str] = []
        self._vqa_predictions: List[dict] = []
        self.recall_results: Optional[Dict[str, float]] = None
        unknown = [k for k in dict(config.get("loss_names", {})) if k not in KNOWN_TASKS]
        if unknown:
            raise ValueError(f"loss_names has unknown task(s) {unknown}; known: {list(TASK_ORDER)}")

    # ------------------------------------------------------------------------------------------------------------
    # Loading ``load_path``

    def applied_method(self) -> str:
        """The tuning method attached to this model (``shared_apt.load_official`` may attach the file's method to a
        model built with ``peft=full``); the config's ``peft`` before any is attached."""
        config = shared_apt.peft_config(self)
        return config.method if config is not None else self.hparams.config["peft"]

    def load_checks(self, ckpt, strict: bool, test_only: bool, method: str) -> dict:
        """Keyword arguments of ``shared_apt.vl.checkpoint.load_state_dict_checked`` for ``load_path``: upstream loads
        before the task heads and the method exist when tuning starts (stage "train"), after everything at
        ``test_only`` (stage "eval", where the file's recorded method is compared too)."""
        from shared_apt.vl.checkpoint import method_in_hparams

        if not isinstance(strict, bool):
            raise TypeError(f"strict_load={strict!r}: expected True or False")
        return {"strict": strict, "stage": "eval" if test_only else "train", "method": method,
                "checkpoint_method": method_in_hparams(ckpt) if test_only else None}

    # ------------------------------------------------------------------------------------------------------------
    # Tasks and metrics

    @property
    def config(self) -> dict:
        return self.hparams.config

    def executed_tasks(self) -> List[str]:
        loss_names = self.config["loss_names"]
        tasks = [k for k in TASK_ORDER if loss_names.get(k, 0) >= 1]
        if "mpp" in tasks:
            raise ValueError("loss_names.mpp >= 1: masked patch prediction cannot run (upstream's mask_tokens uses a "
                             "mask_token the VisionTransformer never defines, docs/backbones.md, ViLT); set mpp to 0")
        return tasks

    def set_tasks(self) -> None:
        """Upstream ``set_task``: the tasks whose loss_names value is >= 1."""
        self.current_tasks = self.executed_tasks()

    # ------------------------------------------------------------------------------------------------------------
    # The one build path (construct -> load checkpoint -> apply method -> load tuned weights)

    # Keys this project adds to upstream's config; a model built from an upstream config dict gets these defaults.
    project_defaults: Dict[str, object] = {"peft": "full", "peft_options": {}, "trust_checkpoint": False,
                                           "strict_load": True, "tuned_path": "",
                                           "attention_impl": "sdpa", "recompute_layers": False,
                                           "compile_layers": False}

    def cfg(self, key: str, config: Optional[dict] = None):
        """``config[key]``, else the project default, else KeyError naming the key."""
        config = self.hparams.config if config is None else config
        if key in config:
            return config[key]
        if key in self.project_defaults:
            return self.project_defaults[key]
        raise KeyError(f"{self.backbone_name} config has no key {key!r}")

    def finish_build(self, config: dict) -> None:
        """Every backbone's constructor ends here, once its modules and the heads that exist before loading are
        built (upstream's order, so checkpoints load the same way):

        1. ``load_path`` (fine-tuning start point, ``test_only`` False) through ``load_upstream``; without
           ``load_path``, ``init_without_checkpoint`` (the pre-trained encoders' own weights, where available);
        2. ``build_heads_after_load``: heads upstream creates after loading (NLVR2 head and modality rows,
           ``rank_output``), so they start fresh;
        3. the tuning method (``peft`` and its options, shared_apt.apply; a checkpoint of the authors' code read for
           evaluation brings its method's sizes and variant, shared_apt.vl.official);
        4. ``load_path`` again when ``test_only`` (a fine-tuned checkpoint holds the method's tensors too);
        5. ``tuned_path``: tuned weights written by shared_apt.save_tuned (method tensors + common trainable set);
        6. the speed options ``attention_impl``, ``recompute_layers``, ``compile_layers`` (shared_apt.vl.speed);
        7. the metrics of the executed tasks."""
        load_path, test_only = self.cfg("load_path", config), self.cfg("test_only", config)
        if not load_path:
            self.init_without_checkpoint(config)
        elif not test_only:
            self.load_upstream(load_path)
        self.build_heads_after_load(config)
        self.margin = 0.2
        self.class_token = None
        peft, options, upstream = self.cfg("peft", config), options_from_config(config), None
        if load_path and test_only:
            upstream = self.read_upstream(load_path)
            options = official.options_for(self, peft, options, state_dict_of(upstream, load_path), source=load_path)
        shared_apt.apply(self, peft, **options)
        if load_path and test_only:
            self.load_upstream(load_path, upstream)
        tuned = self.cfg("tuned_path", config)
        if tuned:
            shared_apt.load_tuned(self, tuned)
        apply_speed_options(self.speed_layers(), self, self.cfg("attention_impl", config),
                            self.cfg("recompute_layers", config), self.cfg("compile_layers", config))
        self.setup_metrics()

    def speed_layers(self) -> List[nn.Module]:
        """The transformer layers the speed options act on (shared_apt.vl.speed), called through ``call_layer``."""
        raise NotImplementedError(f"{type(self).__name__} must define speed_layers")

    def init_without_checkpoint(self, config: dict) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define init_without_checkpoint")

    def build_heads_after_load(self, config: dict) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define build_heads_after_load")

    def read_upstream(self, path: str) -> dict:
        """The checkpoint file (a Lightning checkpoint dict, or a bare state dict)."""
        return load_checkpoint(path, trust=self.cfg("trust_checkpoint"))

    def load_upstream(self, path: str, ckpt: Optional[dict] = None) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define load_upstream")

    # Head behaviours ViLT and METER share (docs/backbones.md) -----------------------------------------------------

    def expand_modality_rows(self) -> None:
        """NLVR2: 3 modality rows; row 0 := old 0, rows 1 and 2 := old 1."""
        from shared_apt.vl.heads import init_weights

        old = self.token_type_embeddings
        new = nn.Embedding(3, old.weight.shape[1], device=old.weight.device)
        new.apply(init_weights)
        with torch.no_grad():
            new.weight[0] = old.weight[0]
            new.weight[1] = old.weight[1]
            new.weight[2] = old.weight[1]
        self.token_type_embeddings = new

    def tie_rank_output(self) -> None:
        """rank_output := views of ITM row 1 (weight and bias), sharing storage as upstream does."""
        self.rank_output.weight.data = self.itm_score.fc.weight.data[1:, :]
        self.rank_output.bias.data = self.itm_score.fc.bias.data[1:]

    def setup_metrics(self) -> None:
        """Upstream ``set_metrics``: per phase (train, val) the epoch metrics of every executed task. The metric
        objects are sub-modules with non-persistent buffers (no state_dict keys)."""
        for task in self.executed_tasks():
            for phase in ("train", "val"):
                for split in self._splits(task, phase):
                    for m in TASKS[task].metrics:
                        setattr(self, f"{split}_{task}_{m.name}", m.kind())

    @staticmethod
    def _splits(task: str, phase: str) -> Tuple[str, ...]:
        """Where a task's metrics of ``phase`` are kept: the phase, or its evaluation splits."""
        spec = TASKS[task]
        return spec.eval_splits if phase != "train" and spec.eval_splits else (phase,)

    def lr_rules(self) -> List[Tuple[Sequence[str], float]]:
        """Learning-rate multiplier rules for :func:`shared_apt.vl.training.optim.set_schedule`: ViLT multiplies the
        VQA / NLVR2 classifiers by ``lr_mult``. METER overrides (cross_modal x lr_mult_cross_modal, heads x
        lr_mult_head)."""
        return [(tuple(self.head_lr_names), float(self.config.get("lr_mult", 1)))]

    # ------------------------------------------------------------------------------------------------------------
    # Forward

    def forward(self, batch):
        if not self.current_tasks:
            return self.infer(batch)
        ret = {}
        for task in self.current_tasks:
            ret.update(objectives.OBJECTIVES[task](self, batch))
        return ret

    @staticmethod
    def total_loss(output: dict) -> torch.Tensor:
        return sum(v for k, v in output.items() if "loss" in k)

    def _batch_size(self, batch) -> int:
        for key in ("text_ids", "image", "image_0"):
            if key in batch:
                v = batch[key]
                return int((v[0] if isinstance(v, list) else v).shape[0])
        return 1

    def _log(self, name: str, value, batch_size: int) -> None:
        self.log(name, value, batch_size=batch_size)

    def update_metrics(self, phase: str, output: dict, batch) -> None:
        """Accumulate the epoch metrics and log the per-step values (upstream names)."""
        bs = self._batch_size(batch)
        for task, spec in TASKS.items():
            if f"{task}_loss" not in output:
                continue
            if not (phase != "train" and spec.eval_splits):
                self._update_task(task, phase, output, bs)
                continue
            names = batch.get("table_name")
            if names is None:
                raise KeyError(f"{task} evaluation batches need 'table_name' to split {spec.eval_splits} metrics")
            keys = {k for m in spec.metrics for k in m.inputs} - {f"{task}_loss"}
            for split in spec.eval_splits:
                rows = objectives.split_rows(names, split)
                if not rows:
                    continue
                part = {k: output[k][rows] for k in keys}
                part[f"{task}_loss"] = spec.row_loss(part[f"{task}_logits"], part[f"{task}_labels"])
                self._update_task(task, split, part, len(rows))

    def _update_task(self, task: str, split: str, output: dict, batch_size: int) -> None:
        for m in TASKS[task].metrics:
            args = [output[k] for k in m.inputs]
            getattr(self, f"{split}_{task}_{m.name}").update(*args)
            step = m.step_value(*args) if m.step_value is not None else args[0].detach()
            self._log(f"{task}/{split}/{m.logged}", step, batch_size)

    # ------------------------------------------------------------------------------------------------------------
    # Lightning steps

    def on_train_batch_start(self, batch, batch_idx):
        seed_all(step_seed(self.config["seed"], self.global_step, self.global_rank, batch_idx))

    def training_step(self, batch, batch_idx):
        if is_empty_batch(batch):  # every sample of the batch had an undecodable image
            return None
        self.set_tasks()
        output = self(batch)
        self.update_metrics("train", output, batch)
        return self.total_loss(output)

    def on_validation_epoch_start(self):
        seed_all(step_seed(self.config["seed"], self.global_step, self.global_rank, salt=1))

    def on_test_epoch_start(self):
        seed_all(step_seed(self.config["seed"], self.global_step, self.global_rank, salt=2))
        self._vqa_predictions = []

    def validation_step(self, batch, batch_idx):
        if is_empty_batch(batch):
            return None
        self.set_tasks()
        output = self(batch)
        self.update_metrics("val", output, batch)

    def test_step(self, batch, batch_idx):
        if is_empty_batch(batch):
            return None
        self.set_tasks()
        output = self(batch)
        self.update_metrics("val", output, batch)
        if "vqa_logits" in output:
            preds = output["vqa_logits"].argmax(dim=-1).tolist()
            for qid, pred in zip(batch["qid"], preds):
                self._vqa_predictions.append({"question_id": int(qid), "answer_id": int(pred)})

    def on_train_epoch_end(self):
        self.epoch_wrapup("train")

    def on_validation_epoch_end(self):
        self.epoch_wrapup("val")

    def on_test_epoch_end(self):
        self.epoch_wrapup("val")
        if "vqa" in self.executed_tasks():
            self.write_vqa_submission()

    def configure_optimizers(self):
        return set_schedule(self)

    # ------------------------------------------------------------------------------------------------------------
    # Epoch end (upstream epoch_wrapup)

    def _log_epoch(self, name: str, value) -> None:
        # values are already synchronised over processes (metric compute / gathered recall)
        self.log(name, value, on_step=False, on_epoch=True, sync_dist=False, rank_zero_only=False)

    def epoch_wrapup(self, phase: str) -> float:
        the_metric = 0.0
        if (phase == "val" and self.config.get("get_recall_metric") and not self.trainer.sanity_checking):
            recalls = self.compute_irtr_recall()
            self.recall_results = recalls
            log.info("global step %d recalls: %s", self.global_step, recalls)
            for k, v in recalls.items():
                self._log_epoch(f"recalls/{k}", float(v))
            the_metric += recalls["ir_r1"] + recalls["tr_r1"]

        for task in self.executed_tasks():
            spec, selected = TASKS[task], {}
            for split in self._splits(task, phase):
                for m in spec.metrics:
                    value = self._pop_metric(f"{split}_{task}_{m.name}", f"{task}/{split}/{m.logged}_epoch")
                    if m.name == spec.selects:
                        selected[split] = value
            if spec.selects is not None:
                split = self.nlvr2_selection_split if phase != "train" and spec.eval_splits else phase
                the_metric += float(selected[split])
        self._log_epoch(f"{phase}/the_metric", the_metric)
        return the_metric

    def _pop_metric(self, attr: str, name: str) -> float:
        metric = getattr(self, attr)
        value = metric.compute()  # collective: every rank calls it in the same order
        metric.reset()
        self._log_epoch(name, value)
        return float(value)

    # ------------------------------------------------------------------------------------------------------------
    # VQA submission (upstream vqa_test_step / vqa_test_wrapup, gathered in memory)

    def id2answer(self) -> Dict[int, str]:
        dm = getattr(self.trainer, "datamodule", None)
        dicts = getattr(dm, "dm_dicts", {}) if dm is not None else {}
        for key in ("vqa_trainval", "vqa"):
            if key in dicts and hasattr(dicts[key], "id2answer"):
                return dicts[key].id2answer
        raise RuntimeError("VQA test needs the answer vocabulary: the datamodule has no dm_dicts['vqa'].id2answer")

    def submission_path(self) -> str:
        stem = os.path.basename(str(self.config.get("load_path") or ""))
        stem = stem[:-5] if stem.endswith(".ckpt") else os.path.splitext(stem)[0]
        return os.path.join(self.config.get("log_dir") or "result", f"vqa_submit_{stem}.json")

    def write_vqa_submission(self) -> Optional[str]:
        gathered = all_gather_objects(self._vqa_predictions)
        self._vqa_predictions = []
        if self.global_rank != 0:
            return None
        id2answer = self.id2answer()
        rows, seen = [], set()
        for part in gathered:
            for p in part:
                if p["question_id"] in seen:
                    continue
                seen.add(p["question_id"])
                answer = id2answer[p["answer_id"]] if p["answer_id"] in id2answer else "unknown"
                rows.append({"question_id": p["question_id"], "answer": answer})
        path = self.submission_path()
        atomic_write_json(path, rows, indent=4)
        log.info("wrote %d VQA answers to %s", len(rows), path)
        return path

    # ------------------------------------------------------------------------------------------------------------
    # IR/TR recall over the full evaluation split (upstream compute_irtr_recall)

    def retrieval_image_inputs(self, image: torch.Tensor) -> dict:
        """Image side of retrieval scoring, computed once per image: returns what :meth:`retrieval_scores` needs.
        Default: the image batch itself (re-encoded with every text batch). Backbones that can embed an image once
        (ViLT: ``visual_embed``) override this and :meth:`retrieval_infer`."""
        return {"image": image}

    def retrieval_infer(self, image_inputs: dict, text_batch: dict) -> dict:
        n = text_batch["text_ids"].shape[0]
        img = image_inputs["image"]
        batch = dict(text_batch)
        batch["image"] = [img.expand(n, *img.shape[1:])]
        return self.infer(batch)

    def retrieval_scores(self, image_inputs: dict, text_batch: dict) -> torch.Tensor:
        return self.rank_output(self.retrieval_infer(image_inputs, text_batch)["cls_feats"])[:, 0]

    @torch.no_grad()
    def compute_irtr_recall(self, text_batch_size: int = 64) -> Dict[str, float]:
        """Every image of the evaluation split against every caption; images split over processes (each exactly
        once), texts scored in batches of 64; the score rows are gathered and ranked (compute_recall_at_k)."""
        dm = self.trainer.datamodule
        text_dset = dm.make_no_false_val_dset(text_only=True)
        image_dset = dm.make_no_false_val_dset(image_only=True)
        text_dset.tokenizer = dm.tokenizer if getattr(text_dset, "tokenizer", None) is None else text_dset.tokenizer
        collate = lambda b: text_dset.collate(b, mlm_collator=dm.mlm_collator)  # noqa: E731
        text_loader = torch.utils.data.DataLoader(text_dset, batch_size=text_batch_size, shuffle=False,
                                                  num_workers=0, collate_fn=collate)
        text_batches, text_iids = [], []
        for tb in text_loader:
            text_batches.append({"text_ids": tb["text_ids"].to(self.device),
                                 "text_masks": tb["text_masks"].to(self.device),
                                 "text_labels": tb["text_labels"].to(self.device)})
            text_iids += [int(i) for i in tb["img_index"]]

        world = dist.get_world_size() if _dist_ready() else 1
        rank = dist.get_rank() if _dist_ready() else 0
        image_collate = lambda b: image_dset.collate(b, mlm_collator=dm.mlm_collator)  # noqa: E731
        my_images = list(range(rank, len(image_dset), world))
        rows, iids = [], []
        ctx = self.trainer.precision_plugin.forward_context()
        with ctx:
            for idx in my_images:
                sample = image_collate([image_dset[idx]])
                if is_empty_batch(sample):
                    continue
                image = sample["image"][0].to(self.device)
                image_inputs = self.retrieval_image_inputs(image)
                scores = [self.retrieval_scores(image_inputs, tb).float().cpu() for tb in text_batches]
                rows.append(torch.cat(scores) if scores else torch.zeros(0))
                iids.append(int(sample["img_index"][0]))
        gathered = all_gather_objects((iids, [r.numpy() for r in rows]))
        all_iids, all_rows = [], []
        for part_iids, part_rows in gathered:
            all_iids += part_iids
            all_rows += [torch.from_numpy(r) for r in part_rows]
        if not all_rows:
            raise RuntimeError("IR/TR recall: the evaluation split has no readable image")
        order = sorted(range(len(all_iids)), key=lambda i: all_iids[i])
        scores = torch.stack([all_rows[i] for i in order])
        image_ids = [all_iids[i] for i in order]
        return compute_recall_at_k(scores, text_iids, image_ids)
