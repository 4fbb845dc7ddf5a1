"""Outage history: incidents derived from health runs, the cause of each,
and the heartbeat strip (24 h of up/down in a row of cells).

**Health runs.**  The engine keeps health results as runs ``(first_s,
last_s, up)`` of one state, each result within ``health_ttl_s`` of the
previous one (``Service.stored_health``; the history file keeps the same
in ``health_runs``).  A result vouches for its state from its second until
the next result or for ``health_ttl_s`` seconds, whichever comes first;
time no result vouches for is *unknown* (the monitor was not running, or
the backend was not probed).  This is the engine's uptime rule, and
everything here follows it: the seconds the incidents of a service add up
to are the down seconds its ``uptime_pct`` counts.

**An incident** is a maximal stretch of time down results vouch for:

* ``start``: the second of its first down result;
* ``end``: the second of the first up result after it (``ended_by =
  "up"``); or, when no result follows within ``health_ttl_s`` of the last
  down one, the end of what that result vouches for, ``last_down +
  health_ttl_s`` (``ended_by = "gap"``); or None while the last down
  result still vouches for now (ongoing);
* ``duration_s``: ``end - start``, or ``now - start`` while ongoing.

**Gaps.**  Two down runs separated only by time nobody vouched for are
**two incidents**, the first ending with ``ended_by = "gap"``.  Joining
them would count the unwatched time as downtime: an outage invented while
nobody watched (the backend may have come back and failed again, or the
monitor was simply off), and the incident list would disagree with the
uptime figure, which counts that time neither way.  Down runs closer than
``health_ttl_s`` (one the history file holds and the next this process
recorded, after a restart) are one incident.  A backend probed less often
than ``health_ttl_s`` (a hosted API polled every 300 s) leaves such gaps
between its results: give the monitor a ``health_ttl_s`` at least as long
as the longest interval to see its outages as one.

**Recovery is seen late under backoff.**  A failing backend is probed
less and less often (``collectors.scheduler.backoff_delay_s``: the
interval doubling per failure, at most 30 s), so ``end`` is when the
first up result *came*, up to one backoff delay after the backend really
came back; ``last_down`` (the last down result) bounds it from below: the
backend came back in ``(last_down, end]``.

**Cause.**  When a collector sees a backend go down it hands the
diagnosis (``collectors.diagnosis``: ``refused``, ``timeout``, ``auth``
...) and a short, redacted detail (the failed request's first line) to
the monitor's :class:`OutageLog`, which the history file keeps
(``outage_causes``), one entry per streak of failed probes with the cause
most of its probes had (a stopped server resets the connection a probe
kept open once, then refuses: ``refused``).  An incident's cause is that
of the first log entry overlapping it.  Without one (a history written before the log existed,
down results recorded by hand), the cause is what the most frequent error
type of the span determines on its own (``connection_refused`` ->
``refused``, see :data:`CAUSE_OF_ERROR`), with the error type named in
``detail``; else ``"unknown"``.

**Heartbeat.**  :func:`heartbeat` cuts ``[now - span_s, now)`` into equal
cells, oldest first, each :class:`CellState` ``UP`` or ``DOWN`` (only that
state vouched for in it), ``PARTIAL`` (both), or ``UNKNOWN`` (no result
vouches for any of it).  Any down second makes a cell at least partial:
a short outage is never averaged away.
"""

from __future__ import annotations

import bisect
import contextlib
import enum
import math
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import InvalidValueError, MetricsError, MonitorClosedError, UnknownServiceError
from .ranges import TimeRange, iso_utc, resolve_range

if TYPE_CHECKING:
    from .monitor import Monitor
    from .storage import Storage

__all__ = [
    "CAUSE_OF_ERROR",
    "HEARTBEAT_CELLS",
    "INCIDENT_FIELDS",
    "OUTAGE_COLUMNS",
    "CellState",
    "Incident",
    "OutageCause",
    "OutageLog",
    "derive_incidents",
    "heartbeat",
    "incidents_in_range",
    "merge_runs",
    "monitor_heartbeat",
    "monitor_incidents",
]

#: A health run: (first second, last second, up), UTC epoch seconds.
Run = tuple[int, int, bool]

#: Cells of a heartbeat strip by default (24 h: 30 minutes each).
HEARTBEAT_CELLS = 48

#: Most cells one strip may have.
MAX_CELLS = 100_000

#: Longest detail kept per cause entry, in characters.
DETAIL_CHARS = 160

