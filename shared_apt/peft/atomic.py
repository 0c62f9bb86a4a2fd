"""The one atomic-write helper: a file appears complete or not at all. It is written to a temporary file in the
target folder, given the permissions of a plain ``open`` (0666 less the umask; ``mkstemp`` alone would leave 0600),
then renamed with ``os.replace``; the temporary file is removed whatever happens. Temporary names
``.tmp-<pid>-<name>.…`` let :func:`remove_stale_temp_files` recognise what a killed process left behind."""
from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from contextlib import contextmanager
from typing import Any, Callable, Iterator

log = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path next to ``path`` (folders created); when the block ends without error it replaces
    ``path``."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=f"{TEMP_PREFIX}{os.getpid()}-{os.path.basename(path)}.")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(folder: str) -> list:
    """Delete ``.tmp-<pid>-*`` files of :func:`atomic_write` in ``folder`` whose process is gone (a run killed
    while writing); files of running processes are kept. Returns the removed paths."""
    removed = []
    if not os.path.isdir(folder):
        return removed
    for name in sorted(os.listdir(folder)):
        m = re.match(re.escape(TEMP_PREFIX) + r"(\d+)-", name)
        if m and not _pid_alive(int(m.group(1))):
            path = os.path.join(folder, name)
            os.remove(path)
            removed.append(path)
    if removed:
        shown = ", ".join(removed[:12]) + (f", ... (+{len(removed) - 12})" if len(removed) > 12 else "")
        log.warning("removed %d temporary file(s) of an interrupted checkpoint write: %s", len(removed), shown)
    return removed
