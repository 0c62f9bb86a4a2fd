"""NLVR (v1.0) split folders -> VQA-schema or caption-schema arrow files (no upstream counterpart).

Raw layout (lil-lab/nlvr, folder ``nlvr/``), for a split name such as ``test``, ``hidden``, ``dev`` or ``train``::

    <root>/<split>/<split>.json                                      JSON lines: sentence, label, identifier, directory
    <root>/<split>/images/<folder>/<split>-<identifier>-<k>.png      k = 0..5, six permutations of the same boxes

Images are found by file name in any folder of ``images/``: the public ``hidden`` split has no ``directory`` field
and spreads the six permutations of some identifiers over two folders (``hidden-3291-2-0..3.png`` in ``images/0/``,
``-4`` and ``-5`` in ``images/1/``).

Mode ``vqa`` (default) treats NLVR as a binary VQA task and writes the ``vqav2_*`` schema
(:func:`shared_apt.vl.data.writers.vqa.vqa_schema`) to ``nlvr1_<name>.arrow``:

* one row per image: the statement as the only question, its label as the only answer, with the fixed 2-answer
  vocabulary ``ANSWERS = ("false", "true")`` -> answer_labels ``[[0]]`` for "false" and ``[[1]]`` for "true" (so the
  class id equals the truth value, as NLVR2's label is 1 for "True"), answer_scores ``[[1.0]]``;
* image = permutation `image_index` (default 0) of the example, or all six as six rows (``all_images``), converted
  from RGBA to RGB (composited on white) and stored as PNG bytes;
* image_id = question_id = ``n * 1000 + m * 10 + k`` for identifier ``n-m`` and permutation k (unique per image);
* split column = "train"/"val" for the two parts of a train/val cut, else the source split name.

Mode ``true_captions`` writes the caption schema (:data:`~shared_apt.vl.data.writers.common.CAPTION_SCHEMA`) for MLM+ITM
pre-training: one row per selected image of every TRUE example, caption = [its statement], image_id = the PNG file
name with the numeric id appended (``test-3776-0-0_3776000.png``, so that the caption datasets' COCO/F30K-style
"digits after the last underscore" image-id parsing works); false examples are skipped. Default output name
``<split>_captions``.

Train/val cut (``val_fraction`` > 0): the examples are partitioned by their ``directory`` (or, with
``group_by="set"``, by the ``n`` of their identifier; examples sharing ``n`` share a sentence and a folder), whole
groups going to one side, so no permutation or sentence leaks; the validation groups are a seeded draw of
``round(val_fraction x groups)`` groups (at least one, never all). Outputs ``nlvr1_<name>_train.arrow`` and
``nlvr1_<name>_val.arrow`` (names overridable). Rows keep file order.
"""
from __future__ import annotations

import argparse
import io
import os
import random
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from PIL import Image

from shared_apt.vl.data.writers.common import (
    CAPTION_SCHEMA,
    DEFAULT_BATCH_BYTES,
    DEFAULT_BATCH_ROWS,
    RawDataError,
    caption_row,
    load_json_lines,
    open_arrow_writers,
    progress,
    require_dir,
    require_field,
    run_cli,
)
from shared_apt.vl.data.writers.vqa import VqaQuestion, vqa_row, vqa_schema

ANSWERS = ("false", "true")
ANSWER2LABEL = {answer: i for i, answer in enumerate(ANSWERS)}
NUM_PERMUTATIONS = 6
MODES = ("vqa", "true_captions")
GROUP_BY = ("directory", "set")


# ---------------------------------------------------------------------------------------------------------------
# Reading the split
# ---------------------------------------------------------------------------------------------------------------


def split_file(root: str, split: str) -> str:
    """``<root>/<split>/<split>.json``."""
    return os.path.join(root, split, f"{split}.json")


def image_name(split: str, example: dict, k: int) -> str:
    """``<split>-<identifier>-<k>.png``."""
    return f"{split}-{example['identifier']}-{k}.png"


