"""Arrow IPC files as upstream ViLT/METER write and read them (one table per file, RecordBatchFileWriter).

Every reader and writer of the project goes through these functions so that a missing, corrupt or mis-shaped file
gives one clear :class:`ArrowFileError` naming the file, and every written file appears atomically (written to a
temporary name, then renamed).

Reading (:func:`read_arrow_table`) is memory-mapped and guarded so that no corrupted byte can crash the process or
silently change what is read:

* the file footer and every record-batch message are parsed by ``pyarrow.ipc`` (flatbuffer verification), and each
  batch is checked with ``RecordBatch.validate(full=True)`` (offsets, lengths, UTF-8, null bitmaps) before anything
  touches its values;
* files written by this project carry a SHA-256 digest of every record batch (batch custom metadata
  :data:`DIGEST_KEY`, covering the schema too), checked on read, so changed content (a question, a label, an image byte) is an error rather
  than a different sample. Files written by other tools (upstream's ``write_*.py``) carry no digest: they get the
  structural checks only;
* `columns` states what a dataset needs: each column must exist, have an accepted type and hold no nulls (also none
  inside its lists); a missing column is reported as missing, whatever else the file holds.
"""
from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from typing import Callable, Iterator, Mapping, Sequence, Tuple, Union

import pyarrow as pa
import pyarrow.compute as pc

from shared_apt.peft.atomic import atomic_path

#: record-batch custom metadata key holding the hex SHA-256 of the serialised batch
DIGEST_KEY = b"apt_vl.sha256"

class ArrowFileError(RuntimeError):
    """A dataset file is missing, unreadable, corrupt, or lacks / mis-types a column the dataset needs."""


# A column type spec: an arrow type, a tuple of accepted types, or (predicate, description).
TypeSpec = Union[pa.DataType, Tuple[pa.DataType, ...], Tuple[Callable[[pa.DataType], bool], str]]


def _type_ok(spec: TypeSpec, t: pa.DataType) -> Tuple[bool, str]:
    if isinstance(spec, pa.DataType):
        return t == spec, str(spec)
    if len(spec) == 2 and callable(spec[0]):
        return bool(spec[0](t)), spec[1]
    return t in spec, " or ".join(str(s) for s in spec)


def batch_digest(batch: pa.RecordBatch) -> str:
    """Hex SHA-256 of the IPC serialisation of `batch` and of its schema (what :func:`arrow_file_writer` stores with
    each batch; the schema is included so that a changed column name or type does not go unnoticed)."""
    h = hashlib.sha256(batch.schema.serialize())
    h.update(batch.serialize())
    return h.hexdigest()


def _canonical(batch: pa.RecordBatch) -> pa.RecordBatch:
    # a sliced / chunked batch serialises like the batch read back from the file only after one round trip
    return pa.ipc.read_record_batch(batch.serialize(), batch.schema)


def _read_batches(path: str, verify_digest: bool) -> pa.Table:
    try:
        source = pa.memory_map(path, "r")
    except OSError as e:
        raise ArrowFileError(f"arrow file {path!r} cannot be opened: {e}") from e
    try:
        reader = pa.ipc.open_file(source)
        _check_field_names(reader.schema)
        batches = []
        for i in range(reader.num_record_batches):
            batch, meta = reader.get_batch_with_custom_metadata(i)
            batch.validate(full=True)
            if verify_digest and meta is not None and DIGEST_KEY in meta:
                expected = meta[DIGEST_KEY].decode("ascii", "replace")
                if batch_digest(batch) != expected:
                    raise ArrowFileError(f"arrow file {path!r}: record batch {i} does not match its SHA-256 digest "
                                         f"(the file was modified or corrupted after it was written); re-write it")
            batches.append(batch)
        return pa.Table.from_batches(batches, schema=reader.schema)
    except ArrowFileError:
        raise
    except (pa.ArrowException, OSError, ValueError, UnicodeDecodeError) as e:
        raise ArrowFileError(f"arrow file {path!r} is corrupt or not an Arrow IPC file: {type(e).__name__}: {e}") \
            from e


