"""Exports: statistics per service per time bucket, as CSV or JSON.

``export(monitor, path, "csv" | "json", window=... | start=.../end=...,
services=..., resolution="raw" | "1m" | "1h")`` writes one row per service
per bucket and, in JSON, a summary per service.

**Range.**  Either ``window`` (``"24h"``, ``"7d"``, a number of seconds;
ending now) or ``start``/``end`` (UTC epoch seconds; ``end`` defaults to
now; an ``end`` at or up to a minute past now means now).  Internally a
range is a half-open span of whole seconds ``[start, end)``: a window ends
with the current second, as ``Monitor.stats`` does.  A bucket is in the
range when its *start* is; buckets are whole, so the last one may hold data
from after an explicit ``end``, as ``ServiceStats`` windows may start a
little after ``end - window``.

**Where rows come from.**  ``"1m"``/``"1h"``: the 60 s / 3600 s buckets of
the live tier and, with storage, of the history file (flushed first), merged
by bucket start (the live copy wins: it includes what was reloaded plus what
this process added).  They are restored into a throw-away engine with one
tier of that resolution, whose ``series_stats`` gives one ``ServiceStats``
per bucket (reading them seals the second still being recorded, so rows
hold everything up to now).  ``"raw"``: ``Monitor.series_stats`` of the live
monitor, one row per bucket of the finest tier covering the window
(ranges ending now only).  Buckets with no data at all are left out.

**Summary (JSON).**  With ``window`` (or ``"raw"``), ``Monitor.stats`` of
the live monitor over that window, so it equals ``stats()`` exactly; that
may be answered by a finer tier and then covers up to one bucket more at the
left edge than the rows (``covered_start_epoch_s`` says where it starts).
Otherwise the throw-away engine's statistics over exactly the exported
buckets.

**Incidents (JSON).**  ``incidents``: the outages of the exported services
overlapping the range, oldest first (see ``incidents`` for how they are
derived; ``Monitor.export_incidents`` writes them alone, as CSV or JSON).

**Cells.**  Missing values are empty cells (CSV) or ``null`` (JSON), never a
zero standing in for "no data"; counts (``requests``, ``errors``,
``health_checks``, ``uptime_known_s``, ``processing_count``) are real zeros.
Times are UTC: ISO 8601 with ``Z``, and epoch seconds.  ``error_types`` is
``type=n;type=n`` most frequent first (``%``, ``;``, ``=`` and a carriage
return inside a name are percent-encoded).  The JSON layout is ``schemas/export.schema.json``
(JSON Schema 2020-12), shipped in the package: :data:`SCHEMA_PATH`.

**Writing.**  :func:`~movie_director_metrics.atomic.write_atomic`: into a
temporary file in the target directory, fsynced, then renamed over
``path``: readers see the old file or the new one, never a part.  Any
failure removes the temporary file, leaves an existing ``path`` untouched
and raises :class:`~movie_director_metrics.errors.ExportError`.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from . import _core
from .atomic import write_atomic
from .errors import (
    InvalidValueError,
    InvalidWindowError,
    MonitorClosedError,
    StorageError,
    StorageWarning,
    UnknownServiceError,
)
from .paths import expand_user
from .storage import HOUR, MINUTE, Storage
from .incidents_export import incident_dicts, incidents_for_export
from .jobs.export import job_dicts, rows_in_range
from .ranges import TimeRange, iso_utc, resolve_range

if TYPE_CHECKING:
    from .monitor import Monitor

__all__ = ["CSV_COLUMNS", "JSON_SERIES_FIELDS", "JSON_SUMMARY_FIELDS", "RESOLUTIONS", "SCHEMA_PATH", "export"]

#: ``resolution`` values and their bucket length in seconds (``"raw"``: the
#: live monitor's finest tier covering the range).
RESOLUTIONS: dict[str, int | None] = {"raw": None, "1m": MINUTE, "1h": HOUR}

#: Version of the JSON layout (``schema_version`` in every JSON export).
SCHEMA_VERSION = 1

#: The JSON Schema (draft 2020-12) every JSON export validates against.
SCHEMA_PATH = Path(__file__).with_name("schemas") / "export.schema.json"

_GAUGES: tuple[str, ...] = tuple(_core.GAUGES)

_BUCKET_COLUMNS = ("bucket_start", "bucket_start_epoch_s", "bucket_end_epoch_s", "resolution_s")
_STAT_COLUMNS: tuple[str, ...] = (
    "requests",
    "errors",
    "success_rate",
    "rpm",
    "avg_ms",
    "min_ms",
    "max_ms",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "uptime_pct",
    "uptime_known_s",
    "health_checks",
    "queue_depth_avg",
    "queue_depth_max",
    "processing_count",
    "processing_avg_ms",
    "processing_p50_ms",
    "processing_p95_ms",
) + tuple(f"{g}_{agg}" for g in _GAUGES for agg in ("avg", "max"))

#: CSV header, in this order (a stable interface: new columns go at the end).
CSV_COLUMNS: tuple[str, ...] = ("service", *_BUCKET_COLUMNS, *_STAT_COLUMNS, "error_types")

#: Keys of each JSON ``series`` entry: the CSV columns without ``service``
#: (it is the enclosing object's), ``error_counts`` (an object, most
#: frequent first) instead of the ``error_types`` string.
JSON_SERIES_FIELDS: tuple[str, ...] = (*_BUCKET_COLUMNS, *_STAT_COLUMNS, "error_counts")

#: Keys of each JSON ``summary``: the statistics of a row, ``error_counts``,
#: and the span the summary covers (``ServiceStats.start``/``.end``).
JSON_SUMMARY_FIELDS: tuple[str, ...] = (
    *_STAT_COLUMNS,
    "error_counts",
    "covered_start_epoch_s",
    "covered_end_epoch_s",
)

#: Buckets one export can hold per service (the engine's tier size limit).
MAX_BUCKETS = 99_998

# ---- the range ---------------------------------------------------------------


def _first_bucket(lo: int, res: int) -> int:
    return -(-lo // res) * res


def _check_history(rng: TimeRange, res: int, now: float, limit_s: int, what: str, hint: str) -> None:
    """Refuses a range reaching further back than the history kept at
    ``res`` (one bucket of slack), or holding more buckets than a tier can."""
    first = _first_bucket(rng.lo, res)
    label = f"window={rng.window!r}" if rng.window is not None else f"start={rng.lo}"
    oldest = math.floor(now) + 1 - limit_s
    if rng.lo < oldest - res:
        raise InvalidWindowError(
            f"{label} reaches back to {iso_utc(rng.lo)}, past the {what}: expected a range starting at "
            f"{iso_utc(oldest)} or later (at most {limit_s} s back){hint}"
        )
    if first >= rng.hi:
        raise InvalidWindowError(
            f"{label} to {rng.hi} holds no start of a {res} s bucket (they start on whole UTC "
            f"{'minutes' if res == MINUTE else 'hours'}): expected a longer range"
        )
    if (rng.hi - first) // res + 2 > MAX_BUCKETS:
        raise InvalidWindowError(
            f"{label} holds more than {MAX_BUCKETS} buckets of {res} s: expected a shorter range "
            "or a coarser resolution"
        )


# ---- statistics to cells -----------------------------------------------------


def _finite(v: float | None) -> float | None:
    return v if v is None or math.isfinite(v) else None


def _stat_values(st: _core.ServiceStats) -> dict[str, Any]:
    d: dict[str, Any] = {
        "requests": st.count,
        "errors": st.errors,
        "success_rate": _finite(st.success_rate),
        "rpm": _finite(st.rpm),
        "avg_ms": _finite(st.avg_ms),
        "min_ms": _finite(st.min_ms),
        "max_ms": _finite(st.max_ms),
        "p50_ms": _finite(st.p50_ms),
        "p90_ms": _finite(st.p90_ms),
        "p95_ms": _finite(st.p95_ms),
        "p99_ms": _finite(st.p99_ms),
        "uptime_pct": _finite(st.uptime_pct),
        "uptime_known_s": st.uptime_known_s,
        "health_checks": st.health_checks,
        "queue_depth_avg": _finite(st.queue_depth_avg),
        "queue_depth_max": st.queue_depth_max,
        "processing_count": st.processing_count,
        "processing_avg_ms": _finite(st.processing_avg_ms),
        "processing_p50_ms": _finite(st.processing_p50_ms),
        "processing_p95_ms": _finite(st.processing_p95_ms),
    }
    resources = st.resources
    for g in _GAUGES:
        gs = resources.get(g)
        d[f"{g}_avg"] = None if gs is None else _finite(gs.avg)
        d[f"{g}_max"] = None if gs is None else _finite(gs.max)
    d["error_counts"] = dict(st.error_counts)
    return d


def _has_data(st: _core.ServiceStats) -> bool:
    return bool(
        st.count
        or st.health_checks
        or st.uptime_known_s
        or st.queue_depth_max is not None
        or st.processing_count
        or st.resources
    )


def _row(name: str, st: _core.ServiceStats, res: int) -> dict[str, Any]:
    start = round(st.start)
    return {
        "service": name,
        "bucket_start": iso_utc(start),
        "bucket_start_epoch_s": start,
        "bucket_end_epoch_s": start + res,
        "resolution_s": res,
        **_stat_values(st),
    }


def _summary(st: _core.ServiceStats) -> dict[str, Any]:
    d = _stat_values(st)
    d["covered_start_epoch_s"] = st.start
    d["covered_end_epoch_s"] = st.end
    return d


@dataclass
class _ServiceExport:
    name: str
    summary: dict[str, Any]
    series: list[dict[str, Any]]


# ---- reading history -----------------------------------------------------------


def _bucketed(
    monitor: Monitor,
    name: str,
    live: bool,
    res: int,
    rng: TimeRange,
    now: float,
    storage: Storage | None,
) -> tuple[list[_core.ServiceStats], _core.ServiceStats, bool]:
    """Per-bucket statistics of ``name`` at ``res`` over the range, its
    summary, and whether any history was found."""
    first = _first_bucket(rng.lo, res)
    ttl = monitor.health_ttl_s
    # Bucket start -> a live StoredBucket, or a row the file gave back (the
    # SELECT of Storage.rows: the seven fields restore_buckets takes).
    rows: dict[int, _core.StoredBucket | tuple[Any, ...]] = {}
    live_runs: list[tuple[int, int, bool]] = []
    disk_runs: list[tuple[int, int, bool]] = []
    names: list[str] = []
    if live:
        svc = monitor.service(name)
        names = svc.error_types()
        if res in dict(monitor.tiers):
            for b in svc.stored_buckets(res, first, True):
                if first <= b.start_s < rng.hi:
                    rows[b.start_s] = b
        live_runs = svc.stored_health(rng.lo)
    if storage is not None:
        for r in storage.rows(name, res, first, rng.hi):
            rows.setdefault(int(r[0]), tuple(r))
        disk_runs = storage.health_runs(name, rng.lo - ttl)
        if not live:
            names = storage.error_types(name)
    found = bool(rows or live_runs or disk_runs)

    # A throw-away engine with one tier of `res`, its clock at the range's
    # end: its series_stats are the buckets, its stats the summary.  A past
    # end sits on the last bucket's end, so that bucket counts as whole.
    last_end = (rng.hi - 1) // res * res + res
    t_now = now if rng.ends_now else min(float(last_end), now)
    slots = (math.floor(t_now) // res * res - first) // res + 2
    engine = _core.Monitor(tiers=[(res, slots)], manual_clock=True, start_time=float(first), health_ttl_s=ttl)
    try:
        engine.advance(t_now - first)
        tmp = engine.service(name)
        report = tmp.restore_buckets(res, [rows[k] for k in sorted(rows)], names)
        # Live runs first: one the file holds a shorter copy of wins.
        tmp.restore_health(live_runs)
        tmp.restore_health(disk_runs)
        span = math.floor(t_now) + 1 - rng.lo
        series = [s for s in engine.series_stats(name, span, None, res) if s.start < rng.hi]
        summary = engine.stats(name, span)
    finally:
        engine.close()
    if report["rejected"]:
        warnings.warn(
            StorageWarning(f"{report['rejected']} damaged buckets of {name!r} were left out of the export"),
            stacklevel=4,
        )
    return series, summary, found


def _uptime_of(series: Sequence[_core.ServiceStats]) -> tuple[float | None, int]:
    """Uptime over exactly these buckets (health seconds add up across
    disjoint spans), by the engine's formula."""
    up = known = 0
    for s in series:
        if s.uptime_pct is not None:
            up += round(s.uptime_pct * s.uptime_known_s / 100.0)
            known += s.uptime_known_s
    return (100.0 * up / known if known else None), known