def image_path(root: str, split: str, example: dict, k: int) -> str:
    """``<root>/<split>/images/<folder>/<split>-<identifier>-<k>.png``, the folder found by file name
    (:func:`image_index`): the ``hidden`` split spreads the six permutations of one identifier over several
    folders, so an example's ``directory`` does not locate all of its images."""
    name = image_name(split, example, k)
    folder = example["image_folders"].get(k)
    if folder is None:
        raise RawDataError(f"NLVR image not found: {name} (in no folder of "
                           f"{os.path.join(root, split, 'images')}/*/)")
    return os.path.join(root, split, "images", folder, name)


def parse_identifier(identifier: str, where: str) -> Tuple[int, int]:
    """``"n-m"`` -> (n, m)."""
    parts = identifier.split("-")
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or int(parts[1]) >= 100:
        raise RawDataError(f"{where}: identifier {identifier!r} is not of the form '<n>-<m>' (m < 100)")
    return int(parts[0]), int(parts[1])


def question_id(identifier: str, k: int) -> int:
    """Unique integer id of permutation `k` of example ``n-m``: ``n * 1000 + m * 10 + k``."""
    n, m = parse_identifier(identifier, "NLVR example")
    return n * 1000 + m * 10 + k


def image_index(root: str, split: str) -> Dict[str, str]:
    """PNG file name -> the folder of ``<root>/<split>/images/`` holding it; a name in two folders is an error."""
    images = os.path.join(root, split, "images")
    require_dir(images, f"NLVR image folder of split {split!r}")
    prefix, index = f"{split}-", {}
    for folder in sorted(os.listdir(images)):
        path = os.path.join(images, folder)
        if not os.path.isdir(path):
            continue
        for name in sorted(os.listdir(path)):
            if name.startswith(prefix) and name.endswith(".png"):
                if name in index:
                    raise RawDataError(f"NLVR image {name} is in two folders: "
                                       f"{os.path.join(images, index[name])} and {path}")
                index[name] = folder
    return index


def load_examples(root: str, split: str, limit: Optional[int] = None) -> List[dict]:
    """The first `limit` (default all) examples of a split, with their fields checked and ``image_folders``
    ({k: folder} of the permutation images present, found by file name). Examples without a ``directory`` field
    get the folder of their first image."""
    path = split_file(root, split)
    require_dir(os.path.join(root, split), f"NLVR split folder {split!r}")
    examples = load_json_lines(path, "NLVR split file", limit)
    seen = set()
    index = image_index(root, split)
    for i, example in enumerate(examples):
        where = f"NLVR split file {path}: line {i + 1}"
        identifier = require_field(example, "identifier", where)
        where = f"NLVR split file {path}: example {identifier}"
        parse_identifier(identifier, where)
        if identifier in seen:
            raise RawDataError(f"{where}: identifier appears twice")
        seen.add(identifier)
        require_field(example, "sentence", where)
        folders = {k: index[image_name(split, example, k)] for k in range(NUM_PERMUTATIONS)
                   if image_name(split, example, k) in index}
        example["image_folders"] = folders
        if "directory" not in example:
            if not folders:
                raise RawDataError(f"{where}: no 'directory' field and no image "
                                   f"{split}-{identifier}-<k>.png under {os.path.join(root, split, 'images')}/*/")
            example["directory"] = folders[min(folders)]
        if require_field(example, "label", where) not in ANSWER2LABEL:
            raise RawDataError(f"{where}: label {example['label']!r} is neither 'true' nor 'false'")
    return examples


def rgb_png_bytes(path: str) -> bytes:
    """Decode an NLVR PNG (RGBA), composite it on white, and re-encode it as an RGB PNG."""
    if not os.path.isfile(path):
        raise RawDataError(f"NLVR image not found: {path}")
    with Image.open(path) as image:
        image.load()
        if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            rgb = Image.alpha_composite(canvas, rgba).convert("RGB")
        else:
            rgb = image.convert("RGB")
    buffer = io.BytesIO()
    rgb.save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# Train/val cut without leaks
