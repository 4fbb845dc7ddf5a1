"""Firing alerts where the user looks anyway: the header of the sidebar's
top panel ("Connection Status", drawn even while it is collapsed: count
and worst severity) and Blender's status bar at the bottom of the window
(count, worst severity and the newest alert).

A firing alert used to show only inside the Alerts panel, a child of the
closed-by-default Health Monitoring panel: invisible until the user
opened two panels.  Now the tick reduces the alert manager's firing
states to one :class:`AlertBanner` (count, worst severity, the newest
alert's text) every tick — also while no sidebar shows the panels, since
the status bar is always on screen — and tags the status bar and the
sidebars for redraw only when the banner changed.

Drawing reads the banner the tick built and nothing else (no engine call,
no I/O).  Nothing here writes to ``bpy.data``: a redraw tag and a label
do not mark the .blend as modified.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

#: Worst first; the engine's ``alerts.SEVERITIES`` in reverse (kept here:
#: the add-on must register even when the bundled engine fails to import).
SEVERITY_ORDER = ("critical", "warning", "info")

#: Icons present in every Blender from 4.2 on.
SEVERITY_ICONS = {"critical": "CANCEL", "warning": "ERROR", "info": "INFO"}

@dataclass(frozen=True)
class AlertBanner:
    """What the header and the status bar say about firing alerts."""

    count: int = 0
    #: "critical" | "warning" | "info"; "" when nothing fires.
    worst: str = ""
    #: The newest firing alert: ``[severity] rule on target``.
    newest: str = ""

    @property
    def icon(self) -> str:
        return SEVERITY_ICONS.get(self.worst, "INFO")

    @property
    def summary(self) -> str:
        """``2 alerts (critical)``: the count and the worst severity."""
        if not self.count:
            return ""
        return f"{self.count} alert{'s' if self.count != 1 else ''} ({self.worst})"

    @property
    def status_text(self) -> str:
        """The status bar's text: summary, then the newest alert."""
        return f"{self.summary}: newest {self.newest}" if self.count else ""

    @property
    def header_text(self) -> str:
        """The panel header's text: count and worst severity (``2 critical``).
        Short on purpose: the header's right end grows over the panel's
        title, so the newest alert's text is the status bar's."""
        return f"{self.count} {self.worst}" if self.count else ""


NONE = AlertBanner()


def build_banner(firing: Iterable[Any]) -> AlertBanner:
    """The banner of ``AlertManager.firing()`` (``AlertState`` objects:
    rule, target, severity, since).  Severities the add-on does not know
    rank below "info"."""
    states = list(firing)
    if not states:
        return NONE
    rank = {s: i for i, s in enumerate(SEVERITY_ORDER)}
    worst = min((str(s.severity) for s in states), key=lambda s: rank.get(s, len(rank)))
    newest = max(states, key=lambda s: (s.since, s.rule, s.target))
    return AlertBanner(count=len(states), worst=worst, newest=f"[{newest.severity}] {newest.rule} on {newest.target}")


def draw_header(layout: Any, banner: AlertBanner) -> None:
    """The right end of the top panel's header (``draw_header_preset``):
    nothing while no alert fires, so the header keeps its usual look."""
    if not banner.count:
        return
    row = layout.row(align=True)
    row.alert = banner.worst in ("critical", "warning")
    row.label(text=banner.header_text, icon=banner.icon)


def draw_status_bar(layout: Any, banner: AlertBanner) -> None:
    """The status bar's part (appended to ``STATUSBAR_HT_header``)."""
    if not banner.count:
        return
    row = layout.row(align=True)
    row.alert = banner.worst in ("critical", "warning")
    row.label(text=f"Movie Director: {banner.status_text}", icon=banner.icon)


def tag_status_bars(context: Any) -> int:
    """Tags every window's status bar for redraw; returns how many."""
    n = 0
    wm = getattr(context, "window_manager", None)
    for win in getattr(wm, "windows", ()):
        screen = win.screen
        if screen is None:
            continue
        for area in screen.areas:
            if area.type == "STATUSBAR":
                area.tag_redraw()
                n += 1
    return n
