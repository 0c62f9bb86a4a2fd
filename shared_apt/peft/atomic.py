"""The one atomic-write helper: a file appears complete or not at all (written to a temporary file in the target
folder, then renamed with ``os.replace``; the temporary file is removed whatever happens)."""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from typing import Any, Callable, Iterator


@contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path next to ``path`` (folders created); when the block ends without error it replaces
    ``path``."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-" + os.path.basename(path))
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write(path: str, write: Callable[[str], Any]) -> None:
    """``write(tmp_path)`` fills the temporary file, which then replaces ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)


def atomic_write_json(path: str, obj: Any, **dump_options) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, **dump_options)

    atomic_write(path, write)
