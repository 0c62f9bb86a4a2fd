"""Training and evaluation of one CLIP method on a CoOp-format folder dataset (``CLIP/run.py`` calls :func:`run`).

Protocol ``base2new`` (CoCoOp): K-shot subsets per seed on all classes, train on the base half, test on the base
test split, then rebuild the classifier for the new class names (learned weights kept, nothing class-dependent
stored) and test on the new test split; H = 2 B N / (B + N). Protocol ``all``: train and test on every class.
Results go to ``<output_dir>/<exp_name>_<peft>_seed<seed>/results.json`` (plus the tuned weights)."""
from __future__ import annotations

import os
import time
from typing import Any, Dict, Mapping

import torch
from torch.utils.data import DataLoader

import shared_apt
from shared_apt.peft.atomic import atomic_write_json

from .datasets import ClassificationDataset, classnames_of, fewshot, read_split, subsample_classes
from .datasets import test_transform, train_transform
from .modules.clip_model import load_clip
from .modules.clip_module import CLIPPromptModule, accuracy, harmonic_mean

PROTOCOLS = ("base2new", "all")


class CLIPRunError(ValueError):
    """A CLIP run config key is missing or invalid."""


def check_config(c: Mapping[str, Any]) -> None:
    def need(cond, key, expected):
        if not cond:
            raise CLIPRunError(f"CLIP config {key}={c.get(key)!r} is invalid: expected {expected}")

    need(c.get("data_root") and os.path.isdir(c["data_root"]), "data_root",
         "a folder with one split_zhou_*.json and the images")
    need(c.get("clip_path") and os.path.isfile(c["clip_path"]), "clip_path", "an OpenAI-format CLIP file")
    need(c.get("protocol") in PROTOCOLS, "protocol", f"one of {PROTOCOLS}")
    need("{}" in str(c.get("template")), "template", "a format string with one {} for the class name")
    need(isinstance(c.get("max_epochs"), int) and c["max_epochs"] >= 0, "max_epochs", "an integer >= 0")
    need(isinstance(c.get("batch_size"), int) and c["batch_size"] >= 1, "batch_size", "an integer >= 1")


def build_model(c: Mapping[str, Any], n_classes: int):
    """Load CLIP and apply the method (class-specific CoOp gets ``n_cls`` = the training classes if not given)."""
    model = load_clip(c["clip_path"], c.get("text_heads"), c.get("vision_heads"), towers=c.get("peft_towers", ["text"]))
    options = dict(c.get("peft_options") or {})
    if c["peft"] == "coop" and options.get("class_specific") and options.get("n_cls") is None:
        options["n_cls"] = n_classes
    shared_apt.apply(model, c["peft"], **options)
    return model


def _precision(c, accelerator: str) -> str:
    from shared_apt.vl.training.run import resolve_precision

    p = c.get("precision", "auto")
    if p == "auto":
        return "16-mixed" if accelerator == "gpu" else "32-true"
    return resolve_precision(p, accelerator)


def run(config: Mapping[str, Any]) -> Dict[str, Any]:
    import pytorch_lightning as pl

    from shared_apt.vl.training.run import resolve_accelerator

    c = dict(config)
    check_config(c)
    pl.seed_everything(c["seed"], verbose=False)
    splits = fewshot(read_split(c["data_root"], c.get("image_dir", "images")), c["num_shots"], c["seed"])
    if c["protocol"] == "base2new":
        train_splits, new_splits = subsample_classes(splits, "base"), subsample_classes(splits, "new")
    else:
        train_splits, new_splits = splits, None
    classnames = classnames_of(train_splits["train"])
    model = build_model(c, len(classnames))
    accelerator = resolve_accelerator(c)
    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    size = c["image_size"]
    train_set = ClassificationDataset(train_splits["train"], train_transform(size, c.get("crop_min_scale", 0.08),
                                                                          c.get("flip", True)))
    loader = DataLoader(train_set, batch_size=c["batch_size"], shuffle=True, num_workers=c["num_workers"],
                        drop_last=len(train_set) >= c["batch_size"])
    trainable = shared_apt.updated_parameter_count(model)
    module = CLIPPromptModule(model, classnames, c["template"], c)
    t0 = time.time()
    if trainable and c["max_epochs"] > 0:
        model.train()
        trainer = pl.Trainer(max_epochs=c["max_epochs"], max_steps=c.get("max_steps", -1), accelerator=accelerator,
                             devices=1, precision=_precision(c, accelerator), logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             num_sanity_val_steps=0)
        trainer.fit(module, train_dataloaders=loader)
    train_time = time.time() - t0
    model.to(device)
    autocast = _precision(c, accelerator) == "16-mixed"

    def test_acc(split_set):
        names = classnames_of(split_set["train"]) if split_set["train"] else classnames_of(split_set["test"])
        data = ClassificationDataset(split_set["test"], test_transform(size))
        return accuracy(model, DataLoader(data, batch_size=c["test_batch_size"], num_workers=c["num_workers"]),
                        names, c["template"], device, autocast)

    result: Dict[str, Any] = {"method": c["peft"], "peft_options": shared_apt.peft_config(model).to_dict(),
                              "seed": c["seed"], "num_shots": c["num_shots"], "protocol": c["protocol"],
                              "trainable_params": trainable, "train_time_s": round(train_time, 2),
                              "precision": _precision(c, accelerator)}
    result["base_acc" if new_splits is not None else "acc"] = test_acc(train_splits)
    if new_splits is not None:
        cfg = shared_apt.peft_config(model)
        if getattr(cfg, "class_specific", False):
            result.update(new_acc=None, harmonic_mean=None,
                          note="class-specific context cannot be evaluated on new classes")
        else:
            result["new_acc"] = test_acc(new_splits)
            result["harmonic_mean"] = harmonic_mean(result["base_acc"], result["new_acc"])
    out = os.path.join(c["output_dir"], f"{c['exp_name']}_{c['peft']}_seed{c['seed']}")
    os.makedirs(out, exist_ok=True)
    if trainable:
        shared_apt.save_tuned(model.cpu(), os.path.join(out, "tuned"))
    atomic_write_json(os.path.join(out, "results.json"), result, indent=2, sort_keys=True)
    result["output_dir"] = out
    return result