#: Error types that determine a diagnosis cause by themselves, whatever the
#: reply said (``collectors.diagnosis.diagnose`` maps them the same way).
#: Others (``http_5xx``, ``http_4xx``, ``server_busy`` ...) need the reply to
#: tell, so they leave the cause "unknown" and are only named in the detail.
CAUSE_OF_ERROR: dict[str, str] = {
    "connection_refused": "refused",
    "dns": "dns",
    "tls": "tls",
    "timeout": "timeout",
    "connection_reset": "reset",
    "unreachable": "unreachable",
    "oom": "oom",
    "collector_error": "collector_error",
}

#: Columns of the history file's ``outage_causes`` table, in this order.
OUTAGE_COLUMNS: tuple[str, ...] = ("service", "at_s", "cause", "detail", "probes", "last_s")

#: Keys of an incident in JSON (and the CSV header, in this order).
INCIDENT_FIELDS: tuple[str, ...] = (
    "service",
    "start",
    "start_epoch_s",
    "end",
    "end_epoch_s",
    "ongoing",
    "ended_by",
    "duration_s",
    "last_down_epoch_s",
    "cause",
    "detail",
    "probes",
)


class CellState(enum.IntEnum):
    """One heartbeat cell (small ints, for drawing: index a colour table)."""

    UNKNOWN = 0  #: no result vouches for any of the cell
    UP = 1  #: only up results
    DOWN = 2  #: only down results
    PARTIAL = 3  #: both


# ---- the cause log -------------------------------------------------------------


@dataclass(frozen=True)
class OutageCause:
    """What the collectors said when a backend went down: one entry per
    streak of failed probes (``at``: the first, ``last_at``: the latest,
    ``probes``: how many), with the diagnosis cause most of its probes
    had (the later one on a tie) and that cause's latest detail: a server
    that is stopped resets the connection a probe kept open, then refuses
    every later one — the outage's cause is ``refused``, not ``reset``."""

    service: str
    at: float
    cause: str
    detail: str | None
    probes: int
    last_at: float

    def as_stored(self) -> tuple[Any, ...]:
        """The row for ``outage_causes`` (:data:`OUTAGE_COLUMNS`)."""
        return (self.service, self.at, self.cause, self.detail, self.probes, self.last_at)

    @classmethod
    def from_stored(cls, row: Sequence[Any]) -> OutageCause | None:
        """An entry from a stored row; None for a damaged one (never trusted)."""
        try:
            service, at, cause, detail, probes, last_at = row
            entry = cls(str(service), float(at), str(cause), None if detail is None else str(detail)[:DETAIL_CHARS],
                        int(probes), float(last_at))
        except (TypeError, ValueError):
            return None
        ok = all(math.isfinite(v) for v in (entry.at, entry.last_at)) and entry.probes >= 1 and entry.cause
        return entry if ok and entry.last_at >= entry.at else None


class OutageLog:
    """The causes of outages, per service, newest streak last.  Written by
    the collectors' worker threads (:meth:`note`), read by any thread:
    every method takes one short lock and no I/O happens under it.  Holds
    at most :attr:`MAX_ENTRIES` (the oldest go first; the history file
    keeps them all for its retention)."""

    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (service, at) -> entry, in the order noted (oldest first).
        self._entries: dict[tuple[str, float], OutageCause] = {}
        # service -> the key of its current streak's entry.
        self._streak: dict[str, tuple[str, float]] = {}
        # Keys changed since the last take_unsaved().
        self._unsaved: dict[tuple[str, float], None] = {}
        # The current streak's probes per cause, per service (memory only).
        self._counts: dict[str, Counter[str]] = {}

    def note(self, service: str, at: float, cause: str, detail: str | None, *, first: bool) -> None:
        """One down result of ``service`` at ``at`` (the monitor's clock):
        ``first`` starts a streak (an entry with this cause), else the
        streak's entry counts one more probe, and takes this cause when it
        now has at least as many probes as the entry's."""
        detail = None if not detail else detail[:DETAIL_CHARS]
        with self._lock:
            key = self._streak.get(service)
            entry = self._entries.get(key) if key is not None and not first else None
            if entry is None:
                key = (service, at)
                entry = OutageCause(service, at, cause, detail, 1, at)
                self._streak[service] = key
                self._counts[service] = Counter({cause: 1})
            else:
                assert key is not None
                counts = self._counts.setdefault(service, Counter({entry.cause: entry.probes}))
                counts[cause] += 1
                same = cause == entry.cause
                wins = same or counts[cause] >= counts[entry.cause]
                entry = OutageCause(service, entry.at, cause if wins else entry.cause,
                                    detail if wins else entry.detail, entry.probes + 1, max(at, entry.last_at))
            self._entries[key] = entry
            self._unsaved[key] = None
            while len(self._entries) > self.MAX_ENTRIES:
                old = next(iter(self._entries))
                del self._entries[old]
                self._unsaved.pop(old, None)

    def entries(self, service: str | None = None, since: float = -math.inf) -> list[OutageCause]:
        """Entries whose streak reaches ``since`` or later, oldest first."""
        with self._lock:
            out = [e for e in self._entries.values() if e.last_at >= since and (service is None or e.service == service)]
        return sorted(out, key=lambda e: (e.at, e.service))

    def take_unsaved(self) -> list[OutageCause]:
        """Entries noted or changed since the last call (for the history
        file; the caller keeps them until written)."""
        with self._lock:
            keys, self._unsaved = list(self._unsaved), {}
            return [self._entries[k] for k in keys if k in self._entries]

    def restore(self, rows: Iterable[Sequence[Any]]) -> int:
        """Puts stored entries back (an entry this log already holds wins);
        returns how many were taken.  Restored entries are not unsaved."""
        n = 0
        with self._lock:
            for row in rows:
                e = OutageCause.from_stored(row)
                if e is None or (e.service, e.at) in self._entries:
                    continue
                self._entries[(e.service, e.at)] = e
                n += 1
            if n:
                ordered = sorted(self._entries.items(), key=lambda kv: kv[1].at)[-self.MAX_ENTRIES:]
                self._entries = dict(ordered)
        return n

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


