"""Lightning data modules of upstream ViLT / METER (vilt/datamodules, docs/backbones.md, ViLT).

* :class:`BaseDataModule` builds the train / val / test datasets of ONE dataset key ("vqa", "nlvr2", "f30k", "coco",
  "vg", "sbu", "gcc", "nlvr1") from upstream's config keys; :class:`VQAv2DataModule` adds the answer maps
  (``answer2id``, ``id2answer``, ``num_class``) for VQA-schema keys.
* :class:`MTDataModule` concatenates the datasets of every key in ``config["datasets"]`` and uses the first module's
  collate and MLM collator, as upstream.

Config keys read (upstream ViLT names, docs/backbones.md, ViLT): data_root, num_workers, per_gpu_batchsize, image_size,
max_text_len, draw_false_image, draw_false_text, image_only, tokenizer, whole_word_masking, mlm_prob,
train_transform_keys, val_transform_keys, datasets. Extensions (all optional):

* ``dataset_class_overrides``: {key: class or "module:Class" / "module.Class"} replacing the registry entry (METER
  uses it for its own VQA splits, or any subclass with other ``split_names``);
* ``dataset_split_names``: {key: {split: [table names]}} overriding the tables of a split (e.g. NLVR1 files
  ``nlvr1_test_train`` / ``nlvr1_test_val`` written by the NLVR1 writer);
* ``max_bad_image_fraction`` (default 0.01), applied by ``shared_apt.vl.data.bad_images.BadImageAccounting`` (a callback
  of the trainer) to the samples of all workers and processes;
* ``seed``: seed of the training DistributedSampler's shuffle (default 0).

Samplers: training shuffles (``DistributedSampler(shuffle=True)`` under DDP; Lightning calls its ``set_epoch``);
validation and test read every sample exactly once over all processes (:class:`UnpaddedDistributedSampler`, rank r
gets indices r, r + W, ...), so corpus metrics equal the one-process run (upstream padded with repeated samples and
shuffled validation). Both are ``DistributedSampler`` subclasses, so Lightning 2 keeps them; upstream's
``replace_sampler_ddp=False`` is ``Trainer(use_distributed_sampler=False)``, which is also safe. Ranks may get one
batch fewer than others: do not use per-step ``sync_dist`` logging in validation; the metrics in
``shared_apt.vl.data.metrics`` synchronise once at ``compute``.
"""
from __future__ import annotations

import functools
import importlib
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence

import pytorch_lightning as pl
import torch.distributed as dist
from torch.utils.data import ConcatDataset, DataLoader, DistributedSampler

from .arrow import ArrowFileError
from .datasets import DATASETS, BaseDataset, VQAv2Dataset
from .text import get_mlm_collator, get_tokenizer
from .vqa import id2answer_from_tables

DEFAULTS: Dict[str, Any] = {
    "num_workers": 8,
    "image_size": 384,
    "max_text_len": 40,
    "draw_false_image": 1,
    "draw_false_text": 0,
    "image_only": False,
    "tokenizer": "bert-base-uncased",
    "whole_word_masking": False,
    "mlm_prob": 0.15,
    "train_transform_keys": ["pixelbert"],
    "val_transform_keys": ["pixelbert"],
    "max_bad_image_fraction": 0.01,
    "dataset_class_overrides": {},
    "dataset_split_names": {},
    "seed": 0,
}
REQUIRED = ("data_root", "per_gpu_batchsize")


class DataConfigError(ValueError):
    """A data config key is missing or has an invalid value."""


class UnpaddedDistributedSampler(DistributedSampler):
    """Rank r of W gets indices r, r + W, r + 2W, ... in order: every index exactly once over all ranks, no padding
    duplicates (ranks may differ by one sample)."""

    def __init__(self, dataset, num_replicas: Optional[int] = None, rank: Optional[int] = None):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.num_samples = len(range(self.rank, len(self.dataset), self.num_replicas))
        self.total_size = len(self.dataset)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


def resolve_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """Upstream config values with defaults for the optional keys; clear errors for missing / invalid ones."""
    missing = [k for k in REQUIRED if k not in config]
    if missing:
        raise DataConfigError(f"data config lacks key(s) {missing} (ViLT/METER config names)")
    cfg = {**DEFAULTS, **dict(config)}
    if not isinstance(cfg["per_gpu_batchsize"], int) or cfg["per_gpu_batchsize"] <= 0:
        raise DataConfigError(f"per_gpu_batchsize={cfg['per_gpu_batchsize']!r}: expected a positive integer "
                              "(upstream's default 0 must be overridden)")
    for key in ("train_transform_keys", "val_transform_keys"):
        if isinstance(cfg[key], str) or not cfg[key]:
            raise DataConfigError(f"{key}={cfg[key]!r}: expected a non-empty list of transform names")
    return cfg


