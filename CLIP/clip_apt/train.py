"""Training and evaluation of one CLIP method under one of CoOp's / CoCoOp's protocols (``CLIP/run.py`` calls
:func:`run`). The data is a CoOp dataset under ``data_root`` (``dataset=oxford_pets``, ...) or a generic folder in
CoOp's split format (``dataset=folder``); K-shot subsets per seed are cached in ``<dataset>/split_fewshot/``.

- ``base2new`` (CoCoOp): train on the base half of the classes, test on the base test split, then rebuild the
  classifier for the new class names (learned weights kept, nothing class-dependent stored) and test on the new test
  split; H = 2 B N / (B + N).
- ``fewshot`` (CoOp): K shots of every class, test on every class. ``all``: the same, and ``num_shots`` < 1 uses the
  whole train split.
- ``xd`` (cross-dataset) and ``dg`` (domain generalisation): train on the source (every class, K shots), test on the
  source and on each of ``target_datasets`` with a classifier over the target's own class list (xd: by default the
  other ten of CoOp's eleven datasets; dg: ImageNet-V2 / -Sketch / -A / -R, whose classes must be ImageNet classes
  of the source: for A and R the prediction is the best of their 200 classes).

The hard prompt is ``template`` or, when it is None, each dataset's CoOp template. Results go to
``<output_dir>/<exp_name>_<peft>_seed<seed>/results.json`` (plus the tuned weights in ``tuned/``); with
``test_only=True`` the weights of ``load_path`` are evaluated and ``eval_results.json`` is written instead (so a
report globbing ``results.json`` never counts an evaluation as a second run)."""
from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Mapping

import torch
from torch.utils.data import DataLoader

import shared_apt
from shared_apt.peft.atomic import atomic_write_json

from .datasets import DATASETS, ELEVEN, FOLDER, SPECS, VARIANTS, ClassificationDataset, SplitItem, classnames_of
from .datasets import fewshot_splits, load_dataset, subsample_classes, test_transform, train_transform
from .modules.clip_model import load_clip
from .modules.clip_module import CLIPPromptModule, accuracy, harmonic_mean

PROTOCOLS = ("base2new", "fewshot", "xd", "dg", "all")
TRANSFER = ("xd", "dg")


class CLIPRunError(ValueError):
    """A CLIP run config key is missing or invalid."""


def check_config(c: Mapping[str, Any]) -> None:
    def need(cond, key, expected):
        if not cond:
            raise CLIPRunError(f"CLIP config {key}={c.get(key)!r} is invalid: expected {expected}")

    need(c.get("dataset") in DATASETS, "dataset", f"one of {DATASETS} ('folder': a generic split_zhou folder)")
    need(c.get("data_root") and os.path.isdir(c["data_root"]), "data_root",
         "an existing folder: the dataset folder (dataset=folder) or the root holding CoOp's dataset folders")
    need(c.get("clip_path") and os.path.isfile(c["clip_path"]), "clip_path", "an OpenAI-format CLIP file")
    need(c.get("protocol") in PROTOCOLS, "protocol", f"one of {PROTOCOLS}")
    need(c.get("template") is None or "{}" in str(c["template"]), "template",
         "None (each dataset's CoOp template) or a format string with one {} for the class name")
    need(isinstance(c.get("num_shots"), int), "num_shots", "an integer (< 1: every training image)")
    need(c["protocol"] in ("all", "base2new") or c["num_shots"] >= 1, "num_shots",
         f"K >= 1 for protocol={c['protocol']}")
    need(isinstance(c.get("max_epochs"), int) and c["max_epochs"] >= 0, "max_epochs", "an integer >= 0")
    need(isinstance(c.get("batch_size"), int) and c["batch_size"] >= 1, "batch_size", "an integer >= 1")
    targets = c.get("target_datasets")
    if c["protocol"] in TRANSFER:
        need(c["dataset"] != FOLDER, "dataset", f"a CoOp dataset key as the source of protocol={c['protocol']}")
        need(c["dataset"] not in VARIANTS, "dataset", "a dataset with a training split (the ImageNet variants are "
             "test-only targets)")
        allowed = VARIANTS if c["protocol"] == "dg" else tuple(SPECS)
        need(targets is None or (isinstance(targets, (list, tuple)) and len(targets) > 0
                                 and all(t in allowed and t != c["dataset"] for t in targets)),
             "target_datasets", f"None (the protocol's targets) or a non-empty list of {allowed} without the source")
        need(c["protocol"] != "dg" or c["dataset"] == "imagenet", "dataset", "imagenet for protocol=dg")
    else:
        need(not targets, "target_datasets", f"None: protocol={c['protocol']} has no targets (only xd and dg)")
    need(c.get("image_dir", "images") == "images" or c["dataset"] == FOLDER, "image_dir",
         "'images' (image_dir applies to dataset=folder only; CoOp datasets have fixed image folders)")
    need(isinstance(c.get("method_label", ""), str), "method_label", "a string ('' = the method name)")
    need(not c.get("test_only") or c.get("load_path") or c.get("peft") == "zeroshot", "load_path",
         "the tuned-weights folder of a run (written by shared_apt.save_tuned) when test_only=True")
    need(not c.get("load_path") or os.path.isfile(os.path.join(c["load_path"], "tuned_config.json")),
         "load_path", "'' or a tuned-weights folder holding tuned_config.json and tuned.safetensors")


