"""The terminal dashboard: one table row per backend, drawn with ``rich``.

:func:`render` is a pure function of what it is given (the snapshot, the
collectors' statuses and the latency series), so a frame can be tested
without a terminal; the refresh loop lives in the CLI (``watch``).

Two kinds of blank, never a zero that looks real:

* ``n/a`` (dim): the backend cannot report this signal at all (its
  ``BackendStatus.capabilities`` says ``None`` and ``missing`` says why),
  e.g. queue depth on Ollama or VRAM on a plain HTTP endpoint;
* ``–``: it can (or we do not know yet), but nothing arrived in the window.

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

__all__ = ["BLOCKS", "NO_DATA", "NOT_AVAILABLE", "render", "sparkline"]

#: Sparkline levels, lowest first; a gap (no data) is a space.
BLOCKS = "▁▂▃▄▅▆▇█"
#: Shown when a signal has no data in the window (yet).
NO_DATA = "–"
#: Shown when the backend cannot report a signal at all.
NOT_AVAILABLE = "n/a"

_STATE_STYLE: dict[str, tuple[str, str]] = {
    # state -> (label, style)
    "up": ("up", "bold green"),
    "down": ("down", "bold red"),
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


def _ms(v: float | None) -> str:
    if v is None:
        return NO_DATA
    if v < 10:
        return f"{v:.2f}"
    if v < 100:
        return f"{v:.1f}"
    return f"{v:,.0f}"


def _pct(v: float | None) -> str:
    """A percentage; 99.95 shows as "99.9", never rounded up to "100.0"."""
    if v is None:
        return NO_DATA
    return "100" if v >= 100 else f"{math.floor(v * 10) / 10:.1f}"


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
    """The current failure while a backend is down or blocked (why), else
    the latest failure type inside the window."""
    if status is not None and status.state in ("down", "blocked") and (status.last_error_type or status.last_error):
        return Text(status.last_error_type or status.last_error or "", style="red" if status.state == "down" else "yellow")
    if st is not None and st.last_error:
        n = st.error_counts.get(st.last_error)
        return f"{st.last_error} ×{n}" if n else st.last_error
    return ""


@dataclass
class _Column:
    header: str
    #: Lower goes first when the terminal is too narrow.
    priority: int
    justify: JustifyMethod = "right"
    cells: list[Text] = field(default_factory=list)

    def width(self) -> int:
        return max([cell_len(self.header), *(c.cell_len for c in self.cells)])


def _text(v: Text | str) -> Text:
    return v if isinstance(v, Text) else Text(v)


#: Columns' gap (one space each side, collapsed between neighbours).
_GAP = 2


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
) -> RenderableType:
    """One dashboard frame, laid out for a console ``width`` columns wide.

    ``snapshot``: ``Monitor.snapshot(window)``; ``statuses``: the
    collectors' ``status()`` (may be empty: rows then come from the
    snapshot alone); ``series_by_service``: recent latency per service
    (``Monitor.series(name, "avg_ms", "5m", points)`` values, NaN for
    gaps); ``now``: the time in the header (UTC epoch seconds, shown in
    local time; default: now); ``alerts``: firing alerts, shown under the
    table when there are any; ``note``: an extra dim line under the table
    (e.g. a storage warning).

    Rows: the statuses' order (the config's), then services only the
    snapshot knows (e.g. reloaded history of a backend no longer
    configured).  When the width is short, the sparkline keeps its most
    recent points and then whole columns are left out, least useful first
    (request count, uptime, VRAM, processing ...); name and status stay.
    """
    names = list(statuses) + [n for n in snapshot if n not in statuses]
    stamp = _dt.datetime.fromtimestamp(now if now is not None else _dt.datetime.now().timestamp())
    up = sum(1 for s in statuses.values() if s.state == "up")
    header = Text.assemble(
        (title, "bold"),
        f"  {stamp:%Y-%m-%d %H:%M:%S}  ·  window {window}",
        (f"  ·  {up}/{len(statuses)} up" if statuses else ""),
    )
    backend = _Column("Backend", 100, "left")
    state = _Column("Status", 99, "left")
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
    columns = [backend, state, count, avg, p95, ok, uptime, queue, proc, vram, spark, last]
    sparks: list[str] = []
    for name in names:
        st = snapshot.get(name)
        status = statuses.get(name)
        label = Text(name)
        if status is not None:
            label.append(f" {status.kind}", style="dim")
        backend.cells.append(label)
        state.cells.append(_state(status, st))
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
    # points (newest kept), a shorter error column, no kind suffix, fewer
    # points still, then whole columns, lowest priority first.
    spark_w = max([len(x) for x in sparks] + [cell_len(spark.header)])
    last_cap = last.width()
    shown = list(columns)
    names_only = [Text(n) for n in names]

    def total() -> int:
        widths = [
            spark_w if c is spark else min(c.width(), last_cap) if c is last else c.width() for c in shown
        ]
        return sum(widths) + _GAP * (len(shown) - 1)

    for step in ("spark16", "last12", "kind", "spark10", "columns"):
        if total() <= width:
            break
        if step == "spark16" and spark_w > 16:
            spark_w = max(16, spark_w - (total() - width))
        elif step == "last12":
            last_cap = max(12, last_cap - (total() - width))
        elif step == "kind":
            backend.cells = names_only
        elif step == "spark10" and spark_w > 10:
            spark_w = max(10, spark_w - (total() - width))
        elif step == "columns":
            while total() > width:
                droppable = [c for c in shown if c.priority < 99 and c is not last]
                if not droppable:
                    break
                shown.remove(min(droppable, key=lambda c: c.priority))
    spark.cells = [Text(x[-spark_w:], style="cyan") for x in sparks]
    # The error column takes back whatever room the concessions left.
    last_cap = last.width()
    last_w = max(cell_len(last.header), min(last.width(), width - (total() - last.width())))

    table = Table(
        box=box.SIMPLE_HEAD,
        header_style="bold",
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
        title=header,
        title_justify="left",
    )
    for c in shown:
        table.add_column(
            c.header,
            justify=c.justify,
            no_wrap=True,
            overflow="ellipsis",
            max_width=last_w if c is last else None,
            width=spark_w if c is spark else None,
        )
    for i in range(len(names)):
        table.add_row(*[c.cells[i] for c in shown])
    if not names:
        table.add_row(Text("no backends configured", style="dim"), *[""] * (len(shown) - 1))
    footer: list[RenderableType] = []
    if alerts:
        footer.append(Text("alerts: " + "; ".join(alerts), style="bold red"))
    if note:
        footer.append(Text(note, style="dim"))
    if not footer:
        return table
    return Group(table, *footer)
