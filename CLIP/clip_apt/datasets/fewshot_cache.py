"""CoOp's few-shot subsets per seed, cached as CoOp caches them (``<dataset>/split_fewshot/shot_{K}-seed_{S}``; CoOp
writes a pickle of Dassl objects, this is the same content as JSON: ``train`` and ``val`` lists of
``[path under the image root, label, classname]``, ImageNet only ``train``). An existing cache file is read as it is
(the next run of a seed reuses its subsets); a file whose train or val images are test images is refused."""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional

from shared_apt.peft.atomic import atomic_write_json

from .coop import ClassificationData
from .folder import SplitItem, fewshot, split_items


class FewshotCacheError(ValueError):
    """A cached few-shot split is malformed or overlaps the test split."""


def cache_path(data: ClassificationData, num_shots: int, seed: int, cache_dir: Optional[str] = None) -> str:
    return os.path.join(cache_dir or os.path.join(data.dataset_dir, "split_fewshot"),
                        f"shot_{num_shots}-seed_{seed}.json")


def _entries(items: List[SplitItem], image_root: str) -> list:
    return [[os.path.relpath(it.impath, image_root), it.label, it.classname] for it in items]


def fewshot_splits(data: ClassificationData, num_shots: int, seed: int,
                   cache_dir: Optional[str] = None) -> Dict[str, List[SplitItem]]:
    """``train``/``val``/``test`` with CoOp's K-shot subsets (``folder.fewshot``: K per class for train, min(K, 4)
    for val; ImageNet: train only, val = test), read from or written to the cache; ``num_shots`` < 1: everything."""
    if data.test_only:
        raise ValueError(f"{data.name} is a test-only dataset (an evaluation target): it has no training split")
    test = data.split("test")
    if num_shots < 1:
        return {"train": data.split("train"), "val": data.split("val"), "test": test}
    path = cache_path(data, num_shots, seed, cache_dir)
    parts = ("train", "val") if data.fewshot_val else ("train",)
    if os.path.isfile(path):
        with open(path) as f:
            try:
                record = json.load(f)
            except json.JSONDecodeError as e:
                raise FewshotCacheError(f"few-shot cache {path!r} is not valid JSON ({e}); delete it to resample")
        missing = [p for p in parts if not isinstance(record, dict) or not isinstance(record.get(p), list)]
        if missing:
            raise FewshotCacheError(f"few-shot cache {path!r} lacks the list(s) {missing}; delete it to resample")
        sampled = {p: split_items(record[p], data.image_root, f"few-shot cache {path!r} {p}") for p in parts}
    else:
        pool = {p: data.split(p) for p in parts}
        sampled = fewshot({"train": pool["train"], "val": pool.get("val", []), "test": []}, num_shots, seed)
        sampled = {p: sampled[p] for p in parts}
        record = {"dataset": data.key, "num_shots": num_shots, "seed": seed,
                  **{p: _entries(sampled[p], data.image_root) for p in parts}}
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            atomic_write_json(path, record)
        except OSError as e:
            raise FewshotCacheError(f"cannot write the few-shot cache {path!r} ({e}); set the config key "
                                    f"fewshot_cache_dir to a writable folder") from e
    test_paths = {it.impath for it in test}
    for p in parts:
        leaked = [it.impath for it in sampled[p] if it.impath in test_paths]
        if leaked:
            raise FewshotCacheError(f"few-shot split {path!r}: {len(leaked)} {p} image(s) are test images "
                                    f"(e.g. {leaked[0]!r}); delete the file to resample")
    val = sampled["val"] if data.fewshot_val else data.split("val")
    return {"train": sampled["train"], "val": val, "test": test}