# ---- incidents ----------------------------------------------------------------


@dataclass(frozen=True)
class Incident:
    """One outage of one service (see the module documentation for the
    rules).  Times are UTC epoch seconds on the monitor's clock."""

    service: str
    #: The second of the first down result.
    start: float
    #: The first up result after it, or where the last down result stopped
    #: vouching (``ended_by == "gap"``); None while ongoing.
    end: float | None
    #: ``end - start``, or ``now - start`` while ongoing.
    duration_s: float
    #: A cause from ``collectors.diagnosis.CAUSES``, or ``"unknown"``.
    cause: str
    #: The failed request's first line (credentials redacted), or what the
    #: cause was derived from; None when nothing is known.
    detail: str | None
    #: Down results the cause log counted in this incident; None without one.
    probes: int | None
    #: The second of the last down result: the backend came back after it.
    last_down: float
    #: ``"up"`` (an up result ended it), ``"gap"`` (no result followed
    #: within ``health_ttl_s``), or None while ongoing.
    ended_by: str | None

    @property
    def ongoing(self) -> bool:
        return self.end is None

    def as_dict(self) -> dict[str, Any]:
        """JSON keys :data:`INCIDENT_FIELDS` (times as ISO 8601 UTC and epoch seconds)."""
        return {
            "service": self.service,
            "start": iso_utc(self.start),
            "start_epoch_s": int(self.start),
            "end": None if self.end is None else iso_utc(self.end),
            "end_epoch_s": None if self.end is None else int(self.end),
            "ongoing": self.end is None,
            "ended_by": self.ended_by,
            "duration_s": round(self.duration_s, 3),
            "last_down_epoch_s": int(self.last_down),
            "cause": self.cause,
            "detail": self.detail,
            "probes": self.probes,
        }


def merge_runs(live: Iterable[Sequence[Any]], disk: Iterable[Sequence[Any]]) -> list[Run]:
    """The runs of one service from the engine (``live``) and the history
    file (``disk``), oldest first.  A live run wins over every disk run it
    overlaps (the file holds a shorter copy of a run still growing, and the
    engine holds what it reloaded plus what came since)."""
    merged: list[Run] = sorted((int(f), int(l), bool(u)) for f, l, u in live)
    firsts = [r[0] for r in merged]
    extra: list[Run] = []
    for f, l, u in sorted((int(f), int(l), bool(u)) for f, l, u in disk):
        if l < f:
            continue  # damaged: never trusted
        i = bisect.bisect_right(firsts, l)  # live runs starting at or before l
        if i > 0 and merged[i - 1][1] >= f:
            continue  # overlaps the live run before it (runs are disjoint)
        if extra and extra[-1][1] >= f:
            continue
        extra.append((f, l, u))
    return sorted(merged + extra)


def _vouched(runs: Sequence[Run], ttl_s: float) -> Iterator[tuple[float, float, bool]]:
    """``[from, to)`` each run vouches for: from its first result until the
    next run starts or ``ttl_s`` after its last result."""
    for i, (f, l, u) in enumerate(runs):
        to = l + ttl_s
        if i + 1 < len(runs):
            to = min(to, runs[i + 1][0])
        if to > f:
            yield float(f), float(to), u


