"""Arrow IPC files as upstream ViLT/METER write and read them (one table per file, RecordBatchFileWriter).

Every reader and writer of the project goes through these functions so that a missing or corrupt file gives one
clear error naming the file, and every written file appears atomically (written to a temporary name, then renamed).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator, Sequence

import pyarrow as pa

from shared_apt.peft.atomic import atomic_path


class ArrowFileError(RuntimeError):
    """A dataset file is missing, unreadable, or lacks a column the dataset needs."""


def read_arrow_table(path: str, required_columns: Sequence[str] = ()) -> pa.Table:
    """Read a whole arrow IPC file (memory-mapped); check that `required_columns` exist."""
    if not os.path.isfile(path):
        raise ArrowFileError(f"arrow file not found: {path!r} (write it with the matching write_*.py first)")
    try:
        table = pa.ipc.RecordBatchFileReader(pa.memory_map(path, "r")).read_all()
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
        raise ArrowFileError(f"arrow file {path!r} is corrupt or not an Arrow IPC file: {e}") from e
    missing = [c for c in required_columns if c not in table.column_names]
    if missing:
        raise ArrowFileError(
            f"arrow file {path!r} lacks column(s) {missing}; it has {table.column_names}"
        )
    return table


@contextmanager
def arrow_file_writer(path: str, schema: pa.Schema) -> Iterator[pa.RecordBatchFileWriter]:
    """Stream record batches into `path`; the file only appears (atomically) if the block finishes."""
    with atomic_path(path) as tmp:
        with pa.OSFile(tmp, "wb") as sink:
            with pa.ipc.new_file(sink, schema) as writer:
                yield writer


def write_arrow_table(table: pa.Table, path: str) -> None:
    """Write a whole table to `path` atomically."""
    with arrow_file_writer(path, table.schema) as writer:
        writer.write_table(table)