def _import_class(spec):
    if not isinstance(spec, str):
        return spec
    module, _, name = spec.rpartition(":") if ":" in spec else spec.rpartition(".")
    if not module:
        raise DataConfigError(f"dataset class {spec!r}: expected 'package.module:Class' or 'package.module.Class'")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise DataConfigError(f"dataset class {spec!r} cannot be imported: {e}") from e


def dataset_class_for(key: str, config: Mapping[str, Any]):
    overrides = config.get("dataset_class_overrides") or {}
    if key in overrides:
        cls = _import_class(overrides[key])
    elif key in DATASETS:
        cls = DATASETS[key]
    else:
        raise DataConfigError(f"unknown dataset key {key!r} in config 'datasets'; known: {sorted(DATASETS)} "
                              f"(or add it to dataset_class_overrides)")
    if not (isinstance(cls, type) and issubclass(cls, BaseDataset)):
        raise DataConfigError(f"dataset class for {key!r} is {cls!r}, expected a BaseDataset subclass")
    return cls


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


class BaseDataModule(pl.LightningDataModule):
    """Datasets of one dataset key (upstream's per-dataset DataModule classes in one)."""

    def __init__(self, config: Mapping[str, Any], key: str, tokenizer=None, dataset_cls=None):
        super().__init__()
        cfg = resolve_config(config)
        self.config = cfg
        self.key = key
        self.dataset_cls = dataset_cls or dataset_class_for(key, cfg)
        self.dataset_cls_no_false = self.dataset_cls
        self.data_dir = cfg["data_root"]
        self.num_workers = cfg["num_workers"]
        self.batch_size = cfg["per_gpu_batchsize"]
        self.eval_batch_size = self.batch_size
        self.image_size = cfg["image_size"]
        self.max_text_len = cfg["max_text_len"]
        self.draw_false_image = cfg["draw_false_image"]
        self.draw_false_text = cfg["draw_false_text"]
        self.image_only = cfg["image_only"]
        self.train_transform_keys = list(cfg["train_transform_keys"])
        self.val_transform_keys = list(cfg["val_transform_keys"])
        self.split_names = (cfg.get("dataset_split_names") or {}).get(key, {})
        self.tokenizer = tokenizer if tokenizer is not None else get_tokenizer(cfg["tokenizer"])
        self.vocab_size = self.tokenizer.vocab_size
        self.mlm_collator = get_mlm_collator(self.tokenizer, cfg["whole_word_masking"], cfg["mlm_prob"])
        self.setup_flag = False

    # -------------------------------------------------------------------------------------------------------------
    def make_dataset(self, split: str, transform_keys: Sequence[str], draw_false_image: int, draw_false_text: int,
                     image_only: bool, cls=None, **extra) -> BaseDataset:
        cls = cls or self.dataset_cls
        kwargs = dict(split=split, image_size=self.image_size, max_text_len=self.max_text_len,
                      draw_false_image=draw_false_image, draw_false_text=draw_false_text, image_only=image_only,
                      tokenizer=self.tokenizer, **extra)
        if split in self.split_names:
            kwargs["names"] = list(self.split_names[split])
        return cls(self.data_dir, transform_keys, **kwargs)

    def set_train_dataset(self) -> None:
        self.train_dataset = self.make_dataset("train", self.train_transform_keys, self.draw_false_image,
                                               self.draw_false_text, self.image_only)

    def set_val_dataset(self) -> None:
        self.val_dataset = self.make_dataset("val", self.val_transform_keys, self.draw_false_image,
                                             self.draw_false_text, self.image_only)

    def set_test_dataset(self) -> None:
        self.test_dataset = self.make_dataset("test", self.val_transform_keys, self.draw_false_image,
                                              self.draw_false_text, self.image_only)

    def make_no_false_val_dset(self, image_only: bool = False, text_only: bool = False) -> BaseDataset:
        """The validation split with no negatives (retrieval evaluation); `text_only` skips image decoding."""
        return self.make_dataset("val", self.val_transform_keys, 0, 0, image_only, cls=self.dataset_cls_no_false,
                                 text_only=text_only)

    def setup(self, stage: Optional[str] = None) -> None:
        if not self.setup_flag:
            self.set_train_dataset()
            self.set_val_dataset()
            self.set_test_dataset()
            self.setup_flag = True

    @property
    def collate(self):
        return functools.partial(self.train_dataset.collate, mlm_collator=self.mlm_collator)

    def _loader(self, dataset, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          collate_fn=self.collate)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, False)


