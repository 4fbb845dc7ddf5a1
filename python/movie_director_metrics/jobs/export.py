"""Finished jobs to a file, and the job rows of a time range.

CSV columns are :data:`~.rows.JOB_COLUMNS` (``tags`` as a JSON object in
one cell); JSON is ``{"schema_version", "generated_at", "window", "jobs":
[...]}`` with the same keys per job.  The main JSON export
(``Monitor.export``) carries the same job objects under ``"jobs"``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..errors import InvalidValueError, StorageError
from ..ranges import TimeRange
from ..row_export import export_rows
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


def job_dicts(rows: Sequence[JobRow]) -> list[dict[str, Any]]:
    """Rows as JSON objects (``JOB_COLUMNS`` keys)."""
    return [r.as_dict() for r in rows]


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
    chosen = set(services) if services is not None else None
    return export_rows(
        monitor, path, format, window=window, start=start, end=end,
        key="jobs", schema_version=JOBS_SCHEMA_VERSION, columns=JOB_COLUMNS,
        read=lambda rng: rows_in_range(monitor, rng, chosen), as_dicts=job_dicts,
        # tags: a JSON object in one cell
        csv_cell=lambda column, value: json.dumps(value, ensure_ascii=False, sort_keys=True) if column == "tags" else value,
    )
