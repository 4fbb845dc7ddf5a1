"""Finished jobs to a file, and the job rows of a time range.

CSV columns are :data:`~.rows.JOB_COLUMNS` (``tags`` as a JSON object in
one cell); JSON is ``{"schema_version", "generated_at", "window", "jobs":
[...]}`` with the same keys per job.  The main JSON export
(``Monitor.export``) carries the same job objects under ``"jobs"``.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from .. import _core
from ..atomic import write_atomic
from ..errors import InvalidValueError, MonitorClosedError, StorageError
from ..paths import expand_user
from ..ranges import TimeRange, iso_utc, resolve_range
from .rows import JOB_COLUMNS, STORED_COLUMNS, JobRow

if TYPE_CHECKING:
    from ..monitor import Monitor

__all__ = ["JOBS_SCHEMA_VERSION", "export_jobs", "job_dicts", "rows_in_range"]

#: Version of the jobs JSON layout.
JOBS_SCHEMA_VERSION = 1


def rows_in_range(monitor: Monitor, rng: TimeRange, services: set[str] | None = None) -> list[JobRow]:
    """Jobs finished in ``[rng.lo, rng.hi)``, oldest first: from the
    history file (flushed first, so nothing recorded is missing) or, without
    one, from the tracker's recent rows."""
    rows: list[JobRow] = []
    if monitor.storage_path is not None:
        try:
            monitor.flush()
        except StorageError:
            pass  # what is on disk is still exported; the flush is retried later
        with monitor.storage_session() as st:
            stored = [] if st is None else st.recent("jobs", STORED_COLUMNS, rng.lo)
        for values in stored:
            try:
                rows.append(JobRow.from_stored(values))
            except InvalidValueError:
                continue  # a damaged stored row is skipped, never trusted
    else:
        tracker = monitor.existing_jobs()
        rows = list(reversed(tracker.recent())) if tracker is not None else []
    return [
        r for r in rows if rng.lo <= r.finished_at < rng.hi and (services is None or r.service in services)
    ]


def job_dicts(rows: list[JobRow]) -> list[dict[str, Any]]:
    """Rows as JSON objects (``JOB_COLUMNS`` keys)."""
    return [r.as_dict() for r in rows]


def _write_csv(f: IO[str], rows: list[JobRow]) -> None:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(JOB_COLUMNS)
    for r in rows:
        d = r.as_dict()
        d["tags"] = json.dumps(d["tags"], ensure_ascii=False, sort_keys=True)
        w.writerow(["" if d[c] is None else d[c] for c in JOB_COLUMNS])


def export_jobs(
    monitor: Monitor,
    path: str | os.PathLike[str],
    format: Literal["csv", "json"] = "csv",
    *,
    window: str | float | None = None,
    start: float | None = None,
    end: float | None = None,
    services: list[str] | None = None,
) -> Path:
    """Writes the jobs finished in the range (default the last 24 h) to
    ``path`` atomically; returns the path.  Same range arguments and errors
    as ``Monitor.export``."""
    if format not in ("csv", "json"):
        raise InvalidValueError(f"format={format!r} is not supported: expected 'csv' or 'json'")
    if monitor.closed:
        raise MonitorClosedError("the monitor is closed: export before close()")
    target = expand_user(path, "export path", InvalidValueError).absolute()
    rng = resolve_range(window, start, end, monitor.now())
    rows = rows_in_range(monitor, rng, set(services) if services is not None else None)
    if format == "csv":
        write_atomic(target, lambda f: _write_csv(f, rows))
    else:
        doc = {
            "schema_version": JOBS_SCHEMA_VERSION,
            "generated_at": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "generator": f"movie_director_metrics {_core.__version__}",
            "window": {"start": iso_utc(rng.lo), "end": iso_utc(rng.hi), "start_epoch_s": rng.lo,
                       "end_epoch_s": rng.hi},
            "jobs": job_dicts(rows),
        }
        write_atomic(target, lambda f: json.dump(doc, f, indent=1, allow_nan=False))
    return target
