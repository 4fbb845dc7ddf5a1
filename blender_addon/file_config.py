"""The CLI's configuration files in Blender: ``backends.toml`` and the
``alerts.toml`` next to it, found the way the CLI finds them
(``$MOVIE_DIRECTOR_METRICS_CONFIG``, else the per-user config directory),
or at a path the preferences name.

With "Configuration: backends.toml" in the preferences, the same file
drives ``movie-director-metrics watch`` and the add-on: no backend is
configured twice.  The files are read on a worker thread
(:class:`FileWatcher`: a stat every :data:`WATCH_S` seconds, a read only
when a file's size or modification time changed), never in the timer tick,
and handed to the tick as one frozen :class:`FileConfig` through the
runtime's queue.  A file that fails to parse keeps nothing half-read: the
whole file is refused with the parser's own message (file, table, key,
what was expected), shown in the preferences and the Connection panel.

Nothing here imports ``bpy``.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Seconds between looks at the files' size and modification time.
WATCH_S = 2.0


@dataclass(frozen=True)
class FileConfig:
    """What the two files said at one moment (plain values, any thread)."""

    #: The backends file read (resolved path as text).
    path: str
    alerts_path: str = ""
    #: ``BackendConfig`` objects; empty when the file is refused.
    backends: tuple[Any, ...] = ()
    #: The alerts file's text ("" when there is none), already checked by
    #: the engine's rule parser; the tick loads it into the alert manager.
    rules_text: str = ""
    #: The alerts file's ``[[notify]]`` targets (``alerts.NotifyTarget``).
    targets: tuple[Any, ...] = ()
    #: Why the backends file was refused ("" when it was read).
    error: str = ""
    #: Why the alerts file was refused ("" when it was read or absent).
    alerts_error: str = ""


def resolve_path(configured: str) -> Path:
    """The backends file: ``configured`` (``~`` expanded) when set, else the
    CLI's :func:`~movie_director_metrics.collectors.config.default_config_path`."""
    from movie_director_metrics.collectors.config import default_config_path

    return Path(os.path.expanduser(configured)) if configured.strip() else default_config_path()


def _stamp(p: Path) -> tuple[int, int] | None:
    try:
        st = p.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def read_file_config(path: Path) -> FileConfig:
    """Reads and checks both files (I/O: worker threads and operators only)."""
    from movie_director_metrics.alerts import load_alerts_file
    from movie_director_metrics.collectors.config import default_alerts_path, load_config
    from movie_director_metrics.errors import ConfigError

    alerts = default_alerts_path(path)
    try:
        backends = tuple(load_config(path))
        error = ""
    except ConfigError as e:
        backends, error = (), str(e)
    rules_text, alerts_error, targets = "", "", ()
    if alerts.exists():
        try:
            text = alerts.read_text(encoding="utf-8")
            targets = load_alerts_file(text).targets  # rules and targets checked: all or nothing
            rules_text = text
        except ConfigError as e:
            alerts_error = f"{alerts}: {str(e).removeprefix('<alert rules>: ')}"
        except (OSError, UnicodeDecodeError) as e:
            alerts_error = f"{alerts}: cannot be read: {e}"
    return FileConfig(str(path), str(alerts), backends, rules_text, targets, error, alerts_error)


class FileWatcher:
    """A daemon thread that reads the files when they change and puts
    ``("file_config", FileConfig)`` on the runtime's queue: at once on
    start, then after every change of either file's size or mtime."""

    def __init__(self, path: Path, results: queue.SimpleQueue[Any], interval_s: float = WATCH_S) -> None:
        self.path = path
        self._results = results
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="mdm-config-file", daemon=True)

    def start(self) -> FileWatcher:
        self.thread.start()
        return self

    def _run(self) -> None:
        from movie_director_metrics.collectors.config import default_alerts_path

        alerts = default_alerts_path(self.path)
        seen: Any = object()
        while not self._stop.is_set():
            stamp = (_stamp(self.path), _stamp(alerts))
            if stamp != seen:
                seen = stamp
                try:
                    cfg = read_file_config(self.path)
                except Exception as e:  # never let the watcher die silently
                    cfg = FileConfig(str(self.path), error=f"{type(e).__name__}: {e}")
                if self._stop.is_set():
                    return
                self._results.put(("file_config", cfg))
            self._stop.wait(self._interval_s)

    def stop(self, timeout_s: float = 3.0) -> None:
        self._stop.set()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout_s)