def _finest_tier(monitor: Monitor, window_s: int) -> int:
    """Resolution of the tier ``series_stats`` answers ``window_s`` with."""
    tiers = monitor.tiers
    return next((r for r, n in tiers if r * n >= window_s), tiers[-1][0])


def _live_summary(monitor: Monitor, name: str, window: str | float) -> _core.ServiceStats | None:
    try:
        return monitor.stats(name, window)
    except InvalidWindowError:
        return None


# ---- the export ----------------------------------------------------------------


def _collect(
    monitor: Monitor,
    rng: TimeRange,
    services: Sequence[str] | None,
    resolution: str,
    now: float,
) -> tuple[list[_ServiceExport], int]:
    """The services' rows and summaries, and the bucket length in seconds."""
    res = RESOLUTIONS[resolution]
    live = monitor.services()
    if res is not None and monitor.storage is not None:
        try:
            monitor.flush()
        except StorageError as e:
            warnings.warn(StorageWarning(f"exporting without the newest history on disk: {e}"), stacklevel=3)
    with monitor.storage_session() as storage:
        on_disk = storage.service_names() if storage is not None else []
        known = live + [n for n in on_disk if n not in live]
        names = None if services is None else _check_services(services, known)
        if res is None:
            return _raw_exports(monitor, rng, live if names is None else names, live, now)
        return _bucketed_exports(monitor, rng, names or known, names is not None, live, res, now, storage), res


