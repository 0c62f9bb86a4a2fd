"""CoOp's 11 datasets and the 4 ImageNet variants in CoOp's on-disk layout (KaiyangZhou/CoOp ``datasets/*.py`` and
``DATASETS.md``), next to the generic folder dataset (``dataset="folder"``: one folder with a ``split_zhou_*.json``).

``load_dataset(key, data_root)`` reads ``data_root/<folder>`` of the dataset ``key`` (CoOp's config stems:
``imagenet, caltech101, oxford_pets, stanford_cars, oxford_flowers, food101, fgvc_aircraft, sun397, dtd, eurosat,
ucf101, imagenetv2, imagenet_sketch, imagenet_a, imagenet_r``):

- split-file datasets: ``<folder>/split_zhou_<Name>.json`` with ``[path under the image root, label, classname]``;
- FGVCAircraft: ``fgvc_aircraft/variants.txt`` (one class per line, label = line index) and
  ``images_variant_{train,val,test}.txt`` (``<image id> <variant>`` per line, image ``images/<id>.jpg``);
- ImageNet: ``imagenet/classnames.txt`` (``<wnid> <class name>`` per line) and ``images/{train,val}/<wnid>/``;
  label = index of the sorted wnid folder, val is the test split (and CoOp's val);
- ImageNetV2: ``imagenetv2/imagenetv2-matched-frequency-format-val/<k>/`` = class k of ``classnames.txt``;
- ImageNet-Sketch / -A / -R: one folder per wnid (``README.txt`` ignored), label = index of the sorted folder
  present, name looked up by wnid in the variant's ``classnames.txt``; A and R hold 200 of the 1000 classes
  (``ClassificationData.wnids`` maps each class to its ImageNet class).

Images inside a class folder are listed in sorted order (CoOp lists them in file-system order, which differs between
machines and would make the few-shot subsets depend on it)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from .folder import SPLITS, SplitItem, classnames_of, read_split, read_split_file


@dataclass(frozen=True)
class DatasetSpec:
    key: str              # CoOp's config stem (the ``dataset`` config value and the results' ``dataset``)
    name: str             # CoOp's DATASET.NAME
    folder: str           # under the data root
    image_dir: str        # image root under the folder ("" = the folder itself)
    template: str         # CoOp's zero-shot template
    kind: str             # split | fgvc | imagenet | imagenetv2 | variant
    split_file: str = ""  # split JSON (kind "split")
    classes: int = 0      # classes of the full dataset (for the error messages and the layout description)


PHOTO = "a photo of a {}."
SPECS: Dict[str, DatasetSpec] = {s.key: s for s in [
    DatasetSpec("imagenet", "ImageNet", "imagenet", "images", PHOTO, "imagenet", classes=1000),
    DatasetSpec("caltech101", "Caltech101", "caltech-101", "101_ObjectCategories", PHOTO, "split",
                "split_zhou_Caltech101.json", 100),
    DatasetSpec("oxford_pets", "OxfordPets", "oxford_pets", "images", "a photo of a {}, a type of pet.", "split",
                "split_zhou_OxfordPets.json", 37),
    DatasetSpec("stanford_cars", "StanfordCars", "stanford_cars", "", PHOTO, "split",
                "split_zhou_StanfordCars.json", 196),
    DatasetSpec("oxford_flowers", "OxfordFlowers", "oxford_flowers", "jpg", "a photo of a {}, a type of flower.",
                "split", "split_zhou_OxfordFlowers.json", 102),
    DatasetSpec("food101", "Food101", "food-101", "images", "a photo of {}, a type of food.", "split",
                "split_zhou_Food101.json", 101),
    DatasetSpec("fgvc_aircraft", "FGVCAircraft", "fgvc_aircraft", "images", "a photo of a {}, a type of aircraft.",
                "fgvc", classes=100),
    DatasetSpec("sun397", "SUN397", "sun397", "SUN397", PHOTO, "split", "split_zhou_SUN397.json", 397),
    DatasetSpec("dtd", "DescribableTextures", "dtd", "images", "{} texture.", "split",
                "split_zhou_DescribableTextures.json", 47),
    DatasetSpec("eurosat", "EuroSAT", "eurosat", "2750", "a centered satellite photo of {}.", "split",
                "split_zhou_EuroSAT.json", 10),
    DatasetSpec("ucf101", "UCF101", "ucf101", "UCF-101-midframes", "a photo of a person doing {}.", "split",
                "split_zhou_UCF101.json", 101),
    DatasetSpec("imagenetv2", "ImageNetV2", "imagenetv2", "imagenetv2-matched-frequency-format-val", PHOTO,
                "imagenetv2", classes=1000),
    DatasetSpec("imagenet_sketch", "ImageNetSketch", "imagenet-sketch", "images", PHOTO, "variant", classes=1000),
    DatasetSpec("imagenet_a", "ImageNetA", "imagenet-adversarial", "imagenet-a", PHOTO, "variant", classes=200),
    DatasetSpec("imagenet_r", "ImageNetR", "imagenet-rendition", "imagenet-r", PHOTO, "variant", classes=200),
]}
FOLDER = "folder"
ELEVEN = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101", "fgvc_aircraft",
          "sun397", "dtd", "eurosat", "ucf101")
VARIANTS = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")
DATASETS = (FOLDER,) + tuple(SPECS)
IGNORED = ("README.txt",)  # CoOp's imagenet_a.py / imagenet_r.py


class DatasetLayoutError(FileNotFoundError):
    """A dataset file or folder is missing or malformed (the message names it and the expected layout)."""


def expected_layout(spec: DatasetSpec) -> str:
    root = f"{spec.folder}/{spec.image_dir + '/' if spec.image_dir else ''}"
    if spec.kind == "split":
        return (f"{spec.folder}/{spec.split_file} (CoOp's split file: train/val/test lists of [path under {root}, "
                f"label, classname]; see KaiyangZhou/CoOp DATASETS.md) and the images under {root}")
    if spec.kind == "fgvc":
        return (f"{spec.folder}/variants.txt, {spec.folder}/images_variant_{{train,val,test}}.txt "
                f"('<image id> <variant>' per line) and {root}<image id>.jpg")
    if spec.kind == "imagenet":
        return (f"{spec.folder}/classnames.txt ('<wnid> <class name>' per line) and {root}train/<wnid>/, "
                f"{root}val/<wnid>/ (1000 wnid folders each)")
    if spec.kind == "imagenetv2":
        return f"{spec.folder}/classnames.txt (ImageNet's) and {root}<k>/ for k = 0..999 (class k of classnames.txt)"
    return f"{spec.folder}/classnames.txt (ImageNet's) and {root}<wnid>/ ({spec.classes} wnid folders)"


def _need(path: str, spec: DatasetSpec, is_dir: bool = False) -> str:
    if not (os.path.isdir(path) if is_dir else os.path.isfile(path)):
        raise DatasetLayoutError(f"{spec.name}: {'folder' if is_dir else 'file'} {path!r} not found; expected "
                                 f"CoOp's layout under the data root: {expected_layout(spec)}")
    return path


def _listdir(path: str) -> List[str]:
    """Entries without hidden files, sorted (CoOp's ``listdir_nohidden``, sorted for reproducibility)."""
    return sorted(f for f in os.listdir(path) if not f.startswith("."))


def _subfolders(path: str) -> List[str]:
    return sorted(f.name for f in os.scandir(path) if f.is_dir() and not f.name.startswith("."))


def read_classnames(path: str, spec: DatasetSpec) -> Dict[str, str]:
    """``classnames.txt``: ``<wnid> <class name with spaces>`` per line, in file order (CoOp's
    ``ImageNet.read_classnames``)."""
    names: Dict[str, str] = {}
    with open(_need(path, spec)) as f:
        for i, line in enumerate(f):
            parts = line.strip().split(" ")
            if not line.strip():
                continue
            if len(parts) < 2:
                raise DatasetLayoutError(f"{path!r} line {i + 1} = {line.strip()!r}: expected '<wnid> <class name>'")
            if parts[0] in names:
                raise DatasetLayoutError(f"{path!r} line {i + 1}: wnid {parts[0]!r} appears twice")
            names[parts[0]] = " ".join(parts[1:])
    return names


class ClassificationData:
    """One dataset: its splits (read on first use), class names ordered by label, CoOp's template, and for the
    ImageNet family the wnid of every class. ``test_only`` datasets (the variants) are evaluation targets."""

    def __init__(self, key: str, name: str, template: str, dataset_dir: str, image_root: str,
                 loaders: Dict[str, Callable[[], List[SplitItem]]], classnames: Optional[List[str]] = None,
                 wnids: Optional[List[str]] = None, test_only: bool = False, fewshot_val: bool = True):
        self.key, self.name, self.template = key, name, template
        self.dataset_dir, self.image_root = dataset_dir, image_root
        self._loaders, self._splits = loaders, {}
        self._classnames, self.wnids = classnames, wnids
        self.test_only, self.fewshot_val = test_only, fewshot_val

    def split(self, name: str) -> List[SplitItem]:
        if name not in SPLITS:
            raise ValueError(f"split {name!r}: expected one of {SPLITS}")
        if name not in self._splits:
            self._splits[name] = list(self._loaders[name]())
        return self._splits[name]

    @property
    def classnames(self) -> List[str]:
        """Ordered by label: from the dataset's class list, else (split files) from the train split as Dassl does."""
        if self._classnames is None:
            self._classnames = classnames_of(self.split("test" if self.test_only else "train"))
        return self._classnames

    def splits(self) -> Dict[str, List[SplitItem]]:
        return {name: self.split(name) for name in SPLITS}


def _split_dataset(spec: DatasetSpec, d: str) -> ClassificationData:
    path = _need(os.path.join(d, spec.split_file), spec)
    image_root = os.path.join(d, spec.image_dir) if spec.image_dir else d
    _need(image_root, spec, is_dir=True)
    return ClassificationData(spec.key, spec.name, spec.template, d, image_root,
                              _lazy_splits(lambda: read_split_file(path, image_root)))


def _lazy_splits(read: Callable[[], Dict[str, List[SplitItem]]]) -> Dict[str, Callable[[], List[SplitItem]]]:
    """One loader per split over a single ``read()`` of the whole split file, done on first use."""
    cache: Dict[str, Dict[str, List[SplitItem]]] = {}

    def loader(name):
        def load():
            if "all" not in cache:
                cache["all"] = read()
            return cache["all"][name]
        return load

    return {s: loader(s) for s in SPLITS}


def _fgvc(spec: DatasetSpec, d: str) -> ClassificationData:
    image_root = _need(os.path.join(d, spec.image_dir), spec, is_dir=True)
    with open(_need(os.path.join(d, "variants.txt"), spec)) as f:
        classnames = [line.strip() for line in f if line.strip()]
    label_of = {c: i for i, c in enumerate(classnames)}

    def loader(name):
        path = os.path.join(d, f"images_variant_{name}.txt")

        def load():
            items = []
            with open(_need(path, spec)) as f:
                for i, line in enumerate(f):
                    parts = line.strip().split(" ")
                    if not line.strip():
                        continue
                    variant = " ".join(parts[1:])
                    if variant not in label_of:
                        raise DatasetLayoutError(f"{path!r} line {i + 1}: variant {variant!r} is not in "
                                                 f"{os.path.join(d, 'variants.txt')!r}")
                    items.append(SplitItem(os.path.join(image_root, parts[0] + ".jpg"), label_of[variant], variant))
            return items
        return load

    return ClassificationData(spec.key, spec.name, spec.template, d, image_root, {s: loader(s) for s in SPLITS},
                              classnames=classnames)


def _imagenet(spec: DatasetSpec, d: str) -> ClassificationData:
    names = read_classnames(os.path.join(d, "classnames.txt"), spec)
    image_root = _need(os.path.join(d, spec.image_dir), spec, is_dir=True)
    folders = {}
    for part in ("train", "val"):
        folders[part] = _subfolders(_need(os.path.join(image_root, part), spec, is_dir=True))
        unknown = [w for w in folders[part] if w not in names]
        if unknown:
            raise DatasetLayoutError(f"{spec.name}: folders {unknown[:5]} of {os.path.join(image_root, part)!r} "
                                     f"are not in {os.path.join(d, 'classnames.txt')!r}")
    if folders["train"] != folders["val"]:
        raise DatasetLayoutError(f"{spec.name}: {os.path.join(image_root, 'train')!r} and "
                                 f"{os.path.join(image_root, 'val')!r} hold different wnid folders "
                                 f"({len(folders['train'])} vs {len(folders['val'])}); labels would disagree")
    wnids = folders["val"]

    def read(part):
        def load():
            items = []
            for label, wnid in enumerate(wnids):
                folder = os.path.join(image_root, part, wnid)
                items += [SplitItem(os.path.join(folder, f), label, names[wnid]) for f in _listdir(folder)]
            return items
        return load

    return ClassificationData(spec.key, spec.name, spec.template, d, image_root,
                              {"train": read("train"), "val": read("val"), "test": read("val")},
                              classnames=[names[w] for w in wnids], wnids=wnids, fewshot_val=False)


def _imagenetv2(spec: DatasetSpec, d: str) -> ClassificationData:
    names = read_classnames(os.path.join(d, "classnames.txt"), spec)
    image_root = _need(os.path.join(d, spec.image_dir), spec, is_dir=True)
    wnids = list(names)

    def load():
        items = []
        for label, wnid in enumerate(wnids):
            folder = _need(os.path.join(image_root, str(label)), spec, is_dir=True)
            items += [SplitItem(os.path.join(folder, f), label, names[wnid]) for f in _listdir(folder)]
        return items

    return ClassificationData(spec.key, spec.name, spec.template, d, image_root,
                              {"train": list, "val": list, "test": load}, classnames=[names[w] for w in wnids],
                              wnids=wnids, test_only=True)


def _variant(spec: DatasetSpec, d: str) -> ClassificationData:
    names = read_classnames(os.path.join(d, "classnames.txt"), spec)
    image_root = _need(os.path.join(d, spec.image_dir), spec, is_dir=True)
    wnids = [f for f in _subfolders(image_root) if f not in IGNORED]
    unknown = [w for w in wnids if w not in names]
    if unknown:
        raise DatasetLayoutError(f"{spec.name}: folders {unknown[:5]} of {image_root!r} are not in "
                                 f"{os.path.join(d, 'classnames.txt')!r}")
    if not wnids:
        raise DatasetLayoutError(f"{spec.name}: no class folder in {image_root!r}; expected {expected_layout(spec)}")

    def load():
        items = []
        for label, wnid in enumerate(wnids):
            folder = os.path.join(image_root, wnid)
            items += [SplitItem(os.path.join(folder, f), label, names[wnid]) for f in _listdir(folder)]
        return items

    return ClassificationData(spec.key, spec.name, spec.template, d, image_root,
                              {"train": list, "val": list, "test": load}, classnames=[names[w] for w in wnids],
                              wnids=wnids, test_only=True)


READERS = {"split": _split_dataset, "fgvc": _fgvc, "imagenet": _imagenet, "imagenetv2": _imagenetv2,
           "variant": _variant}


def load_dataset(key: str, data_root: str, image_dir: str = "images") -> ClassificationData:
    """The dataset ``key`` under ``data_root``: for a CoOp dataset the root holding its folder (CoOp's ``$DATA``);
    for ``folder`` the dataset folder itself (one ``split_zhou_*.json`` and ``image_dir``; template
    "a photo of a {}.", ``dataset`` = the folder's name)."""
    if key == FOLDER:
        if not os.path.isdir(data_root):
            raise DatasetLayoutError(f"folder dataset {data_root!r} not found; expected a folder with one "
                                     f"split_zhou_*.json and {image_dir}/")
        root = os.path.normpath(data_root)
        return ClassificationData(os.path.basename(root), "folder", PHOTO, root, os.path.join(root, image_dir),
                                  _lazy_splits(lambda: read_split(data_root, image_dir)))
    if key not in SPECS:
        raise ValueError(f"dataset={key!r}: expected one of {DATASETS}")
    spec = SPECS[key]
    return READERS[spec.kind](spec, _need(os.path.join(data_root, spec.folder), spec, is_dir=True))
