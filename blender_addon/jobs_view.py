"""What the Jobs panel shows, built once per tick from the monitor's job
tracker (``monitor.jobs``, a ``jobs.JobTracker``).  Pure Python like
:mod:`view`: no ``bpy``, so the rows, their order and their texts are
tested without Blender, and ``draw()`` only lays them out.

Three parts, each bounded so a busy pipeline costs the same to draw as a
quiet one:

- **running**: unfinished jobs (queued or running), oldest first, at most
  :data:`MAX_RUNNING`, with their elapsed time and progress;
- **recent**: the last finished jobs, newest first, at most
  :data:`MAX_RECENT`, with their outcome, processing time and queue wait
  ("n/a" when the start was never reported: never a 0 that looks real);
- **table**: per-model or per-workflow statistics over a range, sorted by
  one column, at most :data:`MAX_TABLE_ROWS` rows.

Whatever is left out is counted (``*_more``), never silently dropped.
The tracker is read with its public API only (``active()``,
``recent(limit)``, ``stats(window, by)``); any object with those methods
works, which is how the tests feed it.  The statistics are the costly read
(two engine reads per label: 0.5-0.8 ms for 3 services x 10 models,
12-22 ms for 15 x 64, the tracker's limit; measured on the build machine); :func:`read_stats` is apart so the runtime
can reuse them while nothing finished (see ``runtime.JOBS_STATS_EVERY_S``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .view import fmt_duration, fmt_gib, fmt_ms, fmt_pct

#: Rows drawn at most, per part.
MAX_RUNNING = 10
MAX_RECENT = 10
MAX_TABLE_ROWS = 20

#: Groupings of the table (``JobTracker.stats(by=...)``).
BY_MODEL, BY_WORKFLOW = "model", "workflow"
BY = (BY_MODEL, BY_WORKFLOW)

#: Sort columns of the table.  Each has a natural order that puts what
#: needs attention first: the busiest, the slowest, the longest waits, the
#: lowest success rate.  ``reverse`` flips it; labels without a value for
#: the column (no queue wait reported) stay last either way.
SORT_COUNT, SORT_P95, SORT_WAIT_P95, SORT_SUCCESS = "count", "p95", "wait_p95", "success"
SORTS = (SORT_COUNT, SORT_P95, SORT_WAIT_P95, SORT_SUCCESS)
_SORT_FIELD = {
    SORT_COUNT: ("count", True),
    SORT_P95: ("processing_p95_ms", True),
    SORT_WAIT_P95: ("queue_wait_p95_ms", True),
    SORT_SUCCESS: ("success_rate", False),
}

#: Placeholder for a job without a model / workflow label.
NO_LABEL = "—"


@dataclass(frozen=True)
class RunningJob:
    service: str
    model: str
    #: "queued" | "running"
    state: str
    elapsed: str
    #: 0…1 of the bar (0 while the progress is unknown).
    factor: float
    #: On the bar: "40 %", or the state while the progress is unknown.
    progress_text: str
    #: When it should be done: "done in 20 s–35 s", "ETA n/a" without
    #: enough history (never a made-up number).
    eta: str = ""
    #: Why it looks stuck ("" when it does not): drawn in red.
    stuck: str = ""
    #: The job's id ("" when it has none): for a backend's job, the
    #: backend's own (a ComfyUI prompt id), what its row's action targets.
    job_id: str = ""


@dataclass(frozen=True)
class FinishedJob:
    service: str
    model: str
    ok: bool
    #: "ok", or the error type.
    outcome: str
    processing: str
    #: The queue wait, "n/a" when the start was never reported.
    queue_wait: str
    #: Wall-clock time of the result, "14:03:12" (fixed per row: it does
    #: not change between ticks the way an age would).
    finished: str
    #: The job's tags, "shot=010, take=2" (the first few), or "".
    tags: str
    job_id: str


@dataclass(frozen=True)
class JobStatsRow:
    service: str
    label: str
    #: The label as the table shows it: the service is added when several
    #: services share the table.
    name: str
    count: int
    failed: int
    count_text: str
    p95: str
    wait_p95: str
    success: str


@dataclass(frozen=True)
class VramRow:
    """Will the next job of one model fit? (``Monitor.vram_fits``)."""

    service: str
    model: str
    #: "sdxl: needs +6.0 GiB, 4.0 of 24.0 GiB free"
    text: str
    #: "fits" | "tight" | "no" | "unknown"
    verdict: str


#: What each verdict reads as, after the figures.
VRAM_VERDICTS = {"fits": "fits", "tight": "tight", "no": "will not fit", "unknown": "n/a"}


def vram_row(f: Any) -> VramRow:
    """A ``jobs.VramFit`` as the panel's row."""
    need = "needs n/a" if f.need_bytes is None else f"needs +{fmt_gib(f.need_bytes)} GiB"
    free = "free n/a" if f.free_bytes is None else f"{fmt_gib(f.free_bytes)} of {fmt_gib(f.total_bytes)} GiB free"
    text = f"{label_text(f.model)}: {need}, {free}: {VRAM_VERDICTS.get(f.verdict, f.verdict)}"
    return VramRow(f.service, f.model, text, f.verdict)


