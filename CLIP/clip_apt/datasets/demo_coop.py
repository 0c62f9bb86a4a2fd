"""The CLIP demo world rewritten in CoOp's ImageNet layouts, so that the cross-dataset / domain-generalisation scripts
run on the demo: ``imagenet/`` (world train -> ``images/train``, world test -> ``images/val``, ``classnames.txt`` with
made-up wnids ``n0000000<k>`` in label order) and the four variants built from the world's val images:
``imagenetv2/`` (folders ``0..11``), ``imagenet-sketch/`` (all 12 wnids) and ``imagenet-adversarial/`` /
``imagenet-rendition/`` with class subsets (6 and 8 of the 12 classes, plus the ``README.txt`` the real ones ship),
each with its ``classnames.txt``. A demo only: the variants are the same kind of images as the source."""
from __future__ import annotations

import os
import shutil
from typing import Dict, List

from .folder import read_split

SUBSET_A = (0, 2, 4, 6, 8, 10)       # labels of the 12 demo classes kept by the "ImageNet-A" copy
SUBSET_R = (1, 2, 3, 5, 7, 9, 10, 11)  # ... and by the "ImageNet-R" copy


def wnid(label: int) -> str:
    return f"n{label:08d}"


def make_coop_root(world: str, out: str) -> str:
    """Write the layouts into ``out`` once (skipped when complete) and return ``out`` (CoOp's ``$DATA``). The folder
    is built under a temporary name and renamed, so scripts started together never read a half-written copy."""
    if os.path.isfile(os.path.join(out, ".complete")):
        return out
    if os.path.isdir(out):  # an interrupted build of an older version: start again
        shutil.rmtree(out)
    final, out = out, f"{out}.tmp-{os.getpid()}"
    if os.path.isdir(out):
        shutil.rmtree(out)
    splits = read_split(world)
    names: Dict[int, str] = {it.label: it.classname for it in splits["train"]}
    labels = sorted(names)
    lines = "".join(f"{wnid(y)} {names[y]}\n" for y in labels)

    def copy(items, folder_of, root):
        for it in items:
            dest = os.path.join(root, folder_of(it.label))
            os.makedirs(dest, exist_ok=True)
            shutil.copyfile(it.impath, os.path.join(dest, os.path.basename(it.impath)))

    def classnames(folder):
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "classnames.txt"), "w") as f:
            f.write(lines)

    inet = os.path.join(out, "imagenet")
    classnames(inet)
    copy(splits["train"], wnid, os.path.join(inet, "images", "train"))
    copy(splits["test"], wnid, os.path.join(inet, "images", "val"))
    val: List = splits["val"]
    classnames(os.path.join(out, "imagenetv2"))
    copy(val, str, os.path.join(out, "imagenetv2", "imagenetv2-matched-frequency-format-val"))
    classnames(os.path.join(out, "imagenet-sketch"))
    copy(val, wnid, os.path.join(out, "imagenet-sketch", "images"))
    for folder, sub, subset in (("imagenet-adversarial", "imagenet-a", SUBSET_A),
                                ("imagenet-rendition", "imagenet-r", SUBSET_R)):
        classnames(os.path.join(out, folder))
        root = os.path.join(out, folder, sub)
        copy([it for it in val if it.label in subset], wnid, root)
        with open(os.path.join(root, "README.txt"), "w") as f:
            f.write("demo copy of the shapes world (a class subset, as ImageNet-A/-R hold 200 of 1000 classes)\n")
    open(os.path.join(out, ".complete"), "w").close()
    try:
        os.rename(out, final)
    except OSError:  # another process finished first
        if not os.path.isfile(os.path.join(final, ".complete")):
            raise
        shutil.rmtree(out)
    return final
