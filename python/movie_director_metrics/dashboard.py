"""The terminal dashboard: one table row per backend, drawn with ``rich``.

:func:`render` is a pure function of what it is given (the snapshot, the
collectors' statuses and the latency series), so a frame can be tested
without a terminal; the refresh loop lives in the CLI (``watch``).

Two kinds of blank, never a zero that looks real:

* ``n/a`` (dim): the backend cannot report this signal at all (its
  ``BackendStatus.capabilities`` says ``None`` and ``missing`` says why),
  e.g. queue depth on Ollama or VRAM on a plain HTTP endpoint;
* ``–``: it can (or we do not know yet), but nothing arrived in the window.

A live view does not jump between refreshes:

* numbers have fixed decimals (milliseconds and percentages one, GiB one)
  and sit right-aligned in columns of a reserved width (:data:`RESERVED`),
  so 5 ms becoming 25,000 ms, or a backend going down, moves nothing;
* the error column, the last, takes all the room left (the table is as
  wide as the terminal) and cuts a long error with an ellipsis: an error
  never pushes other columns about;
* with a :class:`DashboardState` kept across frames (what ``watch`` does),
  rows keep their first-seen order (a backend that goes down, or a service
  whose data leaves the window, keeps its row) and columns never narrow
  while the terminal keeps its width.

Sparklines are the raw series, never smoothed: a spike shows in the frame
it happens.

Under the table, a heartbeat strip per backend (``heartbeats``: the cells
of ``Monitor.heartbeat``, oldest left): one character per cell, its glyph
saying the state even without colour (:data:`HEARTBEAT_GLYPHS`: a full
green block up, a low red bar down, a half yellow block for a cell with
both, a dim dot where no result vouched).  Strips keep the rows' order and
start in one column; a narrow terminal shows their newest cells.

``rich`` is an optional dependency (the ``cli`` extra); only this module
and the CLI's ``watch`` import it.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from rich import box
from rich.cells import cell_len
from rich.console import Group, JustifyMethod, RenderableType
from rich.table import Table
from rich.text import Text

from ._core import ServiceStats
from .collectors.scheduler import BackendStatus
from .jobs.outlook import JobOutlook

__all__ = [
    "BLOCKS",
    "HEARTBEAT_GLYPHS",
    "JOB_LINES",
    "NO_DATA",
    "NOT_AVAILABLE",
    "RESERVED",
    "DashboardState",
    "render",
    "sparkline",
]

#: Sparkline levels, lowest first; a gap (no data) is a space.
BLOCKS = "▁▂▃▄▅▆▇█"
#: Heartbeat cells: (glyph, style) by ``incidents.CellState`` value
#: (UNKNOWN, UP, DOWN, PARTIAL).
HEARTBEAT_GLYPHS: tuple[tuple[str, str], ...] = (("·", "dim"), ("█", "green"), ("▁", "bold red"), ("▄", "yellow"))

#: Shown when a signal has no data in the window (yet).
NO_DATA = "–"
#: Shown when the backend cannot report a signal at all.
NOT_AVAILABLE = "n/a"

_STATE_STYLE: dict[str, tuple[str, str]] = {
    # state -> (label, style)
    "up": ("up", "bold green"),
    "down": ("down", "bold red"),
    "loading": ("loading", "yellow"),
    "blocked": ("blocked", "yellow"),
    "disabled": ("disabled", "dim"),
    "unknown": ("waiting", "dim"),
}


def sparkline(values: Iterable[float]) -> str:
    """One block character per value, scaled from the lowest to the highest
    finite value; NaN (a span without data) is a gap.  All-equal values sit
    in the middle, so a flat line does not read as "zero" or "maximum"."""
    vals = [float(v) for v in values]
    finite = [v for v in vals if math.isfinite(v)]
    if not finite:
        return " " * len(vals)
    lo, hi = min(finite), max(finite)
    top = len(BLOCKS) - 1
    out = []
    for v in vals:
        if not math.isfinite(v):
            out.append(" ")
        elif hi == lo:
            out.append(BLOCKS[top // 2])
        else:
            out.append(BLOCKS[round((v - lo) / (hi - lo) * top)])
    return "".join(out)


#: Width reserved for each numeric column (cells are right-aligned in it):
#: the widest value of the fixed formats below that a live backend gives,
#: e.g. 99999 requests in the window, "99,999.9" ms (100 s), "100.0" %,
#: "23.5/24.0" GiB.  A wider value
#: widens its column (once, with a DashboardState).
RESERVED: dict[str, int] = {
    "Status": 8,  # "disabled"
    "Req": 5,
    "Avg ms": 8,
    "p95 ms": 8,
    "OK %": 5,
    "Up %": 5,
    "Queue": 6,  # "12/340"
    "Proc p95": 8,
    "VRAM GiB": 9,
}


def _ms(v: float | None) -> str:
    """Milliseconds, always one decimal: "4.2", "182.4", "2,500.0"."""
    if v is None or not math.isfinite(v):
        return NO_DATA
    return f"{v:,.1f}"


def _pct(v: float | None) -> str:
    """A percentage, always one decimal; 99.95 shows as "99.9", never
    rounded up to "100.0" (only 100 itself is)."""
    if v is None or not math.isfinite(v):
        return NO_DATA
    return "100.0" if v >= 100 else f"{math.floor(v * 10 + 1e-6) / 10:.1f}"


def _gib(n: float) -> str:
    return f"{n / 1024**3:.1f}"


def _na() -> Text:
    return Text(NOT_AVAILABLE, style="dim")


def _lacks(status: BackendStatus | None, signal: str) -> bool:
    """True when the backend cannot report ``signal``: its capabilities say
    None *and* ``missing`` gives a reason.  The collectors also report None
    for every signal before detection (and while a backend is down from
    the start); without a reason that means "not known yet", shown as a
    dash, not as n/a."""
    return status is not None and status.capabilities.get(signal) is None and signal in status.missing


def _state(status: BackendStatus | None, stats: ServiceStats | None) -> Text:
    if status is not None:
        label, style = _STATE_STYLE.get(status.state, (status.state, ""))
        return Text(label, style=style)
    up = stats.up if stats is not None else None
    if up is None:
        return Text(NO_DATA, style="dim")
    return Text("up", style="bold green") if up else Text("down", style="bold red")


def _queue(status: BackendStatus | None, st: ServiceStats | None) -> Text | str:
    if _lacks(status, "queue"):
        return _na()
    if st is None or (st.queue_running is None and st.queue_pending is None):
        return NO_DATA
    return f"{st.queue_running or 0}/{st.queue_pending or 0}"


def _processing(status: BackendStatus | None, st: ServiceStats | None) -> Text | str:
    if _lacks(status, "processing"):
        return _na()
    return _ms(st.processing_p95_ms if st is not None else None)


def _vram(status: BackendStatus | None, st: ServiceStats | None) -> Text | str:
    if _lacks(status, "resources"):
        return _na()
    res = st.resources if st is not None else {}
    used = res["vram_used_bytes"].last if "vram_used_bytes" in res else None
    total = res["vram_total_bytes"].last if "vram_total_bytes" in res else None
    if used is None:
        return NO_DATA
    return f"{_gib(used)}/{_gib(total)}" if total else _gib(used)


def _uptime(status: BackendStatus | None, st: ServiceStats | None) -> Text | str:
    if _lacks(status, "health"):
        return _na()
    return _pct(st.uptime_pct if st is not None else None)


def _success(st: ServiceStats | None) -> Text | str:
    rate = st.success_rate if st is not None else None
    if rate is None:
        return NO_DATA
    style = "green" if rate >= 0.99 else "yellow" if rate >= 0.9 else "red"
    return Text(_pct(rate * 100), style=style)


def _last_error(status: BackendStatus | None, st: ServiceStats | None) -> Text | str:
    """Why a backend is down or blocked (its cause and what to do), else
    the latest failure type inside the window."""
    if status is not None and status.state in ("down", "loading", "blocked") and status.cause is not None:
        text = f"{status.cause}: {status.hint}" if status.hint else status.cause
        return Text(text, style="red" if status.state == "down" else "yellow")
    if status is not None and status.state in ("down", "loading", "blocked") and (status.last_error_type or status.last_error):
        return Text(status.last_error_type or status.last_error or "", style="red" if status.state == "down" else "yellow")
    if st is not None and st.last_error:
        n = st.error_counts.get(st.last_error)
        return f"{st.last_error} ×{n}" if n else st.last_error
    return ""


@dataclass
class DashboardState:
    """What :func:`render` remembers from one frame to the next of a live
    view, so that rows and columns stay put: the rows' first-seen order and
    each column's widest width so far (reset when the terminal width
    changes).  Keep one per live view; ``render(..., state=None)`` lays out
    each frame on its own."""

    order: list[str] = field(default_factory=list)
    widths: dict[str, int] = field(default_factory=dict)
    console_width: int | None = None

    def rows(self, names: Iterable[str]) -> list[str]:
        """Every name seen so far, in first-seen order, ``names`` added."""
        known = set(self.order)
        for n in names:
            if n not in known:
                self.order.append(n)
                known.add(n)
        return list(self.order)


@dataclass
class _Column:
    header: str
    #: Lower goes first when the terminal is too narrow.
    priority: int
    justify: JustifyMethod = "right"
    cells: list[Text] = field(default_factory=list)

    #: Least width (reserved, or remembered from earlier frames).
    floor: int = 0

    def width(self) -> int:
        return max([cell_len(self.header), self.floor, *(c.cell_len for c in self.cells)])


#: Jobs listed under the table at most (the rest are counted).
JOB_LINES = 5


def _elapsed(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)}m {seconds % 60:02.0f}s"


def _eta(o: JobOutlook) -> str:
    eta = o.eta
    if eta is None:
        return "ETA n/a"
    lo, hi = eta.finish_in_s
    if o.job.state == "running":
        return f"done in {_elapsed(lo)}–{_elapsed(hi)}"
    return f"starts in {_elapsed(eta.start_in_s[0])}–{_elapsed(eta.start_in_s[1])}, done in {_elapsed(lo)}–{_elapsed(hi)}"


def _job_lines(outlooks: Sequence[JobOutlook]) -> list[Text]:
    """A summary line and one line per job, stuck and running ones first,
    each with its ETA (or why it looks stuck, in red)."""
    if not outlooks:
        return []
    ordered = sorted(outlooks, key=lambda o: (o.stuck is None, o.job.state != "running", o.position))
    running = sum(1 for o in outlooks if o.job.state == "running")
    stuck = sum(1 for o in outlooks if o.stuck is not None)
    head = f"jobs: {running} running, {len(outlooks) - running} queued" + (f", {stuck} stuck" if stuck else "")
    lines = [Text(head, style="bold red" if stuck else "bold")]
    for o in ordered[:JOB_LINES]:
        j = o.job
        progress = f"  {100 * j.progress_fraction:3.0f} %" if j.progress_fraction is not None else ""
        tail = f"STUCK: {o.stuck}" if o.stuck else _eta(o)
        lines.append(Text(f"  {j.state:<8} {j.service}  {j.model or NO_DATA}  {_elapsed(j.elapsed_s())}{progress}  {tail}",
                          style="red" if o.stuck else ""))
    if len(outlooks) > JOB_LINES:
        lines.append(Text(f"  … {len(outlooks) - JOB_LINES} more", style="dim"))
    return lines


def _heartbeat_lines(names: Sequence[str], heartbeats: Mapping[str, Sequence[int]], width: int, span: str) -> list[Text]:
    """A legend line and one strip per backend that has one, in the rows'
    order; every line starts with two spaces and fits ``width``.  Strips
    start after the longest row name (rows only grow with a
    DashboardState, so they start in the same column frame after frame)."""
    rows = [n for n in names if n in heartbeats]
    if not rows:
        return []
    name_w = max(cell_len(n) for n in names)
    room = max(1, width - 2 - name_w - 2)
    legend = " ".join(f"{HEARTBEAT_GLYPHS[s][0]} {what}" for s, what in ((1, "up"), (3, "both"), (2, "down"), (0, "no results")))
    lines = [Text(f"  heartbeat {span}, now at the right: {legend}", style="dim", no_wrap=True, overflow="ellipsis")]
    for n in rows:
        line = Text("  " + n + " " * (name_w - cell_len(n)) + "  ", no_wrap=True, overflow="ellipsis")
        for cell in list(heartbeats[n])[-room:]:
            glyph, style = HEARTBEAT_GLYPHS[int(cell)] if 0 <= int(cell) < len(HEARTBEAT_GLYPHS) else HEARTBEAT_GLYPHS[0]
            line.append(glyph, style)
        lines.append(line)
    return lines


def _text(v: Text | str) -> Text:
    return v if isinstance(v, Text) else Text(v)


#: Columns' gap (one space each side, collapsed between neighbours).
_GAP = 2
#: Least width of the error column when fitting the others.
_LAST_MIN = 12


def render(
    snapshot: Mapping[str, ServiceStats],
    statuses: Mapping[str, BackendStatus],
    series_by_service: Mapping[str, Iterable[float]],
    *,
    width: int,
    window: str,
    now: float | None = None,
    alerts: Sequence[str] | None = None,
    title: str = "movie-director-metrics",
    note: str | None = None,
    state: DashboardState | None = None,
    jobs: Sequence[JobOutlook] = (),
    heartbeats: Mapping[str, Sequence[int]] | None = None,
    heartbeat_span: str = "24h",
) -> RenderableType:
    """One dashboard frame, laid out for a console ``width`` columns wide.

    ``snapshot``: ``Monitor.snapshot(window)``; ``statuses``: the
    collectors' ``status()`` (may be empty: rows then come from the
    snapshot alone); ``series_by_service``: recent latency per service
    (``Monitor.series(name, "avg_ms", "5m", points)`` values, NaN for
    gaps); ``now``: the time in the header (UTC epoch seconds, shown in
    local time; default: now); ``alerts``: firing alerts, shown under the
    table when there are any; ``note``: an extra dim line under the table
    (e.g. a storage warning); ``state``: a :class:`DashboardState` kept
    across the frames of a live view (stable rows and column widths);
    ``jobs``: the outlook of the jobs not finished yet
    (``JobTracker.outlook()``), listed under the table with their ETA,
    stuck and running ones first, at most :data:`JOB_LINES`;
    ``heartbeats``: service -> ``Monitor.heartbeat`` cells (oldest first)
    over ``heartbeat_span``, drawn as one strip per backend under the table.

    Rows: the statuses' order (the config's), then services only the
    snapshot knows (e.g. reloaded history of a backend no longer
    configured); with ``state``, first-seen order, and a row once shown
    stays.  When the width is short, the sparkline keeps its most recent
    points and then whole columns are left out, least useful first
    (request count, uptime, VRAM, processing ...); name and status stay.
    """
    names = list(statuses) + [n for n in snapshot if n not in statuses]
    if state is not None:
        if state.console_width != width:
            state.widths.clear()
            state.console_width = width
        names = state.rows(names)
    stamp = _dt.datetime.fromtimestamp(now if now is not None else _dt.datetime.now().timestamp())
    up = sum(1 for s in statuses.values() if s.state == "up")
    n_width = len(str(len(statuses)))
    header = Text.assemble(
        (title, "bold"),
        f"  {stamp:%Y-%m-%d %H:%M:%S}  ·  window {window}",
        (f"  ·  {up:>{n_width}}/{len(statuses)} up" if statuses else ""),
    )
    backend = _Column("Backend", 100, "left")
    status_col = _Column("Status", 99, "left")
    count = _Column("Req", 10)
    avg = _Column("Avg ms", 90)
    p95 = _Column("p95 ms", 80)
    ok = _Column("OK %", 70)
    uptime = _Column("Up %", 20)
    queue = _Column("Queue", 60)
    proc = _Column("Proc p95", 40)
    vram = _Column("VRAM GiB", 30)
    spark = _Column("Latency 5m", 15, "left")
    last = _Column("Last error", 50, "left")
    columns = [backend, status_col, count, avg, p95, ok, uptime, queue, proc, vram, spark, last]
    remembered = state.widths if state is not None else {}
    for c in columns:
        c.floor = max(RESERVED.get(c.header, 0), remembered.get(c.header, 0))
    empty = Text("no backends configured", style="dim")
    if not names:
        backend.cells = [empty]
    sparks: list[str] = []
    for name in names:
        st = snapshot.get(name)
        status = statuses.get(name)
        label = Text(name)
        if status is not None:
            label.append(f" {status.kind}", style="dim")
        backend.cells.append(label)
        status_col.cells.append(_state(status, st))
        count.cells.append(_text(str(st.count) if st is not None else NO_DATA))
        avg.cells.append(_text(_ms(st.avg_ms if st is not None else None)))
        p95.cells.append(_text(_ms(st.p95_ms if st is not None else None)))
        ok.cells.append(_text(_success(st)))
        uptime.cells.append(_text(_uptime(status, st)))
        queue.cells.append(_text(_queue(status, st)))
        proc.cells.append(_text(_processing(status, st)))
        vram.cells.append(_text(_vram(status, st)))
        values = series_by_service.get(name)
        sparks.append(sparkline(values) if values is not None else "")
        last.cells.append(_text(_last_error(status, st)))

    # Fit, one concession at a time until the row fits: fewer sparkline
    # points (newest kept), no kind suffix, fewer points still, then whole
    # columns, lowest priority first.  The error column counts as
    # _LAST_MIN wide whatever it holds: it takes what room is left (cut
    # with an ellipsis), so a long error never makes the other columns move.
    spark_w = max([len(x) for x in sparks] + [cell_len(spark.header), remembered.get(spark.header, 0)])
    shown = list(columns)
    names_only = [Text(n) for n in names] or [empty]
    last_min = max(_LAST_MIN, cell_len(last.header))

    def widths() -> list[int]:
        return [spark_w if c is spark else last_min if c is last else c.width() for c in shown]

    def total() -> int:
        return sum(widths()) + _GAP * (len(shown) - 1)

    for step in ("spark16", "kind", "spark10", "columns"):
        if total() <= width:
            break
        if step == "spark16" and spark_w > 16:
            spark_w = max(16, spark_w - (total() - width))
        elif step == "kind":
            backend.cells = names_only
            backend.floor = RESERVED.get(backend.header, 0)
        elif step == "spark10" and spark_w > 10:
            spark_w = max(10, spark_w - (total() - width))
        elif step == "columns":
            while total() > width:
                droppable = [c for c in shown if c.priority < 99 and c is not last]
                if not droppable:
                    break
                shown.remove(min(droppable, key=lambda c: c.priority))
    spark.cells = [Text(x[-spark_w:].ljust(spark_w), style="cyan") for x in sparks]
    # The error column, last, takes all the room left: the table is as
    # wide in every frame, whatever the errors say.
    last_w = max(last_min, width - (total() - last_min))
    if state is not None:
        for c, w in zip(shown, widths()):
            if c is not last:
                state.widths[c.header] = max(state.widths.get(c.header, 0), spark_w if c is spark else w)

    table = Table(
        box=box.SIMPLE_HEAD,
        header_style="bold",
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
        title=header,
        title_justify="left",
    )
    for c, w in zip(shown, widths()):
        table.add_column(
            c.header,
            justify=c.justify,
            no_wrap=True,
            overflow="ellipsis",
            width=spark_w if c is spark else last_w if c is last else w,
        )
    for i in range(len(names)):
        table.add_row(*[c.cells[i] for c in shown])
    if not names:
        table.add_row(empty, *[""] * (len(shown) - 1))
    footer: list[RenderableType] = []
    if heartbeats:
        footer.extend(_heartbeat_lines(names, heartbeats, width, heartbeat_span))
    footer.extend(_job_lines(jobs))
    if alerts:
        footer.append(Text("alerts: " + "; ".join(alerts), style="bold red"))
    if note:
        footer.append(Text(note, style="dim"))
    if not footer:
        return table
    return Group(table, *footer)
