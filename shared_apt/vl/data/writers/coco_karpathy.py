"""COCO Karpathy splits -> ``coco_caption_karpathy_<split>.arrow``
(re-implements upstream ViLT ``vilt/utils/write_coco_karpathy.py``).

Raw layout under `root`: ``karpathy/dataset_coco.json`` (Karpathy's split file: ``images[*]`` with ``filename``,
``split`` in train/val/restval/test and ``sentences[*].raw``) and the COCO folders ``train2014/*.jpg`` and
``val2014/*.jpg`` (images are looked up by file name in both, as upstream's glob of the two folders).

Output: ``coco_caption_karpathy_{train,val,restval,test}.arrow`` with columns image (JPEG bytes), caption,
image_id (file name, e.g. "COCO_val2014_000000391895.jpg"), split. One row per image, seeded shuffle (upstream:
unseeded); an annotated image missing from both folders is an error unless ``allow_missing_images``.
"""
from __future__ import annotations

import os

from shared_apt.vl.data.writers.common import KarpathyWriter

SPLITS = ("train", "val", "restval", "test")
PREFIX = "coco_caption_karpathy"
ANNOTATION_FILE = os.path.join("karpathy", "dataset_coco.json")
IMAGE_FOLDERS = ("train2014", "val2014")


_WRITER = KarpathyWriter(PREFIX, SPLITS, ANNOTATION_FILE, IMAGE_FOLDERS, "COCO Karpathy splits")
make_arrow = _WRITER.make_arrow
main = _WRITER.main

if __name__ == "__main__":
    raise SystemExit(main())