# ---------------------------------------------------------------------------------------------------------------


def group_keys(examples: Sequence[dict], group_by: str) -> List[str]:
    """The leak-safe unit of each example: its sentence set ``n`` (``group_by="set"``), or its image folders
    (``"directory"``): folders that share an example (its ``directory`` and the folders of its images, which the
    ``hidden`` split spreads over several) form one group, so no folder ends up on both sides of a cut."""
    if group_by == "set":
        return [e["identifier"].split("-")[0] for e in examples]
    if group_by != "directory":
        raise ValueError(f"group_by must be one of {GROUP_BY}, got {group_by!r}")
    parent: Dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    folder_sets = [sorted({str(e["directory"])} | {str(f) for f in e.get("image_folders", {}).values()})
                   for e in examples]
    for folders in folder_sets:
        for f in folders[1:]:
            ra, rb = find(folders[0]), find(f)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    return [find(folders[0]) for folders in folder_sets]


def split_by_group(
    examples: Sequence[dict], val_fraction: float, seed: Optional[int] = 0, group_by: str = "directory"
) -> Tuple[List[dict], List[dict]]:
    """Cut examples into (train, val) by whole groups; both keep file order."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    keys = group_keys(examples, group_by)
    groups = sorted(set(keys), key=lambda g: (len(g), g))
    if len(groups) < 2:
        raise RawDataError(
            f"cannot cut {len(examples)} examples into train/val by {group_by}: only {len(groups)} group(s)"
            + (" (image folders that share an example form one group; the 'hidden' split spreads examples over "
               "folders: cut it with group_by='set')" if group_by == "directory" else "")
        )
    random.Random(seed).shuffle(groups)
    n_val = min(max(1, round(val_fraction * len(groups))), len(groups) - 1)
    val_groups = set(groups[:n_val])
    train = [e for e, g in zip(examples, keys) if g not in val_groups]
    val = [e for e, g in zip(examples, keys) if g in val_groups]
    return train, val


# ---------------------------------------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------------------------------------


def permutations(image_index: int, all_images: bool) -> List[int]:
    """Which of the six permutation images become rows."""
    if all_images:
        return list(range(NUM_PERMUTATIONS))
    if not 0 <= image_index < NUM_PERMUTATIONS:
        raise ValueError(f"image_index must be in 0..{NUM_PERMUTATIONS - 1}, got {image_index}")
    return [image_index]


def vqa_rows(root: str, split: str, examples: Sequence[dict], ks: Sequence[int], split_value: str) -> Iterator[dict]:
    """VQA-schema rows: one per (example, permutation)."""
    for example in examples:
        label = ANSWER2LABEL[example["label"]]
        for k in ks:
            qid = question_id(example["identifier"], k)
            question = VqaQuestion(qid, example["sentence"], [label], [1.0])
            image = rgb_png_bytes(image_path(root, split, example, k))
            yield vqa_row(image, qid, [question], split_value, ANSWERS, test=False)


def caption_rows(
    root: str, split: str, examples: Sequence[dict], ks: Sequence[int], split_value: str
) -> Iterator[dict]:
    """Caption-schema rows: one per permutation of every true example, caption = [statement]."""
    for example in examples:
        if example["label"] != "true":
            continue
        for k in ks:
            path = image_path(root, split, example, k)
            image_id = f"{os.path.splitext(os.path.basename(path))[0]}_{question_id(example['identifier'], k)}.png"
            yield caption_row(rgb_png_bytes(path), [example["sentence"]], image_id, split_value)


# ---------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------


def make_arrow(
    root: str,
    dataset_root: str,
    split: str = "test",
    name: Optional[str] = None,
    mode: str = "vqa",
    image_index: int = 0,
    all_images: bool = False,
    val_fraction: float = 0.0,
    group_by: str = "directory",
    train_name: Optional[str] = None,
    val_name: Optional[str] = None,
    seed: Optional[int] = 0,
    limit: Optional[int] = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    show_progress: bool = True,
) -> Dict[str, int]:
    """Write ``nlvr1_<name>.arrow`` (or its ``_train``/``_val`` pair); return rows written per output file name.

    `root` is the folder holding the split folders (e.g. ``../shared/data/nlvr1``); `limit` keeps only the first
    examples of the split file (for quick runs and tests).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    ks = permutations(image_index, all_images)
    examples = load_examples(root, split, limit)
    name = name or (split if mode == "vqa" else f"{split}_captions")
    if val_fraction > 0:
        train, val = split_by_group(examples, val_fraction, seed, group_by)
        parts = [(train_name or f"{name}_train", "train", train), (val_name or f"{name}_val", "val", val)]
    else:
        parts = [(name, split, examples)]
    schema, make_rows = (vqa_schema(test=False), vqa_rows) if mode == "vqa" else (CAPTION_SCHEMA, caption_rows)
    counts: Dict[str, int] = {}
    for out_name, split_value, part in parts:
        file_name = f"nlvr1_{out_name}.arrow"
        total = len(part) * len(ks) if mode == "vqa" else sum(e["label"] == "true" for e in part) * len(ks)
        target = {file_name: (os.path.join(dataset_root, file_name), schema)}
        with open_arrow_writers(target, batch_rows, batch_bytes) as w:
            for row in progress(make_rows(root, split, part, ks, split_value), file_name, total, show_progress):
                w[file_name].append(row)
        counts[file_name] = w[file_name].rows_written
    return counts


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI: ``python -m shared_apt.vl.data.writers.nlvr1 ROOT DATASET_ROOT --split test [--val-fraction 0.15] ...``."""
    parser = argparse.ArgumentParser(description="NLVR (v1.0) split -> nlvr1_<name>.arrow (VQA or caption schema)")
    parser.add_argument("root", help="folder holding the NLVR split folders (<root>/<split>/<split>.json)")
    parser.add_argument("dataset_root", help="output folder for the .arrow files")
    parser.add_argument("--split", default="test", help="input split folder name (default test)")
    parser.add_argument("--name", default=None, help="output name: nlvr1_<name>.arrow (default: the split, "
                                                     "or <split>_captions in true_captions mode)")
    parser.add_argument("--mode", choices=MODES, default="vqa")
    parser.add_argument("--image-index", type=int, default=0, help="which permutation image k to use (0..5)")
    parser.add_argument("--all-images", action="store_true", help="emit all six permutations as separate rows")
    parser.add_argument("--val-fraction", type=float, default=0.0, help="cut a validation part off by group")
    parser.add_argument("--group-by", choices=GROUP_BY, default="directory", help="leak-safe unit of the cut")
    parser.add_argument("--train-name", default=None, help="output name of the train part (default <name>_train)")
    parser.add_argument("--val-name", default=None, help="output name of the val part (default <name>_val)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the validation group draw")
    parser.add_argument("--limit", type=int, default=None, help="use only the first LIMIT examples")
    parser.add_argument("--batch-rows", type=int, default=DEFAULT_BATCH_ROWS, help="rows per record batch")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    return run_cli(lambda: print(make_arrow(
        args.root, args.dataset_root, split=args.split, name=args.name, mode=args.mode,
        image_index=args.image_index, all_images=args.all_images, val_fraction=args.val_fraction,
        group_by=args.group_by, train_name=args.train_name, val_name=args.val_name, seed=args.seed,
        limit=args.limit, batch_rows=args.batch_rows, show_progress=not args.no_progress,
    )))


if __name__ == "__main__":
    raise SystemExit(main())