def _raw_exports(
    monitor: Monitor, rng: TimeRange, names: list[str], live: list[str], now: float
) -> tuple[list[_ServiceExport], int]:
    span = rng.hi - rng.lo
    longest = max(r * n for r, n in monitor.tiers)
    if not rng.ends_now:
        raise InvalidValueError(
            f"resolution='raw' reads the live tiers, which answer ranges ending now; the range ends at "
            f"{rng.hi} ({iso_utc(rng.hi)}), before now ({now:.3f}): expected end=None, or resolution='1m' or '1h'"
        )
    if span > longest:
        label = f"window={rng.window!r}" if rng.window is not None else f"start={rng.lo}"
        raise InvalidWindowError(
            f"{label} spans {span} s, more than the live tiers keep ({longest} s): expected at most that "
            "with resolution='raw', or resolution='1m'/'1h' (with storage for longer history)"
        )
    res = _finest_tier(monitor, span)
    window = rng.window if rng.window is not None else span
    out: list[_ServiceExport] = []
    for name in names:
        if name not in live:
            raise InvalidValueError(
                f"service {name!r} has history on disk only: resolution='raw' reads the live tiers; "
                "expected resolution='1m' or '1h' for it"
            )
        series = monitor.series_stats(name, window)
        rows = [_row(name, s, res) for s in series if rng.lo <= s.start < rng.hi and _has_data(s)]
        out.append(_ServiceExport(name, _summary(monitor.stats(name, window)), rows))
    return out, res