def _cause_of(
    service: str,
    start: float,
    hi: float,
    causes: Sequence[OutageCause],
    error_counts: Callable[[str, float, float], Mapping[str, int]] | None,
) -> tuple[str, str | None, int | None]:
    """(cause, detail, probes) of the incident ``[start, hi)``."""
    overlapping = [c for c in causes if c.at < hi and c.last_at >= start]
    if overlapping:
        first = min(overlapping, key=lambda c: c.at)
        began = [c.probes for c in overlapping if c.at >= start]
        return first.cause, first.detail, (sum(began) if began else None)
    counts = dict(error_counts(service, start, hi)) if error_counts is not None else {}
    counts = {k: v for k, v in counts.items() if v > 0}
    if not counts:
        return "unknown", None, None
    top, n = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
    detail = f"no diagnosis kept; most frequent error in the span: {top} ({n} of {sum(counts.values())})"
    return CAUSE_OF_ERROR.get(top, "unknown"), detail, None


def derive_incidents(
    service: str,
    runs: Iterable[Sequence[Any]],
    *,
    now: float,
    ttl_s: float,
    causes: Iterable[OutageCause] = (),
    error_counts: Callable[[str, float, float], Mapping[str, int]] | None = None,
) -> list[Incident]:
    """The incidents of ``service`` from its health ``runs`` (any order;
    disjoint, as :func:`merge_runs` gives them), oldest first.  ``causes``:
    the service's cause log entries; ``error_counts(service, start, end)``:
    its failures per error type in a span, for incidents without an entry
    (None: "unknown")."""
    if not (isinstance(ttl_s, (int, float)) and ttl_s >= 0):
        raise InvalidValueError(f"ttl_s={ttl_s!r} is out of range: expected seconds >= 0")
    ordered: list[Run] = sorted((int(f), int(l), bool(u)) for f, l, u in runs)
    mine = sorted((c for c in causes if c.service == service), key=lambda c: c.at)
    # (start, last down second, end, ended_by) of each incident.
    spans: list[tuple[int, int, float | None, str | None]] = []
    start: int | None = None
    last_down = 0
    for f, l, up in ordered:
        if start is not None and f - last_down > ttl_s:
            spans.append((start, last_down, float(last_down + ttl_s), "gap"))
            start = None
        if up:
            if start is not None:
                spans.append((start, last_down, float(f), "up"))
                start = None
            continue
        if start is None:
            start = f
        last_down = max(last_down, l)
    if start is not None:
        if now < last_down + ttl_s:
            spans.append((start, last_down, None, None))
        else:
            spans.append((start, last_down, float(last_down + ttl_s), "gap"))
    out = []
    for s, ld, end, by in spans:
        cause, detail, probes = _cause_of(service, float(s), math.inf if end is None else end, mine, error_counts)
        duration = (end if end is not None else max(now, float(s))) - s
        out.append(Incident(service, float(s), end, float(duration), cause, detail, probes, float(ld), by))
    return out


# ---- the heartbeat strip ----------------------------------------------------------


