"""Runtime UI state on the WindowManager (``wm.movie_director``): the time
range, the comparison table and its sorting, the Jobs panel's range,
grouping and sort column.

WindowManager properties are runtime-only: they are not saved with the
.blend and setting them from Python does not mark the file modified, so
monitoring never makes a scene dirty.  Nothing of this add-on lives on a
Scene or in ``bpy.data``.
"""

from typing import Any

import bpy
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty
from bpy.types import PropertyGroup

from . import jobs_view, runtime

WINDOW_ITEMS = (
    ("5m", "5m", "Last 5 minutes"),
    ("1h", "1h", "Last hour"),
    ("24h", "24h", "Last 24 hours"),
    ("7d", "7d", "Last 7 days (needs history storage)"),
    ("30d", "30d", "Last 30 days (needs history storage)"),
)

#: Metrics offered in Compare and Metrics History (a subset of the engine's
#: METRICS, with how to read them).
METRIC_ITEMS = (
    ("avg_ms", "Avg latency", "Mean request latency (lower is better)"),
    ("p95_ms", "p95 latency", "95th percentile latency (lower is better)"),
    ("p99_ms", "p99 latency", "99th percentile latency (lower is better)"),
    ("success_rate", "Success rate", "Successful / all requests (higher is better)"),
    ("uptime_pct", "Uptime", "Time-weighted uptime from health checks (higher is better)"),
    ("rpm", "Requests/min", "Requests per minute"),
    ("health_latency_ms", "Probe latency", "Mean health-probe latency"),
    ("processing_avg_ms", "Processing", "Mean job processing time"),
    ("queue_depth_avg", "Queue depth", "Mean running + pending jobs"),
    ("vram_used_bytes", "VRAM used", "VRAM in use"),
)

SORT_ITEMS = (
    ("RANK", "Rank", "Best first, as the engine ranks the metric", "SORTSIZE", 0),
    ("NAME", "Name", "Alphabetical", "SORTALPHA", 1),
)


#: The Jobs table: grouped by model or workflow (``jobs_view.BY``) ...
JOBS_BY_ITEMS = (
    (jobs_view.BY_MODEL, "Model", "One row per model"),
    (jobs_view.BY_WORKFLOW, "Workflow", "One row per workflow"),
)
#: ... and sorted by one column (``jobs_view.SORTS``: what needs attention first).
JOBS_SORT_ITEMS = (
    (jobs_view.SORT_COUNT, "Count", "Most jobs first"),
    (jobs_view.SORT_P95, "p95 processing", "Slowest p95 processing time first"),
    (jobs_view.SORT_WAIT_P95, "p95 queue wait", "Longest p95 queue wait first (labels without a reported start last)"),
    (jobs_view.SORT_SUCCESS, "Success rate", "Lowest success rate first"),
)


def _refresh(self: Any, context: Any) -> None:
    runtime.refresh_now()


class MDM_CompareRow(PropertyGroup):
    # `name` (from PropertyGroup) is the service.
    rank: IntProperty()  # type: ignore[valid-type]
    value: FloatProperty()  # type: ignore[valid-type]
    has_value: BoolProperty()  # type: ignore[valid-type]
    text: StringProperty()  # type: ignore[valid-type]
    #: 0…1 of the column's best-to-worst spread, for the bar.
    factor: FloatProperty(min=0.0, max=1.0)  # type: ignore[valid-type]


class MDM_WindowState(PropertyGroup):
    window: EnumProperty(name="Range", items=WINDOW_ITEMS, default="5m", update=_refresh)  # type: ignore[valid-type]
    compare_metric: EnumProperty(name="Metric", items=METRIC_ITEMS, default="p95_ms", update=_refresh)  # type: ignore[valid-type]
    compare_window: EnumProperty(name="Range", items=WINDOW_ITEMS, default="1h", update=_refresh)  # type: ignore[valid-type]
    compare_sort: EnumProperty(name="Sort", items=SORT_ITEMS, default="RANK")  # type: ignore[valid-type]
    compare_reverse: BoolProperty(name="Reverse", default=False)  # type: ignore[valid-type]
    compare_rows: CollectionProperty(type=MDM_CompareRow)  # type: ignore[valid-type]
    compare_index: IntProperty(default=0)  # type: ignore[valid-type]
    jobs_window: EnumProperty(name="Range", items=WINDOW_ITEMS, default="1h", update=_refresh)  # type: ignore[valid-type]
    jobs_by: EnumProperty(name="Group by", items=JOBS_BY_ITEMS, default=jobs_view.BY_MODEL, update=_refresh)  # type: ignore[valid-type]
    jobs_sort: EnumProperty(name="Sort", items=JOBS_SORT_ITEMS, default=jobs_view.SORT_COUNT, update=_refresh)  # type: ignore[valid-type]
    jobs_reverse: BoolProperty(name="Reverse", description="Reverse the sort order", default=False, update=_refresh)  # type: ignore[valid-type]


classes = (MDM_CompareRow, MDM_WindowState)


def register() -> None:
    bpy.types.WindowManager.movie_director = PointerProperty(type=MDM_WindowState)


def unregister() -> None:
    del bpy.types.WindowManager.movie_director


def state(context: Any = None) -> Any | None:
    """``wm.movie_director`` of the current window manager, or None."""
    wm = getattr(context or bpy.context, "window_manager", None)
    return getattr(wm, "movie_director", None) if wm is not None else None
