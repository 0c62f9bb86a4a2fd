"""A classification dataset in CoOp's split format (KaiyangZhou/CoOp ``datasets/oxford_pets.py: read_split``), with
CoOp's few-shot sampling, the CoCoOp base-to-new class split and CoOp's transforms (Dassl).

A dataset folder holds one ``split_zhou_<Name>.json`` (object with ``train``, ``val``, ``test`` lists of
``[path under images/, label, classname]``) and an ``images/`` root."""
from __future__ import annotations

import glob
import json
import math
import os
import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Sequence

from PIL import Image
from torch.utils.data import Dataset

MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP
STD = (0.26862954, 0.26130258, 0.27577711)
SPLITS = ("train", "val", "test")
SUBSAMPLES = ("all", "base", "new")


@dataclass(frozen=True)
class SplitItem:
    impath: str      # absolute path
    label: int
    classname: str


def read_split(root: str, image_dir: str = "images") -> Dict[str, List[SplitItem]]:
    """The ``split_zhou_*.json`` of ``root`` (exactly one) with paths joined to ``root/image_dir``."""
    found = sorted(glob.glob(os.path.join(root, "split_zhou_*.json")))
    if len(found) != 1:
        raise FileNotFoundError(f"{root!r} must hold exactly one split_zhou_*.json (CoOp's split format); "
                                f"found {[os.path.basename(f) for f in found]}")
    return read_split_file(found[0], os.path.join(root, image_dir))


def read_split_file(path: str, image_root: str) -> Dict[str, List[SplitItem]]:
    """One CoOp split file: a JSON object with ``train``, ``val``, ``test`` lists of ``[path under image_root,
    integer label, classname]``; paths are joined to ``image_root``."""
    with open(path) as f:
        try:
            split = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path!r} is not valid JSON: {e}") from e
    missing = [s for s in SPLITS if not isinstance(split, dict) or s not in split]
    if missing:
        raise KeyError(f"{path!r} lacks the split(s) {missing} (expected keys {SPLITS})")
    return {name: split_items(split[name], image_root, f"{path!r} {name}") for name in SPLITS}


def split_items(entries, image_root: str, where: str) -> List[SplitItem]:
    """``[relative path, integer label, classname]`` lists (CoOp's split entries) as items under ``image_root``."""
    items = []
    for i, entry in enumerate(entries):
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)
                and isinstance(entry[1], int) and not isinstance(entry[1], bool) and isinstance(entry[2], str)):
            raise ValueError(f"{where}[{i}] = {entry!r}: expected [path, integer label, classname]")
        items.append(SplitItem(os.path.join(image_root, entry[0]), entry[1], entry[2]))
    return items


def classnames_of(items: Sequence[SplitItem]) -> List[str]:
    """Class names ordered by label (Dassl: from the train split; num_classes = max label + 1)."""
    names = {}
    for it in items:
        if names.setdefault(it.label, it.classname) != it.classname:
            raise ValueError(f"label {it.label} has two class names: {names[it.label]!r} and {it.classname!r}")
    n = max(names) + 1 if names else 0
    absent = [y for y in range(n) if y not in names]
    if absent:
        raise ValueError(f"labels {absent} have no item: class names cannot be ordered by label")
    return [names[y] for y in range(n)]


def fewshot(splits: Dict[str, List[SplitItem]], num_shots: int, seed: int) -> Dict[str, List[SplitItem]]:
    """CoOp's K-shot subsets: ``random.seed(seed)`` then per class (in order of first appearance)
    ``random.sample(items, K)`` (all if fewer), train first, then val with min(K, 4); test untouched.
    ``num_shots`` < 1 keeps everything."""
    if num_shots < 1:
        return dict(splits)
    rng = random.Random(seed)

    def sample(items, k):
        groups: "OrderedDict[int, list]" = OrderedDict()
        for it in items:
            groups.setdefault(it.label, []).append(it)
        out = []
        for group in groups.values():
            out.extend(rng.sample(group, k) if len(group) >= k else group)
        return out

    return {"train": sample(splits["train"], num_shots), "val": sample(splits["val"], min(num_shots, 4)),
            "test": list(splits["test"])}


def subsample_classes(splits: Dict[str, List[SplitItem]], subsample: str = "all") -> Dict[str, List[SplitItem]]:
    """CoCoOp's base-to-new split: labels of the train split sorted, m = ceil(n / 2); "base" keeps the first m,
    "new" the rest; every split is filtered to them and relabelled 0.. in sorted order."""
    if subsample not in SUBSAMPLES:
        raise ValueError(f"subsample={subsample!r}: expected one of {SUBSAMPLES}")
    if subsample == "all":
        return dict(splits)
    labels = sorted({it.label for it in splits["train"]})
    m = math.ceil(len(labels) / 2)
    chosen = labels[:m] if subsample == "base" else labels[m:]
    relabel = {y: i for i, y in enumerate(chosen)}
    return {name: [SplitItem(it.impath, relabel[it.label], it.classname) for it in items if it.label in relabel]
            for name, items in splits.items()}


def train_transform(size: int = 224, min_scale: float = 0.08, flip: bool = True):
    """CoOp's: RandomResizedCrop(size, scale (0.08, 1), bicubic) -> horizontal flip -> tensor -> CLIP normalise."""
    from torchvision import transforms as T

    steps = [T.RandomResizedCrop(size, scale=(min_scale, 1.0), interpolation=T.InterpolationMode.BICUBIC)]
    steps += [T.RandomHorizontalFlip()] if flip else []
    return T.Compose(steps + [T.ToTensor(), T.Normalize(MEAN, STD)])


def test_transform(size: int = 224):
    """CoOp's: Resize(shorter side = size, bicubic) -> CenterCrop(size) -> tensor -> CLIP normalise."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size), T.ToTensor(),
                      T.Normalize(MEAN, STD)])


class ClassificationDataset(Dataset):
    def __init__(self, items: Sequence[SplitItem], transform):
        self.items, self.transform = list(items), transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        it = self.items[i]
        with Image.open(it.impath) as im:
            image = im.convert("RGB")
        return self.transform(image), it.label
