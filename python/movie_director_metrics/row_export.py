"""One file of rows for a time range: CSV (a header of ``columns``, one
row each, empty cells for ``None``) or JSON (``{"schema_version",
"generated_at", "generator", "window", <key>: [...]}``), written
atomically.  The jobs export (``Monitor.export_jobs``) and the incidents
export (``Monitor.export_incidents``) are this with their own rows; the
argument checks and the range are ``Monitor.export``'s.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from . import _core
from .atomic import write_atomic
from .errors import InvalidValueError, MonitorClosedError
from .paths import expand_user
from .ranges import TimeRange, iso_utc, resolve_range

if TYPE_CHECKING:
    from .monitor import Monitor

__all__ = ["export_rows"]


def export_rows(
    monitor: Monitor,
    path: str | os.PathLike[str],
    format: Literal["csv", "json"],
    *,
    window: str | float | None,
    start: float | None,
    end: float | None,
    key: str,
    schema_version: int,
    columns: Sequence[str],
    read: Callable[[TimeRange], Sequence[Any]],
    as_dicts: Callable[[Sequence[Any]], list[dict[str, Any]]],
    csv_cell: Callable[[str, Any], Any] = lambda column, value: value,
) -> Path:
    """Writes ``read(range)`` (default range: the last 24 h) to ``path``;
    returns the absolute path.  ``as_dicts`` turns the rows into JSON
    objects keyed by ``columns``; ``csv_cell(column, value)`` flattens a
    value for a CSV cell (a dict into JSON text, say)."""
    if format not in ("csv", "json"):
        raise InvalidValueError(f"format={format!r} is not supported: expected 'csv' or 'json'")
    if monitor.closed:
        raise MonitorClosedError("the monitor is closed: export before close()")
    target = expand_user(path, "export path", InvalidValueError).absolute()
    rng = resolve_range(window, start, end, monitor.now())
    dicts = as_dicts(read(rng))
    if format == "csv":

        def write_csv(f: Any) -> None:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(columns)
            for d in dicts:
                w.writerow(["" if d[c] is None else csv_cell(c, d[c]) for c in columns])

        write_atomic(target, write_csv)
    else:
        doc = {
            "schema_version": schema_version,
            "generated_at": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "generator": f"movie_director_metrics {_core.__version__}",
            "window": {"start": iso_utc(rng.lo), "end": iso_utc(rng.hi), "start_epoch_s": rng.lo, "end_epoch_s": rng.hi},
            key: dicts,
        }
        write_atomic(target, lambda f: json.dump(doc, f, indent=1, allow_nan=False))
    return target