def target_datasets(c: Mapping[str, Any]) -> List[str]:
    """The evaluation targets of ``xd`` / ``dg``: the configured list, else CoOp's (xd: the other datasets of the
    eleven; dg: the four ImageNet variants)."""
    if c["protocol"] not in TRANSFER:
        return []
    if c.get("target_datasets"):
        return list(c["target_datasets"])
    return [k for k in ELEVEN if k != c["dataset"]] if c["protocol"] == "xd" else list(VARIANTS)


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


def summary(result: Mapping[str, Any]) -> str:
    """One line: the run's accuracies and where its JSON is."""
    def pct(v):
        return "n/a" if v is None else f"{v:.2f}"

    parts = [f"{result['method_label']} on {result['dataset']} ({result['protocol']}, {result['num_shots']} shots, "
             f"seed {result['seed']}):"]
    if "base_acc" in result:
        parts += [f"base {pct(result['base_acc'])}", f"new {pct(result.get('new_acc'))}",
                  f"H {pct(result.get('harmonic_mean'))}"]
    else:
        parts.append(f"acc {pct(result['acc'])}")
    parts += [f"{k} {pct(v)}" for k, v in result.get("target_accs", {}).items()]
    name = "eval_results.json" if "load_path" in result else "results.json"  # test_only runs record load_path
    return " ".join(parts) + f" -> {os.path.join(result['output_dir'], name)}"


def evaluate(model, items: List[SplitItem], classnames: List[str], template: str, c: Mapping[str, Any], device,
             autocast: bool) -> float:
    """Top-1 accuracy (%) of ``items`` (labels index ``classnames``) with a classifier over ``classnames`` only."""
    data = ClassificationDataset(items, test_transform(c["image_size"]))
    return accuracy(model, DataLoader(data, batch_size=c["test_batch_size"], num_workers=c["num_workers"]),
                    classnames, template, device, autocast)


