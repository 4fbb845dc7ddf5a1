"""What the Outages panel shows: a 24 h heartbeat strip per backend and
the last outages (start, duration, cause), built from the engine's health
runs (``Monitor.heartbeat`` and ``Monitor.incidents(history=False)``:
memory only, no file, no lock) — no ``bpy`` here, so tests build it from
a real monitor without Blender.

The strips are drawn as one image (:func:`strip_rows`, :mod:`charts`):
Blender shows a preview icon square and centred, so one square image holds
every backend's strip, each as tall as its label rows beside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .view import fmt_age

#: Heartbeat cells over the 24 h (30 minutes each).
CELLS = 48
#: The strip's span, seconds.
SPAN_S = 86_400
#: Outages listed (newest first); the rest are counted.
MAX_INCIDENTS = 10
#: Backends per strip image (one image per group: the image is as many
#: UI units wide as it is tall, and a sidebar is ~12 units wide).
STRIPS_PER_IMAGE = 12


@dataclass(frozen=True)
class Strip:
    """One backend's 24 h: ``cells`` are ``incidents.CellState`` values
    (0 unknown, 1 up, 2 down, 3 both), oldest first."""

    name: str
    cells: tuple[int, ...]
    #: "2 outages, 1 min down" / "no outage" / "no results" (24 h).
    summary: str


@dataclass(frozen=True)
class IncidentRow:
    service: str
    #: "12 min ago" (its start).
    when: str
    #: "40 s", or "ongoing 3 min".
    duration: str
    cause: str
    ongoing: bool
    detail: str = ""


@dataclass(frozen=True)
class OutagesView:
    available: bool
    note: str = ""
    strips: tuple[Strip, ...] = ()
    incidents: tuple[IncidentRow, ...] = ()
    incidents_more: int = 0


def fmt_span(seconds: float) -> str:
    """An outage's length to the second: "40 s", "1 min 30 s", "2 h 05 min"."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s" if s % 60 else f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def incident_row(i: Any, now: float) -> IncidentRow:
    """An ``incidents.Incident`` as a row."""
    duration = f"ongoing {fmt_span(i.duration_s)}" if i.end is None else fmt_span(i.duration_s)
    return IncidentRow(i.service, fmt_age(now - i.start), duration, i.cause, i.end is None, (i.detail or "")[:80])


def summary(cells: Sequence[int], incidents: Sequence[Any]) -> str:
    if not any(cells):
        return "no results"
    if not incidents:
        return "no outage"
    down = sum(i.duration_s for i in incidents)
    n = len(incidents)
    return f"{n} outage{'s' if n != 1 else ''}, {fmt_span(down)} down"


def build_outages(
    names: Sequence[str],
    heartbeat: Callable[[str], Sequence[int]] | None,
    incidents: Callable[[], Sequence[Any]] | None,
    now: float | None = None,
    why_not: str = "",
) -> OutagesView:
    """The panel for the backends ``names`` (the Connection panel's order):
    ``heartbeat(name)`` gives the cells (``Monitor.heartbeat``),
    ``incidents()`` the last 24 h's outages newest first
    (``Monitor.incidents("24h", history=False)``).  None: the engine has no
    outage history (``why_not`` says why)."""
    if heartbeat is None or incidents is None:
        return OutagesView(False, f"Outage history not available: {why_not}" if why_not else "Outage history not available")
    t = time.time() if now is None else now
    try:
        found = list(incidents())
        cells = {n: tuple(int(c) for c in heartbeat(n)) for n in names}
    except Exception as e:  # the engine's own error, shown as is
        return OutagesView(False, f"Outages: {type(e).__name__}: {e}")
    by_service: dict[str, list[Any]] = {}
    for i in found:
        by_service.setdefault(i.service, []).append(i)
    strips = tuple(Strip(n, cells[n], summary(cells[n], by_service.get(n, ()))) for n in names)
    rows = tuple(incident_row(i, t) for i in found[:MAX_INCIDENTS])
    note = "" if found else "No outage in the last 24 h"
    return OutagesView(True, note, strips, rows, max(0, len(found) - MAX_INCIDENTS))


def strip_rows(strips: Sequence[Strip]) -> tuple[int, ...]:
    """UI rows each strip takes: two (name, then summary) up to 6 backends,
    one beyond, so the square image stays at most STRIPS_PER_IMAGE units."""
    per = 2 if len(strips) <= STRIPS_PER_IMAGE // 2 else 1
    return tuple(per for _ in strips)


#: The text stand-in for a strip where previews have no icons (background
#: mode): one character per cell, by ``CellState``.
CELL_CHARS = ("·", "█", "▁", "▄")


def text_strip(cells: Sequence[int]) -> str:
    return "".join(CELL_CHARS[c] if 0 <= c < len(CELL_CHARS) else "?" for c in cells)
