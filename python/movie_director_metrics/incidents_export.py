"""Incidents to a file: CSV (columns :data:`~.incidents.INCIDENT_FIELDS`)
or JSON (``{"schema_version", "generated_at", "generator", "window",
"incidents": [...]}``), oldest first, as the jobs export writes jobs.  The
main JSON export (``Monitor.export``) carries the same incident objects
under ``"incidents"`` (``schemas/export.schema.json``).

Empty cells (CSV) and ``null`` (JSON) mean "none": an ongoing incident's
end, a detail or probe count nothing recorded.  Times are UTC.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .incidents import INCIDENT_FIELDS, Incident, incidents_in_range
from .ranges import TimeRange
from .row_export import export_rows

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
    chosen = list(services) if services is not None else None
    return export_rows(
        monitor, path, format, window=window, start=start, end=end,
        key="incidents", schema_version=INCIDENTS_SCHEMA_VERSION, columns=INCIDENT_FIELDS,
        read=lambda rng: incidents_for_export(monitor, rng, chosen), as_dicts=incident_dicts,
    )
