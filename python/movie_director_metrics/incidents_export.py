"""Incidents to a file: CSV (columns :data:`~.incidents.INCIDENT_FIELDS`)
or JSON (``{"schema_version", "generated_at", "generator", "window",
"incidents": [...]}``), oldest first, as the jobs export writes jobs.  The
main JSON export (``Monitor.export``) carries the same incident objects
under ``"incidents"`` (``schemas/export.schema.json``).

Empty cells (CSV) and ``null`` (JSON) mean "none": an ongoing incident's
end, a detail or probe count nothing recorded.  Times are UTC.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from . import _core
from .atomic import write_atomic
from .errors import InvalidValueError, MonitorClosedError
from .incidents import INCIDENT_FIELDS, Incident, incidents_in_range
from .paths import expand_user
from .ranges import TimeRange, iso_utc, resolve_range

if TYPE_CHECKING:
    from .monitor import Monitor

__all__ = ["INCIDENTS_SCHEMA_VERSION", "export_incidents", "incident_dicts", "incidents_for_export"]

#: Version of the incidents JSON layout.
INCIDENTS_SCHEMA_VERSION = 1


def incidents_for_export(monitor: Monitor, rng: TimeRange, services: Sequence[str] | None) -> list[Incident]:
    """Incidents overlapping the range, oldest first, from the engine and
    the history file."""
    return incidents_in_range(monitor, rng, services)


def incident_dicts(incidents: Sequence[Incident]) -> list[dict[str, Any]]:
    """Incidents as JSON objects (:data:`INCIDENT_FIELDS` keys)."""
    return [i.as_dict() for i in incidents]


def _write_csv(f: IO[str], incidents: Sequence[Incident]) -> None:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(INCIDENT_FIELDS)
    for d in incident_dicts(incidents):
        w.writerow(["" if d[c] is None else d[c] for c in INCIDENT_FIELDS])


def export_incidents(
    monitor: Monitor,
    path: str | os.PathLike[str],
    format: Literal["csv", "json"] = "csv",
    *,
    window: str | float | None = None,
    start: float | None = None,
    end: float | None = None,
    services: Sequence[str] | None = None,
) -> Path:
    """Writes the incidents overlapping the range (default the last 24 h)
    to ``path`` atomically; returns the path.  Same range arguments and
    errors as ``Monitor.export``; unknown service names select nothing."""
    if format not in ("csv", "json"):
        raise InvalidValueError(f"format={format!r} is not supported: expected 'csv' or 'json'")
    if monitor.closed:
        raise MonitorClosedError("the monitor is closed: export before close()")
    target = expand_user(path, "export path", InvalidValueError).absolute()
    rng = resolve_range(window, start, end, monitor.now())
    rows = incidents_for_export(monitor, rng, list(services) if services is not None else None)
    if format == "csv":
        write_atomic(target, lambda f: _write_csv(f, rows))
    else:
        doc = {
            "schema_version": INCIDENTS_SCHEMA_VERSION,
            "generated_at": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "generator": f"movie_director_metrics {_core.__version__}",
            "window": {"start": iso_utc(rng.lo), "end": iso_utc(rng.hi), "start_epoch_s": rng.lo,
                       "end_epoch_s": rng.hi},
            "incidents": incident_dicts(rows),
        }
        write_atomic(target, lambda f: json.dump(doc, f, indent=1, allow_nan=False))
    return target
