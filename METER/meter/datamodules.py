"""METER's data wiring over the shared data library (shared_apt.vl.data; docs/backbones.md, METER): no dataset, transform or metric
code of its own.

* transforms: the config's ``train_transform_keys`` / ``val_transform_keys`` (``clip`` / ``clip_randaug``) come
  from ``shared_apt.vl.data.transforms``; with a key containing "clip" the shared datasets decode images as RGBA, as
  METER does, and the transform drops alpha;
* split tables: METER's differ from ViLT's only for VQA (train = vqav2_train + the whole vqav2_val, val =
  vqav2_val) and for GCC (no validation shard); :data:`METER_SPLIT_NAMES` is the default of the config key
  ``dataset_split_names`` and is merged under whatever a config gives (a key given there wins);
* tokenizer: the ``tokenizer`` config key (a local folder or a name in the local Hugging Face cache; nothing is
  downloaded), checked against the text encoder the model builds from the same config
  (:func:`meter.modules.meter_module.check_tokenizer`).
"""
from __future__ import annotations

import copy
from typing import Any, Dict, Mapping

from shared_apt.vl.data.datamodules import MTDataModule

from .config import METER_VQA_SPLITS
from .modules.meter_module import check_tokenizer

METER_SPLIT_NAMES: Dict[str, Dict[str, list]] = {
    "vqa": copy.deepcopy(METER_VQA_SPLITS),
    "gcc": {"val": [], "test": []},  # METER's pre-training reads the 31 training shards only
}


def meter_data_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """``config`` with METER's split tables filled in for every dataset key the config does not set itself."""
    cfg = dict(config)
    given = dict(cfg.get("dataset_split_names") or {})
    cfg["dataset_split_names"] = {**copy.deepcopy(METER_SPLIT_NAMES), **given}
    return cfg


def make_meter_datamodule(config: Mapping[str, Any], dist: bool = True) -> MTDataModule:
    """Upstream ``MTDataModule(_config, dist=True)`` with METER's split tables; raises ValueError when the
    tokenizer does not fit the text encoder of ``config``."""
    cfg = meter_data_config(config)
    dm = MTDataModule(cfg, dist=dist)
    check_tokenizer(cfg, dm.tokenizer)
    return dm
