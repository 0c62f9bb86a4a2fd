"""NLVR2 raw download -> ``nlvr2_<split>.arrow`` (re-implements upstream ViLT ``vilt/utils/write_nlvr2.py``).

Raw layout under `root` (the lil-lab/nlvr repository's ``nlvr2/data`` next to the downloaded image folders)::

    nlvr2/data/{train,dev,test1}.json
    nlvr2/data/balanced/balanced_{dev,test1}.json    nlvr2/data/unbalanced/unbalanced_{dev,test1}.json
    images/train/<directory>/<pair>-img{0,1}.png     (train)
    dev/<pair>-img{0,1}.png  test1/<pair>-img{0,1}.png

Each ``.json`` is JSON lines with ``identifier`` (``<split>-<set>-<pair>-<sentence>``), ``sentence``, ``label``
("True"/"False") and, for train, ``directory``.

Reproduced upstream behaviour: the sentences are grouped by pair id (the identifier without its last dash-separated
field), one row per pair in order of first appearance (no shuffle, so no seed is needed); ``questions`` = the pair's
sentences, ``answers`` = their label strings as written in the file; images are read from
``images/train/<directory>/<pair>-img{0,1}.png`` for pair ids starting with "train" and from
``<first field of pair id>/<pair>-img{0,1}.png`` otherwise (so balanced/unbalanced dev rows read ``dev/``).
Differences: rows are streamed, and a missing file, field or image raises an error naming it.
"""
from __future__ import annotations

import argparse
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import pyarrow as pa

from shared_apt.vl.data.writers.common import (
    DEFAULT_BATCH_BYTES,
    DEFAULT_BATCH_ROWS,
    ImageSource,
    RawDataError,
    add_common_arguments,
    load_json_lines,
    open_arrow_writers,
    progress,
    read_image_bytes,
    require_field,
    run_cli,
)

SPLIT_FILES = OrderedDict(
    [
        ("train", "nlvr2/data/train.json"),
        ("dev", "nlvr2/data/dev.json"),
        ("test1", "nlvr2/data/test1.json"),
        ("balanced_dev", "nlvr2/data/balanced/balanced_dev.json"),
        ("balanced_test1", "nlvr2/data/balanced/balanced_test1.json"),
        ("unbalanced_dev", "nlvr2/data/unbalanced/unbalanced_dev.json"),
        ("unbalanced_test1", "nlvr2/data/unbalanced/unbalanced_test1.json"),
    ]
)
SPLITS = tuple(SPLIT_FILES)

#: columns of ``nlvr2_<split>.arrow``
NLVR2_SCHEMA = pa.schema(
    [
        ("image_0", pa.binary()),
        ("image_1", pa.binary()),
        ("questions", pa.list_(pa.string())),
        ("answers", pa.list_(pa.string())),
        ("identifier", pa.string()),
    ]
)


def pair_id(identifier: str) -> str:
    """The image-pair id: an NLVR2 identifier without its last dash-separated field ("dev-850-0-1" -> "dev-850-0")."""
    return "-".join(identifier.split("-")[:-1])


def group_by_pair(records: Sequence[dict], source: str) -> "OrderedDict[str, List[dict]]":
    """Sentences grouped by pair id, groups and sentences in file order; checks the fields the writer reads."""
    groups: "OrderedDict[str, List[dict]]" = OrderedDict()
    for i, record in enumerate(records):
        where = f"NLVR2 file {source}: record {i}"
        identifier = require_field(record, "identifier", where)
        where = f"NLVR2 file {source}: {identifier}"
        require_field(record, "sentence", where)
        require_field(record, "label", where)
        pair = pair_id(identifier)
        if pair.startswith("train"):
            require_field(record, "directory", where)
        groups.setdefault(pair, []).append(record)
    return groups


def pair_image_paths(root: str, pair: str, records: Sequence[dict]) -> Tuple[str, str]:
    """Paths of the left and right images of `pair` (upstream ``process``)."""
    if pair.startswith("train"):
        stem = os.path.join(root, "images", "train", str(records[0]["directory"]), pair)
    else:
        stem = os.path.join(root, pair.split("-")[0], pair)
    return f"{stem}-img0.png", f"{stem}-img1.png"


def nlvr2_row(
    image_0: ImageSource, image_1: ImageSource, sentences: Sequence[str], labels: Sequence[str], pair: str
) -> dict:
    """One row of ``nlvr2_<split>.arrow``."""
    return {
        "image_0": read_image_bytes(image_0, f"NLVR2 left image of {pair}"),
        "image_1": read_image_bytes(image_1, f"NLVR2 right image of {pair}"),
        "questions": list(sentences),
        "answers": list(labels),
        "identifier": pair,
    }


def write_nlvr2_split(
    dataset_root: str,
    split: str,
    pairs: Sequence[Tuple[str, ImageSource, ImageSource, Sequence[str], Sequence[str]]],
    batch_rows: int = DEFAULT_BATCH_ROWS,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    show_progress: bool = True,
) -> int:
    """Stream (pair id, left image, right image, sentences, labels) tuples into ``nlvr2_<split>.arrow``."""
    path = os.path.join(dataset_root, f"nlvr2_{split}.arrow")
    with open_arrow_writers({split: (path, NLVR2_SCHEMA)}, batch_rows, batch_bytes) as writers:
        for pair, image_0, image_1, sentences, labels in progress(pairs, f"nlvr2_{split}", len(pairs), show_progress):
            writers[split].append(nlvr2_row(image_0, image_1, sentences, labels, pair))
    return writers[split].rows_written


def make_arrow(
    root: str,
    dataset_root: str,
    splits: Sequence[str] = SPLITS,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    show_progress: bool = True,
) -> Dict[str, int]:
    """Write ``nlvr2_<split>.arrow`` for every split of `splits`; return the row count per split.

    All annotation files and images are checked before anything is written.
    """
    unknown = [s for s in splits if s not in SPLIT_FILES]
    if unknown:
        raise ValueError(f"unknown NLVR2 split(s) {unknown}; choose from {list(SPLITS)}")
    plans = {}
    for split in dict.fromkeys(splits):
        source = os.path.join(root, SPLIT_FILES[split])
        groups = group_by_pair(load_json_lines(source, "NLVR2 annotation file"), source)
        pairs = []
        for pair, records in groups.items():
            left, right = pair_image_paths(root, pair, records)
            for path in (left, right):
                if not os.path.isfile(path):
                    raise RawDataError(f"NLVR2 image not found: {path} (needed by {pair} in {source})")
            pairs.append((pair, left, right, [r["sentence"] for r in records], [r["label"] for r in records]))
        plans[split] = pairs
    return {
        split: write_nlvr2_split(dataset_root, split, pairs, batch_rows, batch_bytes, show_progress)
        for split, pairs in plans.items()
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI: ``python -m shared_apt.vl.data.writers.nlvr2 ROOT DATASET_ROOT [--splits train dev test1 ...]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_arguments(parser, seed=False, missing_images=False)
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS, help="splits to write")
    args = parser.parse_args(argv)
    return run_cli(lambda: print(make_arrow(
        args.root, args.dataset_root, splits=args.splits, batch_rows=args.batch_rows,
        show_progress=not args.no_progress,
    )))


if __name__ == "__main__":
    raise SystemExit(main())
