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

import os

from shared_apt.vl.data.writers.common import KarpathyWriter

SPLITS = ("train", "val", "test")
PREFIX = "f30k_caption_karpathy"
ANNOTATION_FILE = os.path.join("karpathy", "dataset_flickr30k.json")
IMAGE_FOLDERS = ("flickr30k-images",)


_WRITER = KarpathyWriter(PREFIX, SPLITS, ANNOTATION_FILE, IMAGE_FOLDERS, "Flickr30K Karpathy splits")
make_arrow = _WRITER.make_arrow
main = _WRITER.main

if __name__ == "__main__":
    raise SystemExit(main())
