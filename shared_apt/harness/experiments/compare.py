"""Method comparison driver shared by ``script/demo.sh`` and ``script/nlvr1_bench.sh``.

    bb = compare.get_backbone("vilt")
    ckpt = compare.pretrain(compare.pretrain_config(bb, task, out_dir, ...))        # MLM+ITM, returns last.ckpt
    rows = compare.finetune_all(bb, task, methods, ckpt, out_dir, ...)              # one row per method
    text = compare.render_table(rows, meta); compare.write_json(...); compare.plot(...)

Training goes through :func:`shared_apt.vl.training.run.run` (the same driver as ``ViLT/run.py`` / ``METER/run.py``);
this module only builds the configs (the backbone's Sacred defaults + named configs + tiny geometry + overrides),
times the runs and collects their metrics. The score of a method is the task's validation metric
(``vqa/val/score_epoch``) after the LAST training epoch, i.e. of the final weights (no selection on the evaluation
split). "Updated params" and "additional GFLOPs" are computed with :mod:`shared_apt.profile`'s conventions (method's
own parameters; fvcore MACs of the blocks every method changes, LoRA merged, batch 1) on the exact geometry and method
options that were trained, at the sequence length of the evaluation data.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import importlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch
from pytorch_lightning.callbacks import Callback, ModelSummary

from shared_apt.harness.backbones import BackboneUnavailable, backbone_names
from shared_apt.harness.backbones import get_backbone as registry_backbone
from shared_apt.peft.atomic import atomic_write_json
from shared_apt.peft.config import ConfigError
from shared_apt.peft.registry import get_method, method_names, parse_methods
from shared_apt.vl.training.run import plain, resolve_config, run

log = logging.getLogger(__name__)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


# ---------------------------------------------------------------------------------------------------------------
# Backbones


@dataclass(frozen=True)
class Backbone:
    name: str
    entry: str                 # run.py relative to the repository root; the backbone is usable when it exists
    config_module: str         # module holding the Sacred experiment ``ex``
    model_class: str           # "module:Class"
    tiny: str                  # named config with the tiny geometry
    pretrain_named: tuple      # MLM+ITM task named config(s)
    finetune_named: tuple      # VQA fine-tuning named config(s)
    profile_backbone: str      # registered backbone name (shared_apt.peft.registry; profile's FLOPs convention)
    datamodule: str            # "module:function" (config, dist) -> LightningDataModule, as the backbone's run.py
    two_stream: bool = False   # METER: text and image streams meet in co-attention layers

    def ex(self):
        return importlib.import_module(self.config_module).ex

    def model_cls(self):
        return _load(self.model_class)

    def datamodule_factory(self):
        make = _load(self.datamodule)
        return lambda config: make(config, dist=True)


def _load(spec: str):
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def comparison_backbones() -> Dict[str, Backbone]:
    """Short name ("vilt", "meter") -> Backbone, for every registered backbone that declares its training
    experiment (``extras``, see shared_apt.peft.registry.Backbone)."""
    out = {}
    for name in backbone_names():
        extras = dict(registry_backbone(name).extras)
        if "short_name" in extras:
            short = extras.pop("short_name")
            out[short] = Backbone(name=short, profile_backbone=name, **extras)
    return out


def get_backbone(name: str) -> Backbone:
    backbones = comparison_backbones()
    if name not in backbones:
        raise BackboneUnavailable(f"unknown backbone {name!r}; choose from {sorted(backbones)}")
    bb = backbones[name]
    if not os.path.isfile(os.path.join(REPO, bb.entry)):
        raise BackboneUnavailable(f"{name}: {bb.entry} does not exist in this checkout yet")
    try:
        bb.ex()
        bb.model_cls()
        bb.datamodule_factory()
    except (ImportError, AttributeError) as e:
        raise BackboneUnavailable(f"{name}: cannot import its config / model ({e})") from e
    return bb


# keys that run() / the datamodules read with a default when absent from the Sacred config
OPTIONAL_KEYS = ("progress_bar", "dataset_split_names", "dataset_class_overrides", "fast_dev_run", "accelerator",
                 "save_tuned_weights", "max_bad_image_fraction")


def build_config(bb: Backbone, named: Sequence[str], overrides: Mapping[str, Any]) -> dict:
    """The backbone's Sacred config with `named` configs applied, then `overrides` (keys must exist in the config or
    be one of OPTIONAL_KEYS)."""
    cfg = resolve_config(bb.ex(), named)
    unknown = sorted(k for k in overrides if k not in cfg and k not in OPTIONAL_KEYS)
    if unknown:
        raise KeyError(f"{bb.name}: unknown config key(s) {unknown}")
    cfg.update(plain(dict(overrides)))
    return cfg


# ---------------------------------------------------------------------------------------------------------------
# Task data


@dataclass
class TaskData:
    """What a comparison needs to know about its data (written by the demo world or the NLVR1 preparation)."""
    name: str                      # "demo VQA", "NLVR v1"
    data_root: str
    tokenizer: str
    vocab_size: int
    cls_token_id: int
    num_labels: int                # VQA answer vocabulary size (2 for NLVR1)
    pretrain_datasets: List[str]
    pretrain_split_names: Dict[str, Dict[str, List[str]]]
    finetune_datasets: List[str]
    finetune_split_names: Dict[str, Dict[str, List[str]]]
    eval_tables: List[str]         # the tables the score is computed on (the finetune "val" split)
    metric_name: str = "VQA score"
    majority: Optional[float] = None   # score of always answering the most frequent training answer
    majority_answer: Optional[str] = None
    info: Dict[str, Any] = field(default_factory=dict)
    model_overrides: Dict[str, Any] = field(default_factory=dict)  # config keys the data needs (image_size ...)


def _vqa_rows(data_root: str, tables: Sequence[str]):
    from shared_apt.vl.data.arrow import read_arrow_table

    for name in tables:
        t = read_arrow_table(os.path.join(data_root, f"{name}.arrow"))
        for answers, labels, scores in zip(t["answers"].to_pylist(), t["answer_labels"].to_pylist(),
                                           t["answer_scores"].to_pylist()):
            for ans, lab, sc in zip(answers, labels, scores):
                yield ans, lab, sc


def majority_baseline(data_root: str, train_tables: Sequence[str], eval_tables: Sequence[str]):
    """(score, answer) of predicting, for every evaluation question, the label that is most often the top-scored
    answer of the training questions (VQA soft score; accuracy for single-answer tasks)."""
    counts: Dict[int, int] = {}
    for answers, labels, scores in _vqa_rows(data_root, train_tables):
        if not labels:
            continue
        top = max(range(len(labels)), key=lambda i: scores[i])
        counts[labels[top]] = counts.get(labels[top], 0) + 1
    if not counts:
        return None, None
    best = max(counts, key=lambda k: (counts[k], -k))
    total, n = 0.0, 0
    for _answers, labels, scores in _vqa_rows(data_root, eval_tables):
        total += sum(s for lab, s in zip(labels, scores) if lab == best)
        n += 1
    return (total / n if n else None), best


def with_majority(task: TaskData) -> TaskData:
    train = task.finetune_split_names[task.finetune_datasets[0]]["train"]
    score, label = majority_baseline(task.data_root, train, task.eval_tables)
    task.majority = score
    names = {}
    vocab = os.path.join(task.data_root, "vqa_dict.json")   # VQA writer: label id -> answer
    if os.path.isfile(vocab):
        with open(vocab) as f:
            names = {int(k): v for k, v in json.load(f).items() if str(k).isdigit()}
    task.majority_answer = None if label is None else names.get(int(label), str(label))
    return task


# ---------------------------------------------------------------------------------------------------------------
# Method options scaled to a tiny backbone


def tiny_peft_options(method: str, hidden: int, num_prompts: int = 10, rank: int = 4) -> dict:
    """The method's paper settings (its named config's options) with sizes scaled to the tiny geometry:
    `num_prompts` prompts (200 at full size, for ~240 tokens), `rank`, bottlenecks hidden / 4 (96 of 768 at full
    size is 1/8; /4 keeps at least 16 units at width 64)."""
    scaled = {"num_prompts": num_prompts, "rank": rank, "bottleneck": max(4, hidden // 4)}
    config = get_method(method).config
    names = config.flat_keys()
    return {key: scaled.get(names[key], value) for key, value in config.paper_settings().items()}


# ---------------------------------------------------------------------------------------------------------------
# Timing


class TrainClock(Callback):
    """Wall time of training alone: from train start to train end, minus the validation passes in between."""

    def __init__(self):
        self.train_s = 0.0
        self._t0 = None
        self._val0 = None
        self._val_s = 0.0

    def on_train_start(self, trainer, pl_module):
        self._t0 = time.perf_counter()

    def on_validation_start(self, trainer, pl_module):
        if self._t0 is not None:
            self._val0 = time.perf_counter()

    def on_validation_end(self, trainer, pl_module):
        if self._val0 is not None:
            self._val_s += time.perf_counter() - self._val0
            self._val0 = None

    def on_train_end(self, trainer, pl_module):
        if self._t0 is not None:
            self.train_s = time.perf_counter() - self._t0 - self._val_s


class StageLine(Callback):
    """One progress line per epoch (visible in logs, where Lightning's live bar is not)."""

    def __init__(self, label: str, printer: Callable[[str], None]):
        self.label, self.printer = label, printer

    def on_train_epoch_end(self, trainer, pl_module):
        metrics = {k: v for k, v in trainer.callback_metrics.items() if k.endswith("_epoch") and "/val/" in k}
        shown = ", ".join(f"{k}={float(v):.3f}" for k, v in sorted(metrics.items()))
        self.printer(f"  {self.label}: epoch {trainer.current_epoch + 1}/{trainer.max_epochs} "
                     f"step {trainer.global_step}{' ' + shown if shown else ''}")


def _printer(quiet: bool) -> Callable[[str], None]:
    return (lambda s: None) if quiet else (lambda s: print(s, flush=True))


# ---------------------------------------------------------------------------------------------------------------
# Pre-training


def _common_overrides(task: TaskData, log_dir: str, seed: int, batch_size: int, progress_bar: bool) -> dict:
    return {
        "data_root": task.data_root, "tokenizer": task.tokenizer, "vocab_size": int(task.vocab_size),
        "cls_token_id": int(task.cls_token_id), "log_dir": log_dir, "seed": int(seed), "num_workers": 0,
        "num_gpus": 1, "num_nodes": 1, "per_gpu_batchsize": int(batch_size), "batch_size": int(batch_size),
        "precision": 32, "progress_bar": bool(progress_bar), "save_tuned_weights": False,
        **copy.deepcopy(task.model_overrides),
    }


def pretrain_config(bb: Backbone, task: TaskData, out_dir: str, *, epochs: int, learning_rate: float,
                    batch_size: int = 32, seed: int = 0, progress_bar: bool = True, **overrides) -> dict:
    """MLM+ITM on the task's caption tables (the backbone's pre-training named config + tiny geometry)."""
    cfg = build_config(bb, [*bb.pretrain_named, bb.tiny], {
        **_common_overrides(task, os.path.join(out_dir, "pretrain"), seed, batch_size, progress_bar),
        "exp_name": "mlm_itm", "datasets": list(task.pretrain_datasets),
        "dataset_split_names": copy.deepcopy(task.pretrain_split_names), "max_epoch": int(epochs),
        "max_steps": None, "warmup_steps": 0.1, "learning_rate": float(learning_rate), "val_check_interval": 1.0,
        "load_path": "", **overrides})
    return cfg


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def pretrain(config: Mapping[str, Any], bb: Backbone, *, reuse: bool = True, quiet: bool = False) -> dict:
    """Run MLM+ITM pre-training with `config`; returns {"checkpoint", "time_s", "steps", "metrics", "reused"}.
    With `reuse`, a previous run of the same config (same log_dir) is taken from its ``PRETRAINED.json``."""
    say = _printer(quiet)
    config = plain(dict(config))
    key = _digest({k: v for k, v in config.items() if k not in ("progress_bar",)})
    marker = os.path.join(config["log_dir"], f"PRETRAINED-{key}.json")
    if reuse and os.path.isfile(marker):
        with open(marker) as f:
            done = json.load(f)
        if os.path.isfile(done["checkpoint"]):
            say(f"[pretrain] reusing {done['checkpoint']} (same config, {done['time_s']:.0f}s when trained)")
            return {**done, "reused": True}
    clock = TrainClock()
    callbacks = [clock, ModelSummary(max_depth=0), StageLine("pretrain", say)]
    t0 = time.perf_counter()
    result = run(config, bb.model_cls(), bb.datamodule_factory(), callbacks=callbacks)
    wall = time.perf_counter() - t0
    metrics = _scalars(result["metrics"])
    done = {"checkpoint": result["last_model_path"], "time_s": clock.train_s, "wall_s": wall,
            "steps": int(result["trainer"].global_step), "metrics": metrics,
            "train_rows": len(result["datamodule"].train_dataset)}
    os.makedirs(config["log_dir"], exist_ok=True)
    with open(marker, "w") as f:
        json.dump(done, f, indent=1)
    return {**done, "reused": False}


def _scalars(metrics: Mapping[str, Any]) -> Dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if isinstance(v, (int, float)) and math.isfinite(float(v)):
            out[k] = float(v)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Fine-tuning every method


def finetune_config(bb: Backbone, task: TaskData, method: str, load_path: str, out_dir: str, *, epochs: int,
                    learning_rate: float, batch_size: int = 32, seed: int = 0, progress_bar: bool = True,
                    peft_options: Optional[dict] = None, **overrides) -> dict:
    """VQA fine-tuning of `method` (its ``peft_<method>`` named config: the paper's 5x learning rate for PETL
    methods) from `load_path`, with the tiny geometry and tiny-scaled method options."""
    named = [*bb.finetune_named, bb.tiny, f"peft_{method}"]
    base = build_config(bb, named, {})
    options = peft_options if peft_options is not None else tiny_peft_options(method, int(base["hidden_size"]))
    return build_config(bb, named, {
        **_common_overrides(task, os.path.join(out_dir, "finetune"), seed, batch_size, progress_bar),
        "exp_name": f"finetune_{method}", "datasets": list(task.finetune_datasets),
        "dataset_split_names": copy.deepcopy(task.finetune_split_names), "vqav2_label_size": int(task.num_labels),
        "max_epoch": int(epochs), "max_steps": None, "warmup_steps": 0.1, "learning_rate": float(learning_rate),
        "val_check_interval": 1.0, "load_path": load_path or "", "peft_options": dict(options), **overrides})


@dataclass
class Row:
    method: str
    updated_params: int
    additional_macs: int
    score: Optional[float]
    train_time_s: float
    wall_time_s: float
    steps: int
    trainable_params: int
    learning_rate: float
    options: dict
    checkpoint: Optional[str] = None       # the fine-tuned model's last.ckpt
    tuned_weights: Optional[str] = None    # the tuned tensors alone (shared_apt.save_tuned), when written

    @property
    def additional_gflops(self) -> float:
        return self.additional_macs / 1e9


def seq_len_of(bb: Backbone, config: Mapping[str, Any], dataset) -> dict:
    """Tokens the transformer sees for the first evaluation sample: text slots (max_text_len) + image patches (+ the
    image [CLS]), as in the training batches (images padded to the batch, text padded to max_text_len)."""
    sample = dataset[0]
    image = sample["image"][0]
    h, w = int(image.shape[-2]), int(image.shape[-1])
    p = int(config["patch_size"])
    patches = (h // p) * (w // p)
    if int(config.get("max_image_len", -1)) > 0:
        patches = min(patches, int(config["max_image_len"]))
    text = int(config["max_text_len"])
    return {"seq_len": text + patches + 1, "text_len": text, "image_len": patches + 1, "image_hw": [h, w]}


def _forward_fn(bb: Backbone, text_len: int):
    """The registered backbone's FLOP-counting forward, split at this run's text length (two-stream backbones:
    the registered default text length is the full-size one)."""
    forward = registry_backbone(bb.profile_backbone).forward
    return lambda model, seq_len: forward(model, seq_len, text_len)


def method_cost(bb: Backbone, config: Mapping[str, Any], seq_len: int, text_len: int) -> tuple:
    """(updated params, additional MACs) of config's method on its exact geometry, by shared_apt.profile's
    conventions: frozen-backbone MACs subtracted, LoRA merged, batch 1, meta device."""
    from shared_apt.peft import api
    from shared_apt.peft.accounting import count_macs

    def build(method, options):
        cfg = plain(dict(config))
        cfg.update(peft=method, peft_options=dict(options), load_path="", drop_rate=0.0)
        with torch.device("meta"):
            return bb.model_cls()(cfg)

    fwd = _forward_fn(bb, text_len)
    method = config["peft"]
    model = build(method, config["peft_options"])
    updated = api.updated_parameter_count(model)
    if method in ("full", "classifier"):
        return updated, 0
    frozen = build("full", {})
    model.eval()
    api.merge(model)
    return updated, count_macs(fwd, model, seq_len) - count_macs(fwd, frozen, seq_len)


def finetune(config: Mapping[str, Any], bb: Backbone, *, quiet: bool = False) -> tuple:
    """Fine-tune one method; returns (Row, run result)."""
    say = _printer(quiet)
    config = plain(dict(config))
    clock = TrainClock()
    callbacks = [clock, ModelSummary(max_depth=0), StageLine(config["peft"], say)]
    t0 = time.perf_counter()
    result = run(config, bb.model_cls(), bb.datamodule_factory(), callbacks=callbacks)
    wall = time.perf_counter() - t0
    metrics = _scalars(result["metrics"])
    score = metrics.get("vqa/val/score_epoch")
    model = result["model"]
    row = Row(method=config["peft"], updated_params=0, additional_macs=0, score=score, train_time_s=clock.train_s,
              wall_time_s=wall, steps=int(result["trainer"].global_step),
              trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
              learning_rate=float(config["learning_rate"]) * float(config.get("peft_lr_scale", 1)),
              options=dict(config["peft_options"]), checkpoint=result.get("last_model_path"),
              tuned_weights=result.get("tuned_path"))
    return row, result


def finetune_all(bb: Backbone, task: TaskData, methods: Sequence[str], load_path: str, out_dir: str, *,
                 epochs: int, learning_rate: float, batch_size: int = 32, seed: int = 0, progress_bar: bool = True,
                 quiet: bool = False, on_row: Optional[Callable[[Row], None]] = None, **overrides) -> tuple:
    """Fine-tune every method in turn from `load_path`; returns (rows, meta) where meta holds the sequence length
    the FLOPs were counted at."""
    say = _printer(quiet)
    for m in methods:
        get_method(m)
    rows, meta = [], {}
    for i, method in enumerate(methods):
        cfg = finetune_config(bb, task, method, load_path, out_dir, epochs=epochs, learning_rate=learning_rate,
                              batch_size=batch_size, seed=seed, progress_bar=progress_bar, **overrides)
        say(f"[finetune {i + 1}/{len(methods)}] {method} (lr {cfg['learning_rate'] * cfg['peft_lr_scale']:g}, "
            f"options {cfg['peft_options']}) ...")
        row, result = finetune(cfg, bb, quiet=quiet)
        if not meta:
            meta = seq_len_of(bb, cfg, result["datamodule"].val_dataset)
        row.updated_params, row.additional_macs = method_cost(bb, cfg, meta["seq_len"], meta["text_len"])
        say(f"[finetune {i + 1}/{len(methods)}] {method}: {task.metric_name} {_pct(row.score)} after {row.steps} "
            f"steps, {row.train_time_s:.1f}s training")
        rows.append(row)
        if on_row is not None:
            on_row(row)
        del result
    return rows, meta


# ---------------------------------------------------------------------------------------------------------------
# Output


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _params(n: int) -> str:
    return f"{n:,}"


def render_table(rows: Sequence[Row], meta: Mapping[str, Any], task: TaskData, backbone: str,
                 pretrain_info: Optional[Mapping[str, Any]] = None) -> str:
    n = meta.get("seq_len")
    out = [f"### {backbone}: {task.name}, every tuning method from the same MLM+ITM pre-trained checkpoint", "",
           f"| method | updated params | additional GFLOPs (n={n}) | {task.metric_name} (%) | training time (s) |",
           "|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r.method} | {_params(r.updated_params)} | {r.additional_gflops:.6f} | {_pct(r.score)} | "
                   f"{r.train_time_s:.1f} |")
    if task.majority is not None:
        out.append(f"| majority answer ({task.majority_answer}) | 0 | 0 | {_pct(task.majority)} | 0 |")
    out.append("")
    out.append(f"{task.metric_name}: {', '.join(task.eval_tables)} ({task.info.get('eval_rows', '?')} questions), "
               f"weights after the last epoch. Updated params: the method's own parameters (full: every parameter; "
               f"heads not counted, as in the paper). Additional GFLOPs: fvcore multiply-accumulates at batch 1 over "
               f"the blocks the methods change, n = {n} tokens ({meta.get('text_len')} text + "
               f"{meta.get('image_len')} image, images {meta.get('image_hw')}).")
    if pretrain_info:
        out.append(f"Pre-training: MLM+ITM, {pretrain_info.get('steps')} steps, "
                   f"{pretrain_info.get('time_s', 0):.0f}s{' (reused)' if pretrain_info.get('reused') else ''}.")
    return "\n".join(out)


def write_json(path: str, rows: Sequence[Row], meta: Mapping[str, Any], task: TaskData, backbone: str,
               pretrain_info: Optional[Mapping[str, Any]] = None, extra: Optional[Mapping[str, Any]] = None) -> None:
    doc = {
        "backbone": backbone, "task": task.name, "metric": task.metric_name, "eval_tables": task.eval_tables,
        "seq_len": meta.get("seq_len"), "seq_len_detail": dict(meta),
        "majority_baseline": {"score": task.majority, "answer_label": task.majority_answer},
        "pretrain": dict(pretrain_info or {}), "task_info": task.info,
        "rows": [{**asdict(r), "additional_gflops": r.additional_gflops} for r in rows],
        **dict(extra or {}),
    }
    atomic_write_json(path, doc, indent=2, default=str)


def plot(path: str, rows: Sequence[Row], task: TaskData, backbone: str) -> None:
    """Score vs updated parameters (log x; methods with 0 updated parameters drawn at 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        x = max(1, r.updated_params)
        y = 100 * r.score if r.score is not None else float("nan")
        ax.scatter([x], [y], s=40)
        ax.annotate(r.method + (" (0)" if r.updated_params == 0 else ""), (x, y), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)
    if task.majority is not None:
        ax.axhline(100 * task.majority, ls="--", lw=1, color="gray", label="majority answer")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("updated parameters (log scale)")
    ax.set_ylabel(f"{task.metric_name} (%)")
    ax.set_title(f"{backbone}: {task.name}")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def quiet_lightning() -> None:
    """Keep the console to progress bars, stage lines and the table (Lightning's INFO banners off)."""
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric",
                 "pytorch_lightning.utilities.rank_zero", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory.*exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*deterministic.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")


# ---------------------------------------------------------------------------------------------------------------
# The whole comparison


def compare(bb: Backbone, task: TaskData, out_dir: str, *, methods: Optional[Sequence[str]] = None,
            pretrain_epochs: int, pretrain_lr: float, finetune_epochs: int, finetune_lr: float,
            batch_size: int = 32, seed: int = 0, progress_bar: bool = True, quiet: bool = False,
            reuse_pretrain: bool = True, pretrain_overrides: Optional[Mapping[str, Any]] = None,
            finetune_overrides: Optional[Mapping[str, Any]] = None, json_path: Optional[str] = None,
            png_path: Optional[str] = None, extra: Optional[Mapping[str, Any]] = None) -> dict:
    """Pre-train (MLM+ITM), fine-tune every method from that checkpoint, write the table (``table.md``), JSON and
    PNG into `out_dir` (or the given paths). Returns {"rows", "meta", "pretrain", "table", "json", "png"}."""
    say = _printer(quiet)
    quiet_lightning()
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.perf_counter()
    pcfg = pretrain_config(bb, task, out_dir, epochs=pretrain_epochs, learning_rate=pretrain_lr,
                           batch_size=batch_size, seed=seed, progress_bar=progress_bar,
                           **dict(pretrain_overrides or {}))
    say(f"[pretrain] tiny {bb.name}, MLM+ITM on {', '.join(pcfg['datasets'])} for {pretrain_epochs} epoch(s), "
        f"lr {pretrain_lr:g} (hidden {pcfg['hidden_size']}, "
        f"{pcfg['num_top_layer'] if bb.two_stream else pcfg['num_layers']} {'fusion ' if bb.two_stream else ''}"
        f"layers) ...")
    pre = pretrain(pcfg, bb, reuse=reuse_pretrain, quiet=quiet)
    if not pre["reused"]:
        shown = {k: round(v, 3) for k, v in pre["metrics"].items() if k.startswith(("mlm/val", "itm/val"))
                 and k.endswith("accuracy_epoch")}
        say(f"[pretrain] done: {pre['steps']} steps in {pre['time_s']:.0f}s; {shown}")
    rows, meta = finetune_all(bb, task, list(methods or method_names()), pre["checkpoint"], out_dir, epochs=finetune_epochs,
                              learning_rate=finetune_lr, batch_size=batch_size, seed=seed, progress_bar=progress_bar,
                              quiet=quiet, **dict(finetune_overrides or {}))
    table = render_table(rows, meta, task, bb.name, pre)
    json_path = json_path or os.path.join(out_dir, "results.json")
    png_path = png_path or os.path.join(out_dir, "results.png")
    total = time.perf_counter() - t0
    write_json(json_path, rows, meta, task, bb.name, pre, {
        "total_time_s": total, "pretrain_epochs": pretrain_epochs, "finetune_epochs": finetune_epochs,
        "finetune_learning_rate": finetune_lr, "pretrain_learning_rate": pretrain_lr, "batch_size": batch_size,
        "seed": seed, "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(), **dict(extra or {})})
    plot(png_path, rows, task, bb.name)
    with open(os.path.join(out_dir, "table.md"), "w") as f:
        f.write(table + "\n")
    return {"rows": rows, "meta": meta, "pretrain": pre, "table": table, "json": json_path, "png": png_path,
            "total_time_s": total}


# ---------------------------------------------------------------------------------------------------------------
# Command-line pieces shared by the demo and the NLVR v1 benchmark


def add_run_arguments(ap: argparse.ArgumentParser) -> None:
    """--model, --methods and the training-schedule options of every comparison command."""
    ap.add_argument("--model", default="vilt", choices=sorted(comparison_backbones()))
    ap.add_argument("--methods", default="all", help=f"'all' or a comma list of {', '.join(method_names())}")
    ap.add_argument("--pretrain-epochs", type=int, default=None)
    ap.add_argument("--pretrain-lr", type=float, default=None)
    ap.add_argument("--finetune-epochs", type=int, default=None)
    ap.add_argument("--finetune-lr", type=float, default=None, help="base learning rate (PETL methods x5)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--precision", default="auto", choices=("auto", "32", "bf16", "16"),
                    help="'auto': the fastest path this machine supports (printed); 32, bf16 or 16 to force one")
    ap.add_argument("--pretrain-precision", default=None, choices=("auto", "32", "bf16", "16"),
                    help="precision of the pre-training stage only (default: --precision's); e.g. --precision bf16 "
                         "--pretrain-precision 32 fine-tunes in bf16 from the fp32 pre-trained backbone, as a user "
                         "fine-tuning released fp32 weights in bf16 does")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fresh", action="store_true", help="pre-train again even if a cached checkpoint matches")
    ap.add_argument("--no-progress", action="store_true", help="a line per epoch instead of Lightning's bars")


def resolve_run(args, defaults: Mapping[str, Mapping[str, Any]]):
    """(backbone, settings = the model's defaults overlaid with the given options, methods); raises
    BackboneUnavailable when the model's code is missing."""
    bb = get_backbone(args.model)
    settings = dict(defaults[args.model])
    for k in settings:
        if getattr(args, k, None) is not None:
            settings[k] = getattr(args, k)
    try:
        methods = parse_methods(args.methods)
    except ConfigError as e:
        raise SystemExit(str(e)) from e
    return bb, settings, methods


def fastest_path(tag: str, bb: Backbone, forced: str = "auto", flag: str = "--precision"):
    """The ``precision`` of the fastest path this machine runs the tiny model on
    (shared_apt.vl.speed.fastest_precision), printed with the path it names; ``forced`` (the command-line `flag`)
    other than "auto" is taken as given and printed as such."""
    from shared_apt.vl.speed import fastest_precision

    if forced != "auto":
        precision = int(forced) if forced.isdigit() else forced
        print(f"[{tag}] path: precision {forced} ({flag}) + SDPA attention", flush=True)
        return precision
    precision, why = fastest_precision("cuda" if torch.cuda.is_available() else "cpu",
                                       int(build_config(bb, [bb.tiny], {})["hidden_size"]))
    print(f"[{tag}] path: {why}", flush=True)
    return precision


def run_precisions(tag: str, bb: Backbone, args):
    """(pre-training overrides, fine-tuning overrides): ``{"precision": ...}`` of ``--precision`` for both, or of
    ``--pretrain-precision`` for the pre-training when it is given."""
    finetune = {"precision": fastest_path(tag, bb, getattr(args, "precision", "auto"))}
    forced_pre = getattr(args, "pretrain_precision", None)
    if forced_pre is None:
        return finetune, finetune
    return {"precision": fastest_path(f"{tag} pre-training", bb, forced_pre, "--pretrain-precision")}, finetune


def run_and_report(tag: str, bb: Backbone, task: TaskData, out: str, args, settings: Mapping[str, Any],
                   methods: Sequence[str], extra: Mapping[str, Any], started: float) -> dict:
    """The end of every comparison command: :func:`compare` with the resolved settings and the command-line run
    options, then the table and where the table, JSON and plot were written."""
    pre, fastest = run_precisions(tag, bb, args)
    res = compare(bb, task, out, methods=methods, pretrain_epochs=settings["pretrain_epochs"],
                  pretrain_lr=settings["pretrain_lr"], finetune_epochs=settings["finetune_epochs"],
                  finetune_lr=settings["finetune_lr"], batch_size=settings["batch_size"], seed=args.seed,
                  progress_bar=not args.no_progress, reuse_pretrain=not args.fresh,
                  pretrain_overrides=pre, finetune_overrides=fastest,
                  extra={**extra, **fastest, "pretrain_precision": pre["precision"]})
    print()
    print(res["table"])
    print()
    print(f"[{tag}] {time.perf_counter() - started:.0f}s in all; table {os.path.join(out, 'table.md')}, "
          f"JSON {res['json']}, plot {res['png']}")
    return res

