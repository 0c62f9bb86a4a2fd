"""Flickr30K Karpathy splits -> ``f30k_caption_karpathy_<split>.arrow``
(re-implements upstream ViLT ``vilt/utils/write_f30k_karpathy.py``).

Raw layout under `root`: ``karpathy/dataset_flickr30k.json`` (Karpathy's split file: ``images[*]`` with
``filename``, ``split`` in train/val/test and ``sentences[*].raw``) and ``flickr30k-images/*.jpg``.

Output: ``f30k_caption_karpathy_{train,val,test}.arrow`` with columns image (JPEG bytes), caption (the raw
sentences), image_id (file name, e.g. "1000092795.jpg"), split. One row per image, in a seeded shuffle (upstream:
unseeded) of the annotated images; an annotated image missing from the folder is an error unless
``allow_missing_images`` (upstream skipped it silently).
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

SPLITS = ("train", "val", "test")
PREFIX = "f30k_caption_karpathy"
ANNOTATION_FILE = os.path.join("karpathy", "dataset_flickr30k.json")
IMAGE_FOLDERS = ("flickr30k-images",)


def make_arrow(
    root: str,
    dataset_root: str,
    seed: Optional[int] = 0,
    allow_missing_images: bool = False,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    show_progress: bool = True,
) -> Dict[str, int]:
    """Write the three F30K Karpathy caption tables; return the row count per split."""
    return make_karpathy_arrow(
        os.path.join(root, ANNOTATION_FILE),
        [os.path.join(root, folder) for folder in IMAGE_FOLDERS],
        dataset_root, PREFIX, SPLITS, seed, allow_missing_images, batch_rows, batch_bytes, show_progress,
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI: ``python -m shared_apt.data.writers.f30k_karpathy ROOT DATASET_ROOT [--seed 0]``."""
    parser = argparse.ArgumentParser(description="Flickr30K Karpathy splits -> f30k_caption_karpathy_<split>.arrow")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    return run_cli(lambda: print(make_arrow(
        args.root, args.dataset_root, seed=args.seed, allow_missing_images=args.allow_missing_images,
        batch_rows=args.batch_rows, show_progress=not args.no_progress,
    )))


if __name__ == "__main__":
    raise SystemExit(main())