@dataclass(frozen=True)
class JobsView:
    available: bool
    note: str = ""
    #: Why other add-ons' ``shared()`` calls do not reach this monitor, or "".
    shared_note: str = ""
    window: str = "1h"
    #: Why ``window`` is not the range asked for (7d/30d need storage), or "".
    window_note: str = ""
    by: str = BY_MODEL
    sort: str = SORT_COUNT
    reverse: bool = False
    #: "200 jobs, 20 failed (1h)", over every service.
    totals: str = ""
    running: tuple[RunningJob, ...] = ()
    running_more: int = 0
    recent: tuple[FinishedJob, ...] = ()
    table: tuple[JobStatsRow, ...] = ()
    table_more: int = 0
    #: VRAM per model against the headroom now (empty: no job with a peak).
    vram: tuple[VramRow, ...] = ()


# ---- parts ------------------------------------------------------------------------


def label_text(label: str | None) -> str:
    return label if label else NO_LABEL


def tags_text(tags: Any, limit: int = 2) -> str:
    """The first ``limit`` tags as "k=v, k=v", "+N" for the rest."""
    items = list(dict(tags or {}).items())
    text = ", ".join(f"{k}={v}" for k, v in items[:limit])
    return text + (f" +{len(items) - limit}" if len(items) > limit else "")


def eta_text(outlook: Any) -> str:
    """A job's ETA: "done in 20 s–35 s" (p50–p90), for a queued one "starts
    in …"; "ETA n/a" without enough history."""
    eta = getattr(outlook, "eta", None)
    if eta is None:
        return "ETA n/a"
    if outlook.job.state == "running":
        lo, hi = eta.finish_in_s
        return f"done in {fmt_duration(lo)}–{fmt_duration(hi)}"
    lo, hi = eta.start_in_s
    return f"starts in {fmt_duration(lo)}–{fmt_duration(hi)}"


def running_job(job: Any, outlook: Any = None) -> RunningJob:
    """``job``: a ``jobs.Job`` (or a collector's ``QueuedJob``) not
    finished (state, progress_fraction, elapsed_s()); ``outlook``: its
    ``JobOutlook`` (ETA, stuck), when known."""
    frac = job.progress_fraction
    has = frac is not None and math.isfinite(frac)
    return RunningJob(
        service=job.service,
        model=label_text(job.model),
        state=job.state,
        elapsed=fmt_duration(job.elapsed_s()),
        factor=max(0.0, min(1.0, float(frac))) if has else 0.0,
        progress_text=f"{math.floor(100 * frac)} %" if has else job.state,
        eta=eta_text(outlook) if outlook is not None else "",
        stuck=(getattr(outlook, "stuck", None) or "") if outlook is not None else "",
        job_id=getattr(job, "job_id", None) or "",
    )


def finished_job(row: Any) -> FinishedJob:
    """``row``: a ``jobs.JobRow``."""
    return FinishedJob(
        service=row.service,
        model=label_text(row.model),
        ok=bool(row.ok),
        outcome="ok" if row.ok else (row.error or "error"),
        processing=fmt_ms(row.processing_ms),
        queue_wait=fmt_ms(row.queue_wait_ms),
        finished=time.strftime("%H:%M:%S", time.localtime(row.finished_at)),
        tags=tags_text(row.tags),
        job_id=row.job_id or "",
    )


def sort_stats(stats: Iterable[Any], sort: str = SORT_COUNT, reverse: bool = False) -> list[Any]:
    """``stats`` (``jobs.JobStats``) in the order of column ``sort``: its
    natural order (see :data:`SORTS`), flipped by ``reverse``; labels
    without a value last; ties by count (busiest first), then service and
    label, so the order is the same from one tick to the next."""
    if sort not in _SORT_FIELD:
        raise ValueError(f"sort={sort!r}: expected one of {', '.join(SORTS)}")
    field, descending = _SORT_FIELD[sort]
    first = descending != reverse  # largest first
    have: list[Any] = []
    missing: list[Any] = []
    for s in stats:
        v = getattr(s, field)
        (have if v is not None and math.isfinite(v) else missing).append(s)
    tie = sorted(have, key=lambda s: (-s.count, s.service, s.label))
    have = sorted(tie, key=lambda s: getattr(s, field), reverse=first)  # stable: ties keep `tie`'s order
    return have + sorted(missing, key=lambda s: (-s.count, s.service, s.label))


