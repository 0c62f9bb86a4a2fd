"""Plumbing shared by the arrow writers (``shared_apt.vl.data.writers.*``).

Upstream ViLT's ``vilt/utils/write_*.py`` read every raw image into a pandas DataFrame and wrote one table per split
with ``pa.Table.from_pandas``. The writers here produce the same files (same names, same columns, same arrow types,
same row content) but

* stream: rows are buffered into record batches of a bounded size (``batch_rows`` rows or ``batch_bytes`` bytes of
  image data, whichever comes first) and written as they fill, so memory stays flat however many images there are;
* are deterministic: where upstream shuffles the image list with an unseeded ``random.shuffle``, we sort the list and
  shuffle it with ``random.Random(seed)``;
* fail early and clearly: a missing file or folder, a record without a field, or an image that an annotation needs
  but that is not on disk raises :class:`RawDataError` naming it (upstream either crashed with a bare ``KeyError`` or
  silently dropped the image).

This module also holds the caption table schema and the Karpathy-split caption writer that the Flickr30K and COCO
writers (and the demo world) share.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
from collections import OrderedDict
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import pyarrow as pa
from tqdm import tqdm

from shared_apt.vl.data.arrow import arrow_file_writer

#: default bound of one record batch, in rows
DEFAULT_BATCH_ROWS = 256
#: default bound of one record batch, in bytes of binary (image) data
DEFAULT_BATCH_BYTES = 64 << 20

#: an image given as the path of its encoded file, as the encoded bytes, or as a function returning the bytes
#: (the demo world renders images lazily this way so that memory stays flat)
ImageSource = Union[str, bytes, Callable[[], bytes]]


class RawDataError(RuntimeError):
    """A raw input (annotation file, image folder, image, record field) is missing or malformed."""


# ---------------------------------------------------------------------------------------------------------------
# Raw input access with clear errors
# ---------------------------------------------------------------------------------------------------------------


def require_file(path: str, what: str) -> str:
    """Return `path` if it is a file, else raise RawDataError naming `what` and the path."""
    if not os.path.isfile(path):
        raise RawDataError(f"{what} not found: {path}")
    return path


def require_dir(path: str, what: str) -> str:
    """Return `path` if it is a directory, else raise RawDataError naming `what` and the path."""
    if not os.path.isdir(path):
        raise RawDataError(f"{what} not found (expected a folder): {path}")
    return path


def load_json(path: str, what: str) -> Any:
    """Load one JSON document (upstream: ``json.load(open(path))``)."""
    require_file(path, what)
    with open(path, "r", encoding="utf-8") as fp:
        try:
            return json.load(fp)
        except json.JSONDecodeError as e:
            raise RawDataError(f"{what} {path} is not valid JSON: {e}") from e


def load_json_lines(path: str, what: str, limit: Optional[int] = None) -> List[dict]:
    """Load a JSON-lines file (one object per non-empty line), as NLVR/NLVR2 ship them; stop after `limit` records."""
    require_file(path, what)
    records: List[dict] = []
    with open(path, "r", encoding="utf-8") as fp:
        for lineno, line in enumerate(fp, start=1):
            if limit is not None and len(records) >= limit:
                break
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise RawDataError(f"{what} {path}, line {lineno}: not valid JSON: {e}") from e
            if not isinstance(record, dict):
                raise RawDataError(f"{what} {path}, line {lineno}: expected a JSON object, got {type(record).__name__}")
            records.append(record)
    return records


def require_field(record: Mapping[str, Any], field: str, where: str) -> Any:
    """``record[field]``, or RawDataError "<where> has no field '<field>'"."""
    if not isinstance(record, Mapping):
        raise RawDataError(f"{where} is not a JSON object (got {type(record).__name__})")
    if field not in record:
        raise RawDataError(f"{where} has no field {field!r}")
    return record[field]


def require_list_field(record: Mapping[str, Any], field: str, where: str) -> list:
    """Like :func:`require_field`, and the value must be a JSON list."""
    value = require_field(record, field, where)
    if not isinstance(value, list):
        raise RawDataError(f"{where}: field {field!r} should be a list, got {type(value).__name__}")
    return value


def read_image_bytes(source: ImageSource, what: str = "image") -> bytes:
    """Encoded bytes of an image given as bytes, a file path (upstream: ``open(path, "rb").read()``) or a callable."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if callable(source):
        return bytes(source())
    if not os.path.isfile(source):
        raise RawDataError(f"{what} not found: {source}")
    with open(source, "rb") as fp:
        return fp.read()