def _bucketed_exports(
    monitor: Monitor,
    rng: TimeRange,
    names: list[str],
    explicit: bool,
    live: list[str],
    res: int,
    now: float,
    storage: Storage | None,
) -> list[_ServiceExport]:
    tiers = dict(monitor.tiers)
    if res not in tiers and storage is None:
        have = ", ".join(f"{r} s" for r in tiers)
        usable = [k for k, v in RESOLUTIONS.items() if v is None or v in tiers]
        raise InvalidValueError(
            f"resolution={_label_of(res)!r} needs a {res} s tier or storage; this monitor keeps tiers of "
            f"{have}: expected one of {usable}, or Monitor(storage=...)"
        )
    _check_history(rng, res, now, *_history_limit(monitor, res, tiers))
    out: list[_ServiceExport] = []
    for name in names:
        series, summary, found = _bucketed(monitor, name, name in live, res, rng, now, storage)
        if not found and not explicit and name not in live:
            continue  # on disk, but nothing in this range
        live_st = _live_summary(monitor, name, rng.window) if rng.window is not None and name in live else None
        if live_st is not None:
            summ = _summary(live_st)
        else:
            summ = _summary(summary)
            summ["uptime_pct"], summ["uptime_known_s"] = _uptime_of(series)
        out.append(_ServiceExport(name, summ, [_row(name, s, res) for s in series if _has_data(s)]))
    return out