def _check_field_names(schema: pa.Schema) -> None:
    """Decode every (nested) field name: a corrupted name raises here, inside the guarded read."""
    def visit(t: pa.DataType) -> None:
        for i in range(t.num_fields):
            field = t.field(i)
            field.name
            visit(field.type)
    for field in schema:
        field.name
        visit(field.type)


def _nested_nulls(col: pa.ChunkedArray) -> int:
    """Nulls inside list values (recursively), 0 for non-list columns and list<null> columns (empty lists)."""
    t = col.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t)) or pa.types.is_null(t.value_type):
        return 0
    flat = pc.list_flatten(col)
    return flat.null_count + _nested_nulls(flat if isinstance(flat, pa.ChunkedArray) else pa.chunked_array([flat]))


def check_columns(table: pa.Table, path: str, columns: Mapping[str, TypeSpec]) -> None:
    """Every column of `columns` exists, has an accepted type and holds no nulls; ArrowFileError naming `path`."""
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ArrowFileError(f"arrow file {path!r} lacks required column(s) {missing}; it has {table.column_names}")
    for name, spec in columns.items():
        col = table[name]
        ok, expected = _type_ok(spec, col.type)
        if not ok:
            raise ArrowFileError(f"arrow file {path!r}: column {name!r} has type {col.type}, expected {expected}")
        nulls = col.null_count
        if nulls:
            raise ArrowFileError(f"arrow file {path!r}: column {name!r} has {nulls} null value(s); a required "
                                 f"column must be filled in every row")
        inner = _nested_nulls(col)
        if inner:
            raise ArrowFileError(f"arrow file {path!r}: column {name!r} has {inner} null value(s) inside its lists")


def read_arrow_table(path: str, required_columns: Union[Sequence[str], Mapping[str, TypeSpec]] = (),
                     verify_digest: bool = True) -> pa.Table:
    """Read and validate a whole arrow IPC file (memory-mapped), see the module docstring.

    `required_columns`: names that must exist, or {name: type spec} (exists, accepted type, no nulls).
    `verify_digest=False` skips only the digest check (which reads every byte): for re-opening a file that was
    already verified in this run, e.g. in DataLoader workers; the structural validation always runs."""
    if not os.path.isfile(path):
        raise ArrowFileError(f"arrow file not found: {path!r} (write it with the matching write_*.py first)")
    table = _read_batches(path, verify_digest)
    if isinstance(required_columns, Mapping):
        check_columns(table, path, required_columns)
    else:
        missing = [c for c in required_columns if c not in table.column_names]
        if missing:
            raise ArrowFileError(f"arrow file {path!r} lacks required column(s) {missing}; it has "
                                 f"{table.column_names}")
    return table


class _DigestingWriter:
    """A RecordBatchFileWriter front that stores each batch's :data:`DIGEST_KEY` with it."""

    def __init__(self, writer: pa.ipc.RecordBatchFileWriter):
        self._writer = writer

    def write_batch(self, batch: pa.RecordBatch) -> None:
        batch = _canonical(batch)
        self._writer.write_batch(batch, custom_metadata={DIGEST_KEY: batch_digest(batch).encode("ascii")})

    def write_table(self, table: pa.Table) -> None:
        for batch in table.to_batches():
            self.write_batch(batch)


@contextmanager
def arrow_file_writer(path: str, schema: pa.Schema) -> Iterator[_DigestingWriter]:
    """Stream record batches into `path` (``write_batch`` / ``write_table``, each batch with its digest); the file
    only appears (atomically) if the block finishes."""
    with atomic_path(path) as tmp:
        with pa.OSFile(tmp, "wb") as sink:
            with pa.ipc.new_file(sink, schema) as writer:
                yield _DigestingWriter(writer)


def write_arrow_table(table: pa.Table, path: str) -> None:
    """Write a whole table to `path` atomically."""
    with arrow_file_writer(path, table.schema) as writer:
        writer.write_table(table)