def stats_row(s: Any, with_service: bool) -> JobStatsRow:
    """``s``: a ``jobs.JobStats``."""
    return JobStatsRow(
        service=s.service,
        label=s.label,
        name=f"{s.service} · {s.label}" if with_service else s.label,
        count=s.count,
        failed=s.failed,
        count_text=f"{s.count}" + (f" ({s.failed} failed)" if s.failed else ""),
        p95=fmt_ms(s.processing_p95_ms),
        wait_p95=fmt_ms(s.queue_wait_p95_ms),
        success=fmt_pct(s.success_rate),
    )


def table_rows(stats: Sequence[Any], sort: str, reverse: bool, limit: int = MAX_TABLE_ROWS) -> tuple[tuple[JobStatsRow, ...], int]:
    """(the first ``limit`` rows in sort order, how many more there are)."""
    ordered = sort_stats(stats, sort, reverse)
    with_service = len({s.service for s in ordered}) > 1
    return tuple(stats_row(s, with_service) for s in ordered[:limit]), max(0, len(ordered) - limit)


# ---- the view ---------------------------------------------------------------------

#: What :func:`read_stats` returns: (the table's labels, the per-service totals).
Stats = tuple[Sequence[Any], Sequence[Any]]


def read_stats(tracker: Any, window: str, by: str) -> Stats:
    """The statistics the table and the totals need (raises what the
    tracker raises)."""
    return tracker.stats(window, by=by), tracker.stats(window, by="service")


def build_jobs(
    tracker: Any,
    window: str = "1h",
    by: str = BY_MODEL,
    sort: str = SORT_COUNT,
    reverse: bool = False,
    why_not: str = "",
    shared_note: str = "",
    stats: Stats | None = None,
    vram: Any = (),
) -> JobsView:
    """The Jobs panel's view of ``tracker`` (``monitor.jobs``; None when
    the engine has none, ``why_not`` saying why).  ``shared_note``: why the
    monitor is not published to ``shared()`` ("" when it is).  ``stats``:
    what :func:`read_stats` returned for this tracker, window and ``by``
    (read here when None).  ``vram``: ``Monitor.vram_fits()`` (read by the
    caller: it needs the monitor's gauges)."""
    if by not in BY:
        raise ValueError(f"by={by!r}: expected one of {', '.join(BY)}")

    def unavailable(note: str) -> JobsView:
        return JobsView(False, note, shared_note=shared_note, window=window, by=by, sort=sort, reverse=reverse)

    if tracker is None:
        return unavailable(f"Jobs not available: {why_not}" if why_not else "Jobs not available")
    try:
        # Every unfinished job (the code's and the collectors') with its ETA,
        # stuck ones first; a tracker without an outlook lists its own.
        outlooks = tracker.outlook() if hasattr(tracker, "outlook") else [None for _ in tracker.active()]
        active = tracker.active() if not outlooks or outlooks[0] is None else [o.job for o in outlooks]
        recent = tracker.recent(limit=MAX_RECENT)
        by_label, per_service = read_stats(tracker, window, by) if stats is None else stats
    except Exception as e:  # the tracker's own error, shown as is
        return unavailable(f"Jobs: {type(e).__name__}: {e}")
    pairs = sorted(zip(active, outlooks), key=lambda p: not (p[1] is not None and p[1].stuck))
    running = tuple(running_job(j, o) for j, o in pairs[:MAX_RUNNING])
    table, more = table_rows(by_label, sort, reverse)
    count = sum(s.count for s in per_service)
    failed = sum(s.failed for s in per_service)
    note = ""
    if not active and not recent and not count:
        note = "No jobs yet: record them with movie_director_metrics.shared().job(...)"
    elif not table:
        note = f"No jobs with a {by} in {window}"
    return JobsView(
        available=True,
        note=note,
        shared_note=shared_note,
        window=window,
        by=by,
        sort=sort,
        reverse=reverse,
        totals=f"{count} jobs, {failed} failed ({window})",
        running=running,
        running_more=max(0, len(active) - len(running)),
        recent=tuple(finished_job(r) for r in recent),
        table=table,
        table_more=more,
        vram=tuple(vram_row(f) for f in vram),
    )
