"""Atomic file writes, for every file the package writes for a reader
(exports of statistics, alert events and LLM figures).

:func:`write_atomic` writes into a temporary file in the target directory,
fsyncs it, gives it the mode the file would have had (an existing file's,
else what the umask leaves of 0666) and renames it over the target: readers
see the old file or the new one, never a part.  Any failure removes the
temporary file, leaves an existing target untouched and raises
:class:`~movie_director_metrics.errors.ExportError`.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from .errors import ExportError

__all__ = ["write_atomic"]


def _new_file_mode(path: Path) -> int:
    """An existing file's mode, else what ``open()`` would give a new one
    (the temporary file starts private, 0600)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        pass
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o644


def write_atomic(path: Path, write: Callable[[IO[str]], None]) -> None:
    """Calls ``write`` with a text file (UTF-8, no newline translation) and
    puts what it wrote at ``path`` atomically and durably; ``ExportError``
    (an ``OSError``) naming the path and the cause when it cannot, and then
    nothing is left behind."""
    tmp: str | None = None
    try:
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", newline="", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
        ) as f:
            tmp = f.name
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _new_file_mode(path))
        os.replace(tmp, path)
        tmp = None
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if not isinstance(e, Exception):
            raise
        if isinstance(e, FileNotFoundError) and not path.parent.is_dir():
            cause = f"the directory {path.parent} does not exist"
        elif isinstance(e, OSError) and e.strerror:
            cause = e.strerror
        else:
            cause = f"{type(e).__name__}: {e}"
        raise ExportError(f"cannot write the export to {path}: {cause}; nothing was written") from e
    # The rename is durable once the directory entry is (POSIX; a no-op elsewhere).
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