def _label_of(res: int) -> str:
    return next(k for k, v in RESOLUTIONS.items() if v == res)


def _history_limit(monitor: Monitor, res: int, tiers: dict[int, int]) -> tuple[int, str, str]:
    """(seconds of history kept at ``res``, what keeps it, a hint)."""
    live_s = res * tiers.get(res, 0)
    st = monitor.storage
    if st is None:
        hint = ", or Monitor(storage=...) for longer history" + (", or resolution='1h'" if res == MINUTE and HOUR in tiers else "")
        return live_s, f"{live_s} s of {res} s buckets this monitor keeps in memory", hint
    kept = max(live_s, int(st.retention.seconds(res)))
    hint = ", or resolution='1h'" if res == MINUTE else ""
    return kept, f"retention of {res} s buckets ({kept / 86_400:g} days)", hint


def _check_services(services: Sequence[str], known: list[str]) -> list[str]:
    given = [services] if isinstance(services, str) else list(services)
    if not given:
        raise InvalidValueError(f"services={services!r} selects nothing: expected None (all) or names from {known}")
    out: list[str] = []
    for n in given:
        if not isinstance(n, str):
            raise InvalidValueError(f"services contains {n!r}: expected service names (str) from {known}")
        if n not in known:
            raise UnknownServiceError(f"unknown service {n!r}: expected one of {known}")
        if n not in out:
            out.append(n)
    return out


def _cell(v: Any) -> Any:
    return "" if v is None else v


def _error_types_cell(counts: dict[str, int]) -> str:
    def esc(s: str) -> str:
        # A carriage return too: csv quotes a field holding the line
        # terminator ("\n" here) but not a bare "\r", which readers take as
        # the end of the row.
        return s.replace("%", "%25").replace(";", "%3B").replace("=", "%3D").replace("\r", "%0D")

    return ";".join(f"{esc(k)}={n}" for k, n in counts.items())


def _write_csv(f: IO[str], exports: list[_ServiceExport]) -> None:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for e in exports:
        for r in e.series:
            w.writerow([_cell(r[c]) for c in CSV_COLUMNS[:-1]] + [_error_types_cell(r["error_counts"])])