def run(config: Mapping[str, Any]) -> Dict[str, Any]:
    import pytorch_lightning as pl

    from shared_apt.vl.training.run import resolve_accelerator

    c = dict(config)
    c.setdefault("dataset", FOLDER)
    c.setdefault("target_datasets", None)
    c.setdefault("template", None)
    check_config(c)
    pl.seed_everything(c["seed"], verbose=False)
    source = load_dataset(c["dataset"], c["data_root"], c.get("image_dir", "images"))
    targets = [load_dataset(t, c["data_root"]) for t in target_datasets(c)]
    if c["protocol"] == "dg":
        for t in targets:
            foreign = sorted(set(t.wnids) - set(source.wnids))
            if foreign:
                raise CLIPRunError(f"protocol=dg: {t.name} classes {foreign[:5]} are not classes of {source.name} "
                                   f"({source.dataset_dir!r}); the targets must be subsets of the source's classes")
    splits = fewshot_splits(source, c["num_shots"], c["seed"], c.get("fewshot_cache_dir") or None)
    if c["protocol"] == "base2new":
        train_splits, new_splits = subsample_classes(splits, "base"), subsample_classes(splits, "new")
    else:
        train_splits, new_splits = splits, None
    classnames = classnames_of(train_splits["train"])
    template = c["template"] or source.template
    model = build_model(c, len(classnames))
    if c.get("load_path"):
        shared_apt.load_tuned(model, c["load_path"])
    accelerator = resolve_accelerator(c)
    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    trainable = shared_apt.updated_parameter_count(model)
    t0 = time.time()
    if trainable and c["max_epochs"] > 0 and not c.get("test_only"):
        train_set = ClassificationDataset(train_splits["train"], train_transform(
            c["image_size"], c.get("crop_min_scale", 0.08), c.get("flip", True)))
        loader = DataLoader(train_set, batch_size=c["batch_size"], shuffle=True, num_workers=c["num_workers"],
                            drop_last=len(train_set) >= c["batch_size"])
        module = CLIPPromptModule(model, classnames, template, c)
        model.train()
        trainer = pl.Trainer(max_epochs=c["max_epochs"], max_steps=c.get("max_steps", -1), accelerator=accelerator,
                             devices=1, precision=_precision(c, accelerator), logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             num_sanity_val_steps=0)
        trainer.fit(module, train_dataloaders=loader)
    train_time = time.time() - t0
    model.to(device)
    autocast = _precision(c, accelerator) == "16-mixed"
    class_specific = bool(getattr(shared_apt.peft_config(model), "class_specific", False))

    result: Dict[str, Any] = {"method": c["peft"], "method_label": c.get("method_label") or c["peft"],
                              "dataset": source.key, "protocol": c["protocol"], "num_shots": c["num_shots"],
                              "seed": c["seed"], "trainable_params": trainable,
                              "peft_options": shared_apt.peft_config(model).to_dict(), "template": c["template"],
                              "train_time_s": round(train_time, 2), "precision": _precision(c, accelerator)}
    acc = evaluate(model, train_splits["test"], classnames, template, c, device, autocast)
    result["base_acc" if new_splits is not None else "acc"] = acc
    note = "class-specific context cannot be evaluated on other classes"
    if new_splits is not None:
        if class_specific:
            result.update(new_acc=None, harmonic_mean=None, note=note)
        else:
            result["new_acc"] = evaluate(model, new_splits["test"], classnames_of(new_splits["train"]), template, c,
                                         device, autocast)
            result["harmonic_mean"] = harmonic_mean(result["base_acc"], result["new_acc"])
    if c["protocol"] in TRANSFER:
        result["target_accs"] = {t.key: None if class_specific else
                                 evaluate(model, t.split("test"), t.classnames, c["template"] or t.template, c,
                                          device, autocast) for t in targets}
        if class_specific:
            result["note"] = note
    out = os.path.join(c["output_dir"], f"{c['exp_name']}_{c['peft']}_seed{c['seed']}")
    os.makedirs(out, exist_ok=True)
    if c.get("test_only"):
        result["load_path"] = c.get("load_path") or None
        atomic_write_json(os.path.join(out, "eval_results.json"), result, indent=2, sort_keys=True)
    else:
        if trainable:
            shared_apt.save_tuned(model.cpu(), os.path.join(out, "tuned"))
        atomic_write_json(os.path.join(out, "results.json"), result, indent=2, sort_keys=True)
    result["output_dir"] = out
    return result
