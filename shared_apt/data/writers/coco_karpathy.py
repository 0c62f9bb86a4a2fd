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

import argparse
import os
from typing import Dict, Optional, Sequence

from shared_apt.data.writers.common import (
    DEFAULT_BATCH_BYTES,
    DEFAULT_BATCH_ROWS,
    add_common_arguments,
    make_karpathy_arrow,
    run_cli,
)

SPLITS = ("train", "val", "restval", "test")
PREFIX = "coco_caption_karpathy"
ANNOTATION_FILE = os.path.join("karpathy", "dataset_coco.json")
IMAGE_FOLDERS = ("train2014", "val2014")


def make_arrow(
    root: str,
    dataset_root: str,
    seed: Optional[int] = 0,
    allow_missing_images: bool = False,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    show_progress: bool = True,
) -> Dict[str, int]:
    """Write the four COCO Karpathy caption tables; return the row count per split."""
    return make_karpathy_arrow(
        os.path.join(root, ANNOTATION_FILE),
        [os.path.join(root, folder) for folder in IMAGE_FOLDERS],
        dataset_root, PREFIX, SPLITS, seed, allow_missing_images, batch_rows, batch_bytes, show_progress,
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI: ``python -m shared_apt.data.writers.coco_karpathy ROOT DATASET_ROOT [--seed 0]``."""
    parser = argparse.ArgumentParser(description="COCO Karpathy splits -> coco_caption_karpathy_<split>.arrow")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    return run_cli(lambda: print(make_arrow(
        args.root, args.dataset_root, seed=args.seed, allow_missing_images=args.allow_missing_images,
        batch_rows=args.batch_rows, show_progress=not args.no_progress,
    )))


if __name__ == "__main__":
    raise SystemExit(main())