def heartbeat(
    runs: Iterable[Sequence[Any]],
    now: float,
    *,
    ttl_s: float = 60,
    span_s: float = 86_400,
    cells: int = HEARTBEAT_CELLS,
) -> tuple[CellState, ...]:
    """The states of ``cells`` equal cells over ``[now - span_s, now)``,
    oldest first, from health ``runs`` (as :func:`merge_runs` gives them)
    and the monitor's ``health_ttl_s``.  Pure: no clock, no I/O."""
    if not (isinstance(cells, int) and not isinstance(cells, bool) and 1 <= cells <= MAX_CELLS):
        raise InvalidValueError(f"cells={cells!r} is out of range: expected an int from 1 to {MAX_CELLS}")
    if not (isinstance(span_s, (int, float)) and math.isfinite(span_s) and span_s > 0):
        raise InvalidValueError(f"span_s={span_s!r} is out of range: expected seconds > 0")
    lo = now - span_s
    width = span_s / cells
    up = [0.0] * cells
    down = [0.0] * cells
    ordered: list[Run] = sorted((int(f), int(l), bool(u)) for f, l, u in runs)
    for a, b, is_up in _vouched(ordered, ttl_s):
        a, b = max(a, lo), min(b, now)
        if b <= a:
            continue
        into = up if is_up else down
        first = min(cells - 1, int((a - lo) // width))
        last = min(cells - 1, max(first, math.ceil((b - lo) / width) - 1))
        for i in range(first, last + 1):
            c0 = lo + i * width
            overlap = min(b, c0 + width) - max(a, c0)
            if overlap > 0:
                into[i] += overlap
    return tuple(
        CellState.PARTIAL if u > 0 and d > 0 else CellState.UP if u > 0 else CellState.DOWN if d > 0 else CellState.UNKNOWN
        for u, d in zip(up, down)
    )


# ---- reading a monitor -------------------------------------------------------------


def _error_counts(monitor: Monitor) -> Callable[[str, float, float], Mapping[str, int]]:
    """Failures per error type of a service in a span, from the engine's
    finest tier reaching back to the span's start ({} when none does)."""

    def counts(service: str, start: float, end: float) -> Mapping[str, int]:
        if service not in monitor.services():
            return {}
        now = monitor.now()
        back = math.ceil(now - start) + 1
        res = next((r for r, n in monitor.tiers if r * n >= back), None)
        if res is None:
            return {}
        try:
            spans = monitor.series_stats(service, back, resolution_s=res)
        except (MetricsError, ValueError):
            return {}
        total: Counter[str] = Counter()
        for s in spans:
            if s.start < end and s.start + res > start:
                total.update(s.error_counts)
        return total

    return counts


def _known(monitor: Monitor, st: Storage | None) -> list[str]:
    live = monitor.services()
    on_disk = st.service_names() if st is not None else []
    return live + [n for n in on_disk if n not in live]


def incidents_in_range(
    monitor: Monitor, rng: TimeRange, services: Sequence[str] | None = None, *, history: bool = True
) -> list[Incident]:
    """Incidents overlapping ``[rng.lo, rng.hi)`` of ``services`` (default:
    every service the monitor or its history file knows; unknown names are
    skipped), oldest first.  ``history``: read the history file too."""
    now = monitor.now()
    ttl = monitor.health_ttl_s
    since = rng.lo - ttl
    live = set(monitor.services())
    session = monitor.storage_session() if history else contextlib.nullcontext(None)
    with session as st:
        known = _known(monitor, st)
        names = known if services is None else [n for n in dict.fromkeys(services) if n in known]
        runs = {
            n: merge_runs(
                monitor.service(n).stored_health(max(0, since)) if n in live else [],
                st.health_runs(n, since) if st is not None else [],
            )
            for n in names
        }
        stored = st.recent("outage_causes", OUTAGE_COLUMNS, since) if st is not None else []
    causes: dict[tuple[str, float], OutageCause] = {}
    for row in stored:
        e = OutageCause.from_stored(row)
        if e is not None:
            causes[(e.service, e.at)] = e
    for e in monitor.outage_log.entries(since=since):
        causes[(e.service, e.at)] = e  # the log's copy counts the newest probes
    counts = _error_counts(monitor)
    out: list[Incident] = []
    for n in names:
        for inc in derive_incidents(n, runs[n], now=now, ttl_s=ttl, causes=causes.values(), error_counts=counts):
            if inc.start < rng.hi and (inc.end is None or inc.end > rng.lo):
                out.append(inc)
    out.sort(key=lambda i: (i.start, i.service))
    return out


def monitor_incidents(
    monitor: Monitor,
    window: str | float | None = None,
    *,
    start: float | None = None,
    end: float | None = None,
    services: Sequence[str] | None = None,
    history: bool = True,
) -> list[Incident]:
    """``Monitor.incidents``: see there."""
    if monitor.closed:
        raise MonitorClosedError("the monitor is closed: open a new Monitor(storage=...) on its file to read its incidents")
    rng = resolve_range(window, start, end, monitor.now())
    if services is not None:
        given = [services] if isinstance(services, str) else list(services)
        with monitor.storage_session() if history else contextlib.nullcontext(None) as st:
            known = _known(monitor, st)
        for n in given:
            if n not in known:
                raise UnknownServiceError(f"unknown service {n!r}: expected one of {known}")
        services = given
    return sorted(incidents_in_range(monitor, rng, services, history=history), key=lambda i: (-i.start, i.service))


def monitor_heartbeat(
    monitor: Monitor, service: str, *, span_s: float = 86_400, cells: int = HEARTBEAT_CELLS
) -> tuple[CellState, ...]:
    """``Monitor.heartbeat``: see there."""
    if monitor.closed:
        raise MonitorClosedError("the monitor is closed")
    now = monitor.now()
    runs: list[Run] = []
    if service in monitor.services():  # never creates a service
        runs = monitor.service(service).stored_health(max(0, math.floor(now - span_s - monitor.health_ttl_s)))
    return heartbeat(runs, now, ttl_s=monitor.health_ttl_s, span_s=span_s, cells=cells)
