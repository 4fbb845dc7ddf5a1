"""Small layout pieces shared by the panels and dialogs: status dots,
threshold bars, and the narrow/wide decision.

Icons are ones present in every Blender from 4.2 to 5.2: the theme's bone
colour sets (``COLORSET_xx_VEC``) for coloured dots, never the
``SEQUENCE_COLOR_xx``/``STRIP_COLOR_xx`` pair renamed in 4.4.
"""

from __future__ import annotations

from typing import Any

import bpy

from . import view as V

#: Sidebar width (in unscaled pixels) from which the panels add columns.
WIDE_PX = 340

LEVEL_ICONS = {
    V.LEVEL_OK: "COLORSET_03_VEC",  # green
    V.LEVEL_WARN: "COLORSET_09_VEC",  # yellow
    V.LEVEL_BAD: "COLORSET_01_VEC",  # red
    V.LEVEL_NONE: "DOT",
}

STATE_ICONS = {
    "up": "COLORSET_03_VEC",
    "degraded": "COLORSET_09_VEC",
    "down": "COLORSET_01_VEC",
    "loading": "TIME",  # answers, but its model is still loading
    "unknown": "COLORSET_13_VEC",  # grey
    "starting": "TIME",
    "blocked": "INTERNET_OFFLINE",
    "disabled": "PAUSE",
}

#: Feature detection, not version strings (layout.progress: 4.0+;
#: layout.panel: 4.1+).
_FUNCS = bpy.types.UILayout.bl_rna.functions
HAS_PROGRESS = "progress" in _FUNCS
HAS_PANEL = "panel" in _FUNCS


def state_icon(state: str) -> str:
    return STATE_ICONS.get(state, "QUESTION")


def is_wide(context: Any) -> bool:
    """True when the sidebar is wide enough for extra columns."""
    region = getattr(context, "region", None)
    width = getattr(region, "width", 0) or 0
    prefs = getattr(context, "preferences", None)
    # system.ui_scale (DPI x resolution scale) is 0 in background mode
    scale = (prefs.system.ui_scale or prefs.view.ui_scale) if prefs is not None else 1.0
    return width / max(scale, 0.25) >= WIDE_PX


def bar(layout: Any, b: V.Bar) -> None:
    """A threshold bar: coloured dot, then the bar with its text; red
    (``alert``) once the limit is crossed."""
    row = layout.row(align=True)
    row.alert = b.breach
    row.label(text="", icon=LEVEL_ICONS[b.level])
    if HAS_PROGRESS:
        row.progress(text=b.text, factor=b.factor, type="BAR")
    else:
        row.label(text=b.text)


def section(layout: Any, idname: str, default_closed: bool = True) -> tuple[Any, Any]:
    """A collapsible section: ``layout.panel`` where it exists, else an
    always-open box (header, body)."""
    if HAS_PANEL:
        return layout.panel(idname, default_closed=default_closed)
    box = layout.box()
    return box.row(), box.column()
