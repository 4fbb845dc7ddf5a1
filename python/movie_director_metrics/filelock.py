"""The owner lock of a history file: one process owns ``<db>`` at a time,
by an exclusive lock on ``<db>.lock``.  The lock file holds the owner's
pid, host and start time, which the next process's
:class:`~movie_director_metrics.errors.StorageLockedError` names.  The OS
drops the lock when the owner dies, even by ``kill -9``.

How the lock is taken is a small strategy (``try_lock(f)`` / ``unlock(f)``,
chosen by ``sys.platform`` when the lock is taken), so that the same tests
drive both:

- POSIX (:class:`FlockStrategy`): ``flock(2)`` on the whole file.  It is
  advisory, so anyone can read the owner text, and it belongs to the open
  file description: a second ``open()`` in the same process is refused as
  well, and closing some other descriptor of the file does not drop it
  (``fcntl``/``lockf`` record locks get both wrong).
- Windows (:class:`MsvcrtStrategy`): ``msvcrt.locking(fd, LK_NBLCK, 1)``
  locks one byte at the file's current position and raises ``OSError`` at
  once when another handle holds it.  Each process must lock the same byte,
  so it seeks there first: the file is opened for appending, which puts the
  position at the end, and the end moves with the owner text.  Windows
  locks are mandatory: nobody else can read a locked byte.  So the byte is
  :data:`MSVCRT_LOCK_OFFSET`, far past the owner text (a lock past the end
  of a file is allowed and does not grow it; SQLite puts its own Windows
  lock bytes at 1 GiB for the same reason), and a refused process can
  still read whom it is waiting for.

The file is opened ``"a+b"``: created when missing, and never truncated by
opening it, so a process that is refused leaves the owner's text as it
was; only the new owner rewrites it, after it holds the lock.  Unbuffered,
so that ``seek`` moves the descriptor's position itself, which is what
``msvcrt.locking`` reads.
"""

from __future__ import annotations

import datetime as _dt
import os
import socket
import sys
from pathlib import Path
from typing import BinaryIO, Protocol

from .errors import StorageLockedError

#: The byte :class:`MsvcrtStrategy` locks: 1 GiB into the lock file, which
#: never holds more than a line of text.
MSVCRT_LOCK_OFFSET = 1 << 30

#: The most of a lock file read for the owner's description.
_OWNER_MAX_BYTES = 4096


class LockStrategy(Protocol):
    def try_lock(self, f: BinaryIO) -> None:
        """Takes the exclusive lock on ``f`` without waiting; ``OSError``
        when another open file holds it."""

    def unlock(self, f: BinaryIO) -> None:
        """Drops the lock :meth:`try_lock` took on ``f``."""


class FlockStrategy:
    """POSIX: ``flock(LOCK_EX | LOCK_NB)`` on the whole file."""

    def try_lock(self, f: BinaryIO) -> None:
        if sys.platform == "win32":
            raise NotImplementedError("fcntl.flock does not exist on Windows: use MsvcrtStrategy")
        import fcntl

        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)

    def unlock(self, f: BinaryIO) -> None:
        if sys.platform == "win32":
            raise NotImplementedError("fcntl.flock does not exist on Windows: use MsvcrtStrategy")
        import fcntl

        fcntl.flock(f.fileno(), fcntl.LOCK_UN)


class MsvcrtStrategy:
    """Windows: ``msvcrt.locking`` of the one byte at :data:`MSVCRT_LOCK_OFFSET`."""

    def try_lock(self, f: BinaryIO) -> None:
        if sys.platform != "win32":
            raise NotImplementedError("msvcrt exists on Windows only: use FlockStrategy")
        import msvcrt

        f.seek(MSVCRT_LOCK_OFFSET)  # msvcrt.locking locks nbytes from the current position
        msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)

    def unlock(self, f: BinaryIO) -> None:
        if sys.platform != "win32":
            raise NotImplementedError("msvcrt exists on Windows only: use FlockStrategy")
        import msvcrt

        # Explicitly, before closing: Windows drops the locks of a closed
        # handle only "when resources allow".
        f.seek(MSVCRT_LOCK_OFFSET)
        msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)


def platform_strategy() -> LockStrategy:
    """The strategy for this OS (``sys.platform`` read now)."""
    return MsvcrtStrategy() if sys.platform == "win32" else FlockStrategy()


class OwnerLock:
    """An exclusive lock on ``<db>.lock`` holding the owner's pid, host and
    start time (see the module docs)."""

    def __init__(self, db: Path, strategy: LockStrategy | None = None) -> None:
        self.db = db
        self.path = db.with_name(db.name + ".lock")
        self.strategy = strategy
        self._file: BinaryIO | None = None
        self._held_with: LockStrategy | None = None

    def acquire(self) -> None:
        """Takes the lock, or raises ``StorageLockedError`` naming the owner
        (``OSError`` when the lock file cannot be opened at all)."""
        strategy = self.strategy or platform_strategy()
        f: BinaryIO = open(self.path, "a+b", buffering=0)  # kept open while owned
        try:
            strategy.try_lock(f)
        except OSError:
            owner = self._read_owner(f)
            f.close()
            raise StorageLockedError(
                f"{self.db} is in use by {owner}; close that program, or pass "
                "storage=<another file> (or storage=None to keep history in memory)",
                path=str(self.db),
                owner=owner,
            ) from None
        except BaseException:
            f.close()
            raise
        self._file, self._held_with = f, strategy
        text = (
            f"process {os.getpid()} on {socket.gethostname()} "
            f"(since {_dt.datetime.now(_dt.UTC).isoformat(timespec='seconds')})"
        )
        try:
            f.seek(0)
            f.truncate()
            data = memoryview(text.encode("utf-8"))
            while data:
                data = data[f.write(data) :]
        except OSError:
            # A full disk: the lock is what keeps a second writer out; the
            # text only names the owner, and a refused process then says
            # "an unknown process".
            pass

    @staticmethod
    def _read_owner(f: BinaryIO) -> str:
        try:
            f.seek(0)
            text = f.read(_OWNER_MAX_BYTES).decode("utf-8", "replace").strip()
        except OSError:
            text = ""
        return text or "an unknown process"

    @property
    def held(self) -> bool:
        return self._file is not None

    def release(self) -> None:
        f, strategy = self._file, self._held_with
        if f is None or strategy is None:
            return
        self._file = self._held_with = None
        try:
            strategy.unlock(f)
        except OSError:
            pass  # closing drops it too
        finally:
            f.close()