class VQAv2DataModule(BaseDataModule):
    """Upstream ``VQAv2DataModule``: after setup, answer2id from the train + val tables' (answers, answer_labels),
    ``num_class`` = max id + 1, ``id2answer`` answering "unknown" for ids never seen."""

    def setup(self, stage: Optional[str] = None) -> None:
        first = not self.setup_flag
        super().setup(stage)
        if first:
            answers, labels = [], []
            for ds in (self.train_dataset, self.val_dataset):
                if ds.table is not None:
                    answers += ds.table["answers"].to_pylist()
                    labels += ds.table["answer_labels"].to_pylist()
            self.check_label_table()
            self.answer2id, self.id2answer = id2answer_from_tables(answers, labels)
            self.num_class = max(self.answer2id.values()) + 1 if self.answer2id else 0

    def check_label_table(self) -> None:
        """Every file of every split maps each answer to one label, the same in all files, and (when the config
        sets ``vqav2_label_size``, the classifier width) every label is below that size; ArrowFileError naming the
        file otherwise."""
        size = self.config.get("vqav2_label_size")
        seen: Dict[str, Any] = {}
        for ds in (self.train_dataset, self.val_dataset, self.test_dataset):
            if ds.table is None:
                continue
            for path, start, stop in zip(ds.table_paths, ds.table_offsets, ds.table_offsets[1:]):
                part = ds.table.slice(start, stop - start)
                for row_answers, row_labels in zip(part["answers"].to_pylist(), part["answer_labels"].to_pylist()):
                    for q_answers, q_labels in zip(row_answers, row_labels):
                        for answer, label in zip(q_answers or [], q_labels or []):
                            if size is not None and not 0 <= label < int(size):
                                raise ArrowFileError(f"arrow file {path!r}: answer {answer!r} has label {label}, "
                                                     f"outside the label table [0, vqav2_label_size={size})")
                            known = seen.setdefault(answer, (label, path))
                            if known[0] != label:
                                raise ArrowFileError(f"arrow file {path!r}: answer {answer!r} has label {label}, "
                                                     f"but label {known[0]} in {known[1]!r}")


def make_datamodule(config: Mapping[str, Any], key: str, tokenizer=None) -> BaseDataModule:
    cls = dataset_class_for(key, resolve_config(config))
    dm_cls = VQAv2DataModule if issubclass(cls, VQAv2Dataset) else BaseDataModule
    return dm_cls(config, key, tokenizer=tokenizer, dataset_cls=cls)


class MTDataModule(pl.LightningDataModule):
    """Upstream ``MTDataModule(config, dist)``: the datasets of every key concatenated; collate and MLM collator of
    the first key. With ``dist=True`` and an initialised process group the distributed samplers are used."""

    def __init__(self, config: Mapping[str, Any], dist: bool = False, tokenizer=None):
        super().__init__()
        cfg = resolve_config(config)
        keys = cfg.get("datasets")
        if isinstance(keys, str) or not keys:
            raise DataConfigError(f"datasets={keys!r}: expected a non-empty list of dataset keys, "
                                  f"known: {sorted(DATASETS)}")
        self.config = cfg
        self.dm_keys = list(keys)
        self.tokenizer = tokenizer if tokenizer is not None else get_tokenizer(cfg["tokenizer"])
        self.dm_dicts = {k: make_datamodule(cfg, k, tokenizer=self.tokenizer) for k in self.dm_keys}
        self.dms = [self.dm_dicts[k] for k in self.dm_keys]
        self.batch_size = self.dms[0].batch_size
        self.vocab_size = self.dms[0].vocab_size
        self.num_workers = self.dms[0].num_workers
        self.mlm_collator = self.dms[0].mlm_collator
        self.dist = dist
        self.setup_flag = False

    def prepare_data(self) -> None:
        for dm in self.dms:
            dm.prepare_data()

    def setup(self, stage: Optional[str] = None) -> None:
        if self.setup_flag:
            return
        for dm in self.dms:
            dm.setup(stage)
        self.train_dataset = ConcatDataset([dm.train_dataset for dm in self.dms])
        self.val_dataset = ConcatDataset([dm.val_dataset for dm in self.dms])
        self.test_dataset = ConcatDataset([dm.test_dataset for dm in self.dms])
        self.collate = functools.partial(self.dms[0].train_dataset.collate, mlm_collator=self.mlm_collator)
        if self.dist and _distributed():
            self.train_sampler = DistributedSampler(self.train_dataset, shuffle=True, seed=int(self.config["seed"]))
            self.val_sampler = UnpaddedDistributedSampler(self.val_dataset)
            self.test_sampler = UnpaddedDistributedSampler(self.test_dataset)
        else:
            self.train_sampler = None
            self.val_sampler = None
            self.test_sampler = None
        self.setup_flag = True

    def make_no_false_val_dset(self, image_only: bool = False, text_only: bool = False) -> BaseDataset:
        return self.dms[0].make_no_false_val_dset(image_only=image_only, text_only=text_only)

    def _loader(self, dataset, sampler, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler,
                          shuffle=shuffle if sampler is None else False, num_workers=self.num_workers,
                          collate_fn=self.collate)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, self.train_sampler, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, self.val_sampler, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, self.test_sampler, False)