def check_missing_images(missing: Sequence[str], what: str, allow_missing: bool) -> None:
    """Raise (or, with `allow_missing`, warn on stderr) about images that annotations need but that are absent."""
    if not missing:
        return
    shown = ", ".join(missing[:5]) + (f", ... ({len(missing)} in all)" if len(missing) > 5 else "")
    if not allow_missing:
        raise RawDataError(
            f"{len(missing)} image(s) missing: {shown}; needed by {what} "
            "(pass allow_missing_images=True / --allow-missing-images to skip them as upstream did)"
        )
    print(f"warning: skipping {len(missing)} annotated image(s) missing for {what}: {shown}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------------------------
# Determinism and progress
# ---------------------------------------------------------------------------------------------------------------


def seeded_shuffle(items: Iterable[Any], seed: Optional[int]) -> list:
    """Sort `items`, then shuffle them with ``random.Random(seed)``; `seed=None` keeps the sorted order.

    Replaces upstream's unseeded ``random.shuffle(paths)`` so that a given seed always yields the same row order.
    """
    ordered = sorted(items)
    if seed is not None:
        random.Random(seed).shuffle(ordered)
    return ordered


def progress(iterable: Iterable[Any], desc: str, total: Optional[int] = None, enabled: bool = True) -> Iterable[Any]:
    """A tqdm progress bar on stderr (or the bare iterable when disabled)."""
    if not enabled:
        return iterable
    return tqdm(iterable, desc=desc, total=total, unit="row", dynamic_ncols=True, mininterval=1.0, file=sys.stderr)


# ---------------------------------------------------------------------------------------------------------------
# Streaming arrow output
# ---------------------------------------------------------------------------------------------------------------


class BatchedArrowWriter:
    """Collect rows (dicts keyed by column name) and write them as record batches of bounded size.

    A batch is flushed once it holds `batch_rows` rows or `batch_bytes` bytes of binary column data.
    """

    def __init__(
        self,
        writer: pa.RecordBatchFileWriter,
        schema: pa.Schema,
        path: str,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
    ):
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
        self.writer = writer
        self.schema = schema
        self.path = path
        self.batch_rows = batch_rows
        self.batch_bytes = batch_bytes
        self._columns: Dict[str, list] = {name: [] for name in schema.names}
        self._binary_columns = [f.name for f in schema if pa.types.is_binary(f.type)]
        self._pending_rows = 0
        self._pending_bytes = 0
        self.rows_written = 0

    def append(self, row: Mapping[str, Any]) -> None:
        """Buffer one row; it must have exactly the schema's columns."""
        if set(row) != set(self._columns):
            raise ValueError(f"row for {self.path} has columns {sorted(row)}, schema has {self.schema.names}")
        for name, values in self._columns.items():
            values.append(row[name])
        self._pending_rows += 1
        self._pending_bytes += sum(len(row[name]) for name in self._binary_columns)
        if self._pending_rows >= self.batch_rows or self._pending_bytes >= self.batch_bytes:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one record batch."""
        if not self._pending_rows:
            return
        batch = pa.RecordBatch.from_pydict(self._columns, schema=self.schema)
        self.writer.write_batch(batch)
        self.rows_written += self._pending_rows
        self._columns = {name: [] for name in self.schema.names}
        self._pending_rows = 0
        self._pending_bytes = 0


@contextmanager
def open_arrow_writers(
    targets: Mapping[str, Tuple[str, pa.Schema]],
    batch_rows: int = DEFAULT_BATCH_ROWS,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
) -> Iterator[Dict[str, BatchedArrowWriter]]:
    """Open one streaming writer per key of `targets` (key -> (path, schema)).

    Every file appears (atomically, via :func:`shared_apt.vl.data.arrow.arrow_file_writer`) only if the block completes;
    on an exception none of them is created or replaced.
    """
    with ExitStack() as stack:
        writers: Dict[str, BatchedArrowWriter] = OrderedDict()
        for key, (path, schema) in targets.items():
            raw = stack.enter_context(arrow_file_writer(path, schema))
            writers[key] = BatchedArrowWriter(raw, schema, path, batch_rows, batch_bytes)
        yield writers
        for writer in writers.values():
            writer.flush()


# ---------------------------------------------------------------------------------------------------------------
# Caption tables (Karpathy splits of Flickr30K and COCO)
# ---------------------------------------------------------------------------------------------------------------

#: columns of ``{f30k,coco}_caption_karpathy_<split>.arrow`` (upstream write_f30k_karpathy.py / write_coco_karpathy.py)
CAPTION_SCHEMA = pa.schema(
    [
        ("image", pa.binary()),
        ("caption", pa.list_(pa.string())),
        ("image_id", pa.string()),
        ("split", pa.string()),
    ]
)


def caption_row(image: ImageSource, captions: Sequence[str], image_id: str, split: str) -> dict:
    """One row of a caption table: encoded image bytes, its captions, file name as image_id, split name."""
    return {
        "image": read_image_bytes(image, f"image {image_id}"),
        "caption": list(captions),
        "image_id": image_id,
        "split": split,
    }


def parse_karpathy_captions(
    karpathy: Any, source: str, splits: Sequence[str]
) -> Tuple["OrderedDict[str, List[str]]", Dict[str, str]]:
    """Read Karpathy's ``dataset_*.json``: file name -> raw captions (``sentences[*].raw``), file name -> split.

    As upstream, captions of repeated file names are concatenated and the last split wins. An image whose split is not
    one of `splits` raises (upstream silently never wrote it).
    """
    images = require_list_field(karpathy, "images", f"Karpathy file {source}")
    iid2captions: "OrderedDict[str, List[str]]" = OrderedDict()
    iid2split: Dict[str, str] = {}
    for i, entry in enumerate(images):
        where = f"Karpathy file {source}: images[{i}]"
        filename = require_field(entry, "filename", where)
        where = f"Karpathy file {source}: image {filename!r}"
        split = require_field(entry, "split", where)
        if split not in splits:
            raise RawDataError(f"{where} has split {split!r}, expected one of {list(splits)}")
        iid2split[filename] = split
        captions = iid2captions.setdefault(filename, [])
        for j, sentence in enumerate(require_list_field(entry, "sentences", where)):
            captions.append(require_field(sentence, "raw", f"{where}, sentences[{j}]"))
    return iid2captions, iid2split


def index_image_files(folders: Sequence[str], suffix: str = ".jpg") -> Dict[str, str]:
    """File name -> path of every ``*<suffix>`` file directly inside `folders` (upstream: ``glob(folder/*.jpg)``)."""
    index: Dict[str, str] = {}
    for folder in folders:
        require_dir(folder, "image folder")
        for name in os.listdir(folder):
            if name.endswith(suffix):
                index.setdefault(name, os.path.join(folder, name))
    return index


def write_caption_tables(
    dataset_root: str,
    prefix: str,
    splits: Sequence[str],
    rows: Iterable[Tuple[str, ImageSource, Sequence[str], str]],
    total: Optional[int] = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    show_progress: bool = True,
) -> Dict[str, int]:
    """Stream `rows` (image_id, image, captions, split) into ``<dataset_root>/<prefix>_<split>.arrow`` per split.

    Returns the number of rows written per split. Rows keep the order of `rows` within each split.
    """
    targets = {s: (os.path.join(dataset_root, f"{prefix}_{s}.arrow"), CAPTION_SCHEMA) for s in splits}
    with open_arrow_writers(targets, batch_rows, batch_bytes) as writers:
        for image_id, image, captions, split in progress(rows, prefix, total, show_progress):
            if split not in writers:
                raise RawDataError(f"image {image_id}: split {split!r} is not one of {list(splits)}")
            writers[split].append(caption_row(image, captions, image_id, split))
    return {s: w.rows_written for s, w in writers.items()}


def make_karpathy_arrow(
    annotation_path: str,
    image_folders: Sequence[str],
    dataset_root: str,
    prefix: str,
    splits: Sequence[str],
    seed: Optional[int] = 0,
    allow_missing_images: bool = False,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    show_progress: bool = True,
) -> Dict[str, int]:
    """Karpathy caption splits -> ``<prefix>_<split>.arrow`` (upstream write_f30k_karpathy / write_coco_karpathy).

    Every annotated image found in `image_folders` becomes one row (image bytes, its raw captions, its file name,
    its split); the images are visited in a seeded shuffle of their sorted file names.
    """
    karpathy = load_json(annotation_path, "Karpathy annotation file")
    iid2captions, iid2split = parse_karpathy_captions(karpathy, annotation_path, splits)
    files = index_image_files(image_folders)
    missing = [name for name in iid2captions if name not in files]
    check_missing_images(missing, f"{annotation_path} (looked in {', '.join(image_folders)})", allow_missing_images)
    names = seeded_shuffle((name for name in iid2captions if name in files), seed)
    rows = ((name, files[name], iid2captions[name], iid2split[name]) for name in names)
    return write_caption_tables(
        dataset_root, prefix, splits, rows, len(names), batch_rows, batch_bytes, show_progress
    )


# ---------------------------------------------------------------------------------------------------------------
# Command-line helpers
# ---------------------------------------------------------------------------------------------------------------


def add_common_arguments(parser: argparse.ArgumentParser, seed: bool = True, missing_images: bool = True) -> None:
    """Positional ``root dataset_root`` (as upstream's ``make_arrow(root, dataset_root)``) and shared options."""
    parser.add_argument("root", help="folder holding the raw download in its official layout")
    parser.add_argument("dataset_root", help="output folder for the .arrow files")
    if seed:
        parser.add_argument("--seed", type=int, default=0, help="seed of the row-order shuffle (default 0)")
    if missing_images:
        parser.add_argument(
            "--allow-missing-images",
            action="store_true",
            help="skip annotated images that are not on disk (with a warning) instead of failing",
        )
    parser.add_argument("--batch-rows", type=int, default=DEFAULT_BATCH_ROWS, help="rows per record batch")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run_cli(main_body: Callable[[], Any]) -> int:
    """Run a CLI body, turning RawDataError into a one-line message and exit status 1."""
    try:
        main_body()
    except RawDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


class KarpathyWriter:
    """``make_arrow`` and ``main`` of a Karpathy caption writer (F30K, COCO): they differ only in file names."""

    def __init__(self, prefix: str, splits: Sequence[str], annotation_file: str, image_folders: Sequence[str],
                 title: str):
        self.prefix, self.splits, self.title = prefix, tuple(splits), title
        self.annotation_file, self.image_folders = annotation_file, tuple(image_folders)

    def make_arrow(self, root: str, dataset_root: str, seed: Optional[int] = 0, allow_missing_images: bool = False,
                   batch_rows: int = DEFAULT_BATCH_ROWS, batch_bytes: int = DEFAULT_BATCH_BYTES,
                   show_progress: bool = True) -> Dict[str, int]:
        """Write ``<prefix>_<split>.arrow`` for every split; return the row count per split."""
        return make_karpathy_arrow(
            os.path.join(root, self.annotation_file), [os.path.join(root, f) for f in self.image_folders],
            dataset_root, self.prefix, self.splits, seed, allow_missing_images, batch_rows, batch_bytes,
            show_progress,
        )

    def main(self, argv: Optional[Sequence[str]] = None) -> int:
        parser = argparse.ArgumentParser(description=f"{self.title} -> {self.prefix}_<split>.arrow")
        add_common_arguments(parser)
        args = parser.parse_args(argv)
        return run_cli(lambda: print(self.make_arrow(
            args.root, args.dataset_root, seed=args.seed, allow_missing_images=args.allow_missing_images,
            batch_rows=args.batch_rows, show_progress=not args.no_progress,
        )))