def _json_document(
    monitor: Monitor,
    exports: list[_ServiceExport],
    rng: TimeRange,
    resolution: str,
    res_s: int,
    job_services: Sequence[str] = (),
) -> dict[str, Any]:
    """The JSON export; ``jobs`` holds the jobs finished in the range of
    the exported services (and of ``job_services``: every service with
    jobs when no services were named), ``incidents`` the outages of the
    exported services overlapping the range, oldest first."""
    st = monitor.storage
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "generator": f"movie_director_metrics {_core.__version__}",
        "window": {
            "start": iso_utc(rng.lo),
            "end": iso_utc(rng.hi),
            "start_epoch_s": rng.lo,
            "end_epoch_s": rng.hi,
            "seconds": rng.hi - rng.lo,
            "label": rng.label,
        },
        "resolution": resolution,
        "resolution_s": res_s,
        "retention": None
        if st is None
        else {"minute_days": st.retention.minute_days, "hour_days": st.retention.hour_days},
        "services": [
            {
                "service": e.name,
                "summary": {k: e.summary[k] for k in JSON_SUMMARY_FIELDS},
                "series": [{k: r[k] for k in JSON_SERIES_FIELDS} for r in e.series],
            }
            for e in exports
        ],
        "jobs": job_dicts(rows_in_range(monitor, rng, {e.name for e in exports} | set(job_services))),
        "incidents": incident_dicts(incidents_for_export(monitor, rng, [e.name for e in exports])),
    }


def _job_services(monitor: Monitor) -> list[str]:
    """Every service with jobs, in memory or in the history file."""
    names: set[str] = set()
    tracker = monitor.existing_jobs()
    if tracker is not None:
        names |= {k.service for k in tracker.keys.values()}
        names |= {r.service for r in tracker.recent()}
    with monitor.storage_session() as st:
        if st is not None:
            names |= {service for _, service, _, _, _ in st.job_series()}
            names |= {s for (s,) in st.distinct_job_services()}
    return sorted(names)


def export(
    monitor: Monitor,
    path: str | os.PathLike[str],
    format: Literal["csv", "json"] = "csv",
    *,
    window: str | float | None = None,
    start: float | None = None,
    end: float | None = None,
    services: Sequence[str] | None = None,
    resolution: Literal["raw", "1m", "1h"] = "1m",
) -> Path:
    """Writes statistics per service per bucket to ``path`` atomically and
    returns the path (absolute).

    ``format``: ``"csv"`` (columns :data:`CSV_COLUMNS`) or ``"json"``
    (:data:`SCHEMA_PATH`).  The range is ``window`` (ending now; default
    ``"24h"``) or ``start``/``end`` in UTC epoch seconds.  ``services``:
    names (default: every live service and, at ``"1m"``/``"1h"``, those
    with history in range on disk only).  ``resolution``: ``"1m"``,
    ``"1h"`` or ``"raw"`` (see the module documentation).

    Raises ``InvalidValueError``/``InvalidWindowError`` (``ValueError``)
    for bad arguments, ``UnknownServiceError`` for a name the monitor and
    its history do not know, ``MonitorClosedError`` after ``close()``, and
    ``ExportError`` (an ``OSError``) when the file cannot be written; then
    nothing is left behind and an existing file is untouched.
    """
    if format not in ("csv", "json"):
        raise InvalidValueError(f"format={format!r} is not supported: expected 'csv' or 'json'")
    if resolution not in RESOLUTIONS:
        raise InvalidValueError(f"resolution={resolution!r} is not supported: expected one of {list(RESOLUTIONS)}")
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidValueError(f"path={path!r} is not a file path: expected a str or os.PathLike")
    if monitor.closed:
        raise MonitorClosedError(
            "the monitor is closed: export before close(), or open a new Monitor(storage=...) on the "
            "same file to export its history"
        )
    target = expand_user(path, "export path", InvalidValueError).absolute()
    now = monitor.now()
    rng = resolve_range(window, start, end, now)
    exports, res_s = _collect(monitor, rng, services, resolution, now)
    if format == "csv":
        write_atomic(target, lambda f: _write_csv(f, exports))
    else:
        doc = _json_document(
            monitor, exports, rng, resolution, res_s,
            job_services=_job_services(monitor) if services is None else (),
        )
        write_atomic(target, lambda f: json.dump(doc, f, indent=1, allow_nan=False))
    return target
