"""`Monitor`: the engine plus what lives around it — history on disk,
exports, and the Prometheus view.

Recording goes straight to the engine's lock-free ``Service`` handles;
this class only adds the slow paths (flushing, reloading, exporting), so
nothing here sits between a recorder and the engine.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import sqlite3
import threading
import warnings
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from . import _core
from .errors import InvalidConfigError, MetricsError, MonitorClosedError, StorageError, StorageLockedError, StorageWarning
from .paths import expand_user
from .storage import HOUR, JOBS_NAMESPACE, MINUTE, Flusher, Retention, Storage, default_path

if TYPE_CHECKING:
    from .alerts import AlertManager
    from .collectors.config import BackendConfig
    from .collectors.scheduler import Collectors
    from .incidents import CellState, Incident, OutageCause, OutageLog
    from .jobs import JobRow, JobTracker
    from .jobs.vram import VramFit
    from .llm import LlmTracker
    from .metrics_server import MetricsServer
    from .track import Tracker

#: Serialises the lazy creation of Monitor.alerts and Monitor.llm.
_CREATE_LOCK = threading.RLock()

#: The built-in alert rule of jobs that look stuck (see jobs.outlook).
STUCK_RULE = "job_stuck"

#: How far back alert events and LLM rows are reloaded (the longest window).
RELOAD_S = 30 * 86_400

#: Tiers when storage is on: the engine's defaults plus 30 days of hours,
#: so "7d" and "30d" windows (and their uptime) come from reloaded history.
STORAGE_TIERS: tuple[tuple[int, int], ...] = ((1, 300), (10, 360), (60, 1440), (3600, 720))

StorageArg = str | os.PathLike[str] | bool | None


class _EngineView:
    """What a monitor's alert manager and LLM tracker hold of it: the
    engine, strongly, and the monitor itself only weakly (for ``closed``
    and LLM alert targets).  Holding the ``Monitor`` would make a
    reference cycle (monitor -> manager -> monitor), and a closed monitor,
    with its engine's memory, would then wait for the cyclic collector."""

    __slots__ = ("_core", "_owner")

    def __init__(self, monitor: Monitor) -> None:
        self._core = monitor.engine
        self._owner = weakref.ref(monitor)

    @property
    def closed(self) -> bool:
        owner = self._owner()
        return owner is None or owner.closed

    @property
    def tiers(self) -> list[tuple[int, int]]:
        return self._core.tiers

    def service(self, name: str, /) -> _core.Service:
        return self._core.service(name)

    def stats(self, service: str, window: str | float | None = None, /) -> _core.ServiceStats:
        return self._core.stats(service, window)

    def snapshot(self, window: str | float | None = None) -> dict[str, _core.ServiceStats]:
        return self._core.snapshot(window)

    def now(self) -> float:
        return self._core.now()

    def stuck_job_events(self, at: float) -> list[Any]:
        """``job_stuck`` alert events for jobs that became stuck (firing) or
        stopped being stuck (resolved) since the last pass."""
        owner = self._owner()
        jobs = owner.existing_jobs() if owner is not None else None
        if jobs is None:
            return []
        from .alerts.manager import AlertEvent
        from .alerts.rules import State

        events = []
        for o, stuck in jobs.stuck_changes():
            job = o.job
            what = f"job {job.job_id or '?'}" + (f" ({job.model})" if job.model else "")
            frm: State = "normal" if stuck else "firing"
            to: State = "firing" if stuck else "normal"
            why = o.stuck if stuck else "no longer stuck"
            events.append(AlertEvent(
                at, STUCK_RULE, job.service, frm, to, o.job.elapsed_s(), None, "warning",
                f"{frm} -> {to}: [warning] {STUCK_RULE} on {job.service}: {what}: {why}",
            ))
        return events

    def model_figure(self, name: str, metric: str, window: str | float) -> float | None:
        """``Monitor._llm_figure`` of a model while the monitor lives; None after."""
        owner = self._owner()
        return None if owner is None else owner._llm_figure("model", name, metric, window)

    def provider_figure(self, name: str, metric: str, window: str | float) -> float | None:
        """``Monitor._llm_figure`` of a provider while the monitor lives; None after."""
        owner = self._owner()
        return None if owner is None else owner._llm_figure("provider", name, metric, window)


#: Monitors with storage still open: closed (so flushed) at interpreter exit.
_WITH_STORAGE: weakref.WeakSet[Monitor] = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    for m in list(_WITH_STORAGE):
        m.close()


def resolve_storage(storage: StorageArg) -> Path | None:
    """``None``/``False``: memory only; ``True``: the default file (see
    :func:`movie_director_metrics.storage.default_path`); else a path."""
    if storage is None or storage is False:
        return None
    if storage is True:
        return default_path()
    if isinstance(storage, (str, os.PathLike)):
        return expand_user(storage, "storage", InvalidConfigError)
    raise InvalidConfigError(
        f"storage={storage!r} is not understood: expected None (memory only), True (the default "
        "file), or a path to a SQLite file"
    )


class Monitor:
    """Registry of services with tiered retention, dashboard reads, and
    optional history on disk.

    ``storage``: ``None`` (default) keeps everything in memory; ``True``
    uses the default file (``$MOVIE_DIRECTOR_METRICS_DB``, else the
    platform's user data directory); a path uses that SQLite file.  With
    storage, history is reloaded at start, flushed every
    ``flush_interval_s`` seconds by a background thread and at
    ``close()``, and windows up to ``"30d"`` are available.

    Every other keyword is the engine's (see ``_core.Monitor``): ``tiers``,
    ``max_services``, ``health_ttl_s``, ``manual_clock``, ``start_time``
    and the compressions.
    """

    def __init__(
        self,
        *,
        storage: StorageArg = None,
        flush_interval_s: float = 10.0,
        retention: Retention | None = None,
        tiers: Sequence[tuple[int, int]] | None = None,
        **engine: Any,
    ) -> None:
        path = resolve_storage(storage)
        if not (isinstance(flush_interval_s, (int, float)) and 0.05 <= flush_interval_s <= 86_400):
            raise InvalidConfigError(
                f"flush_interval_s={flush_interval_s!r} is out of range: expected 0.05 to 86400 seconds"
            )
        if path is not None and tiers is None:
            tiers = STORAGE_TIERS
        self._core = _core.Monitor(tiers=tiers, **engine)
        self._flush_lock = threading.Lock()
        self._closed = False
        self._storage: Storage | None = None
        self._flusher: Flusher | None = None
        self._failure: str | None = None
        self._alerts: AlertManager | None = None
        self._llm: LlmTracker | None = None
        self._jobs: JobTracker | None = None
        self._jobs_pending: list[JobRow] = []
        from .incidents import OutageLog

        self._outage_log = OutageLog()
        self._outages_pending: dict[tuple[str, float], OutageCause] = {}
        self._series_cursor = 0
        self._alert_mark = float("-inf")
        self._llm_cursor = 0
        self.load_report: dict[str, int] = {}
        if path is None:
            return
        self._resolutions = [r for r, _ in self._core.tiers if r in (MINUTE, HOUR)]
        if not self._resolutions:
            self._closed = True
            self._core.close()
            raise InvalidConfigError(
                f"storage needs a 60 s or 3600 s tier to persist; tiers are {self._core.tiers}"
            )
        self._storage = Storage(path, retention)
        try:
            self._open_storage()
        except (StorageLockedError, StorageError):
            self._closed = True
            self._core.close()
            raise
        except (OSError, sqlite3.Error) as e:
            self._report(e)  # e.g. a read-only directory: retried at each flush
        self._flusher = Flusher(self._background_flush, float(flush_interval_s))
        _WITH_STORAGE.add(self)

    # ---- storage ---------------------------------------------------------

    def _open_storage(self) -> None:
        st = self._storage
        assert st is not None
        st.open()
        windows = {r: r * s for r, s in self._core.tiers if r in self._resolutions}
        self.load_report = st.load(self._core, self._resolutions, windows, self._core.now())
        from .incidents import OUTAGE_COLUMNS

        self._outage_log.restore(st.recent("outage_causes", OUTAGE_COLUMNS, self._core.now() - RELOAD_S))

    def _report(self, e: BaseException) -> None:
        """Surfaces a storage failure once until a flush succeeds again."""
        msg = f"{type(e).__name__}: {e}"
        if self._failure is None:
            assert self._storage is not None
            warnings.warn(
                StorageWarning(
                    f"cannot write metrics history to {self._storage.path} ({msg}); recording "
                    "continues in memory and flushing is retried"
                ),
                stacklevel=3,
            )
        self._failure = msg

    def _flush(self, final: bool) -> int:
        st = self._storage
        if st is None:
            return 0
        with self._flush_lock:
            if self._closed and not final:
                raise MonitorClosedError("the monitor is closed; its history file was released")
            if not st.is_open:
                self._open_storage()
            n = st.write(self._core, self._resolutions, self._core.now(), final)
            n += self._write_jobs(st, final)
            self._write_events(st)
            self._write_outage_causes(st)
            self._failure = None
            return n

    def _write_events(self, st: Storage) -> None:
        """Appends alert events and LLM rows recorded since the last flush
        (marks move only after the rows are committed)."""
        if self._alerts is not None:
            events = self._alerts.events(since=self._alert_mark)
            from .alerts.manager import STORED_EVENT_COLUMNS

            st.append("alert_events", STORED_EVENT_COLUMNS, [e.as_row() for e in events])
            if events:
                self._alert_mark = events[-1].at
        if self._llm is not None:
            from .llm import ROW_COLUMNS

            rows, cursor = self._llm.rows_after(self._llm_cursor)
            st.append("llm_usage", ROW_COLUMNS, [tuple(r.get(c) for c in ROW_COLUMNS) for r in rows])
            self._llm_cursor = cursor
            self._llm.forget_through(cursor)  # saved: the buffer keeps only unsaved rows

    def _write_outage_causes(self, st: Storage) -> None:
        """Writes the outage causes noted or updated since the last flush
        (kept until committed: a failed flush retries them)."""
        from .incidents import OUTAGE_COLUMNS

        for e in self._outage_log.take_unsaved():
            self._outages_pending[(e.service, e.at)] = e
        st.write_outage_causes(OUTAGE_COLUMNS, [e.as_stored() for e in self._outages_pending.values()])
        self._outages_pending.clear()

    def _write_jobs(self, st: Storage, final: bool) -> int:
        """Writes the jobs engine's series (with their keys first) and the
        rows of jobs finished since the last flush."""
        jobs = self._jobs
        if jobs is None:
            return 0
        from .jobs import STORED_COLUMNS

        keys, series_cursor = jobs.series_after(self._series_cursor)
        st.append("job_series", ("name", "service", "by_label", "label", "measure"),
                  [(k.name, k.service, k.by, k.label, k.measure) for k in keys])
        self._series_cursor = series_cursor
        n = st.write(jobs.engine, jobs.resolutions, jobs.engine.now(), final, namespace=JOBS_NAMESPACE)
        # Rows taken stay here until committed: a failed flush retries them.
        self._jobs_pending.extend(jobs.take_unsaved())
        st.append("jobs", STORED_COLUMNS, [r.as_stored() for r in self._jobs_pending])
        self._jobs_pending.clear()
        return int(n)

    def _background_flush(self) -> None:
        try:
            self._flush(final=False)
        except (StorageLockedError, StorageError, OSError, sqlite3.Error) as e:
            self._report(e)
        except Exception as e:  # never let the flush thread die
            self._report(e)

    def flush(self) -> int:
        """Writes history now; returns the bucket rows written (0 without
        storage).  Raises ``StorageError`` when the file cannot be written
        (the data stays in memory and the next flush retries)."""
        try:
            return self._flush(final=False)
        except (OSError, sqlite3.Error) as e:
            self._report(e)
            raise StorageError(f"cannot write {self._storage.path if self._storage else ''}: {e}") from e

    @property
    def storage_path(self) -> Path | None:
        """The history file, or None when history is kept in memory only."""
        return self._storage.path if self._storage else None

    @property
    def storage_error(self) -> str | None:
        """Why the last flush failed, or None when storage is healthy (or off)."""
        return self._failure

    @property
    def storage(self) -> Storage | None:
        """The history file's reader/writer, or None.  Read it inside
        :meth:`storage_session`, which keeps the flush thread out."""
        return self._storage

    @contextlib.contextmanager
    def storage_session(self) -> Iterator[Storage | None]:
        """Holds the flush lock for a consistent read of the history file
        (the storage object, or None without storage or when closed)."""
        with self._flush_lock:
            st = self._storage
            yield st if st is not None and st.is_open and not self._closed else None

    @property
    def closed(self) -> bool:
        return self._closed

    # ---- the engine ------------------------------------------------------

    @property
    def engine(self) -> _core.Monitor:
        """The Rust engine this monitor wraps."""
        return self._core

    @property
    def tiers(self) -> list[tuple[int, int]]:
        return self._core.tiers

    @property
    def max_services(self) -> int:
        return self._core.max_services

    @property
    def health_ttl_s(self) -> int:
        return self._core.health_ttl_s

    @property
    def manual_clock(self) -> bool:
        return self._core.manual_clock

    def service(self, name: str) -> _core.Service:
        """The lock-free recording handle of ``name``, created on first use."""
        return self._core.service(name)

    def services(self) -> list[str]:
        return self._core.services()

    def stats(self, service: str, window: str | float | None = None) -> _core.ServiceStats:
        return self._core.stats(service, window)

    def snapshot(self, window: str | float | None = None) -> dict[str, _core.ServiceStats]:
        return self._core.snapshot(window)

    def series(
        self, service: str, metric: str, window: str | float | None = None, points: int | None = None
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        return self._core.series(service, metric, window, points)

    def series_stats(
        self,
        service: str,
        window: str | float | None = None,
        points: int | None = None,
        resolution_s: int | None = None,
    ) -> list[_core.ServiceStats]:
        return self._core.series_stats(service, window, points, resolution_s)

    def compare(self, metric: str, window: str | float | None = None) -> list[tuple[str, float | None]]:
        return self._core.compare(metric, window)

    def memory_bytes(self) -> int:
        """Bytes the engines hold: the services' and, once jobs are
        recorded, the jobs engine's series."""
        return self._core.memory_bytes() + (self._jobs.memory_bytes() if self._jobs is not None else 0)

    def now(self) -> float:
        return self._core.now()

    def advance(self, seconds: float) -> None:
        self._core.advance(seconds)
        if self._jobs is not None:
            self._jobs.engine.advance(seconds)

    # ---- alerts and LLM usage ---------------------------------------------

    @property
    def alerts(self) -> AlertManager:
        """Alert rules over this monitor's figures (created on first use;
        with storage, past events are reloaded and new ones persisted)."""
        with _CREATE_LOCK:
            return self._alerts if self._alerts is not None else self._create_alerts()

    def _create_alerts(self) -> AlertManager:
        if self._alerts is None:
            from .alerts import AlertManager

            view = _EngineView(self)
            manager = AlertManager(view, sources={"model": view.model_figure, "provider": view.provider_figure})
            manager.add_check(view.stuck_job_events)
            with self.storage_session() as st:
                if st is not None:
                    since = self._core.now() - RELOAD_S
                    from .alerts.manager import STORED_EVENT_COLUMNS

                    manager.restore_events(st.recent("alert_events", STORED_EVENT_COLUMNS, since))
            # Only events after the reloaded ones are written back.
            past = manager.events()
            self._alert_mark = past[-1].at if past else float("-inf")
            self._alerts = manager
        return self._alerts

    def _llm_figure(self, by: Literal["model", "provider"], name: str, metric: str, window: str | float) -> float | None:
        """An LLM figure for ``model:<name>`` / ``provider:<name>`` alert
        targets: ``metric`` (``alerts.LLM_METRICS``) of that model, or of
        that provider's models together, over the window; None without
        requests in it."""
        from .alerts.rules import read_llm_metric

        if by == "provider":
            from .llm.prices import normalize_provider

            name = normalize_provider(name)
        for st in self.llm.stats(window, by=by):
            if (st.model if by == "model" else st.provider) == name:
                return read_llm_metric(st, metric)
        return None

    @property
    def llm(self) -> LlmTracker:
        """LLM requests, tokens and cost per model (created on first use
        with the shipped price table; see ``use_prices``)."""
        if self._llm is None:
            with _CREATE_LOCK:  # collectors may ask from a worker thread
                if self._llm is None:
                    self.use_prices(None)
        assert self._llm is not None
        return self._llm

    def use_prices(self, user_file: str | os.PathLike[str] | None) -> LlmTracker:
        """(Re)creates the LLM tracker with the shipped prices overridden by
        ``user_file`` (LiteLLM's JSON format); history is reloaded from
        storage.  Returns the tracker."""
        from .llm import ROW_COLUMNS, LlmTracker, PriceTable

        # Rows are buffered only for the history file: without one, a
        # buffer of 10,000 row dicts would hold ~8.7 MB nobody reads
        # (870 B per row, measured by scripts/soak.py).
        tracker = LlmTracker(
            _EngineView(self), PriceTable.load(user_file), max_rows=10_000 if self._storage is not None else 0
        )
        with self.storage_session() as st:
            if st is not None:
                tracker.restore(st.recent("llm_usage", ROW_COLUMNS, self._core.now() - RELOAD_S))
        self._llm_cursor = 0
        self._llm = tracker
        return tracker

    # ---- jobs ------------------------------------------------------------------

    @property
    def jobs(self) -> JobTracker:
        """Jobs of this monitor: statistics per model and workflow, recent
        rows, running jobs (created on first use; with storage, history is
        reloaded and new rows persisted)."""
        if self._jobs is None:
            with _CREATE_LOCK:  # collectors may ask from a worker thread
                if self._jobs is None:
                    self._jobs = self._create_jobs()
        return self._jobs

    #: How far back a job's peak VRAM is looked up (the 10 s tier's hour).
    PEAK_VRAM_LOOKBACK_S = 3600

    def _peak_vram(self, service: str, start: float, end: float) -> float | None:
        """The highest ``vram_used_bytes`` reading of ``service`` between
        ``start`` and ``end`` (UTC epoch s), from the 1 s or 10 s tier;
        None when none was polled then (or it is too long ago)."""
        if self._closed:
            return None
        span = math.ceil(self._core.now() - start) + 1
        if not 0 < span <= self.PEAK_VRAM_LOOKBACK_S:
            return None
        res = 1 if span <= 300 else 10
        try:
            spans = self._core.series_stats(service, span, resolution_s=res)
        except (MetricsError, ValueError):
            return None  # not a service of this monitor, or no such tier
        # Whole buckets (the newest one's end is "now", which the wall
        # clock a job was timed with may already have passed).
        peaks = [
            g.max
            for st in spans
            if st.start + res > start and st.start <= end
            for g in (st.resources.get("vram_used_bytes"),)
            if g is not None and g.samples
        ]
        return max(peaks) if peaks else None

    def _vram_before(self, service: str, t: float) -> float | None:
        """The ``vram_used_bytes`` reading of ``service`` in the last bucket
        with one in the 30 s (plus one bucket) before ``t``: whole buckets
        that ended by ``t``; None when none."""
        if self._closed:
            return None
        tiers = self._core.tiers
        span = math.ceil(self._core.now() - t) + 31
        # The finest tier that still holds the span (1 s or 10 s live; the
        # minute tier of a history read back by the CLI).
        res = next((r for r, n in tiers if r * n >= span + r), tiers[-1][0])
        span += res
        if not 0 < span <= max(self.PEAK_VRAM_LOOKBACK_S, 2 * res + 31):
            return None
        try:
            spans = self._core.series_stats(service, span, resolution_s=res)
        except (MetricsError, ValueError):
            return None
        # A bucket's lowest reading (buckets keep min/max, not the last one):
        # at the 10 s tier the smaller baseline errs towards a larger growth.
        before = [
            g.min
            for st in spans
            if t - 30 - res <= st.start and st.start + res <= t
            for g in (st.resources.get("vram_used_bytes"),)
            if g is not None and g.samples
        ]
        return before[-1] if before else None

    def vram_fits(self, service: str | None = None) -> list[VramFit]:
        """Per (service, model): the VRAM the model's recent jobs grew by
        against the backend's headroom (the latest used/total readings
        within the hour): whether the next job fits (see
        :mod:`movie_director_metrics.jobs.vram`).  Empty without jobs."""
        tracker = self._jobs
        if tracker is None or self._closed:
            return []
        from .jobs.vram import vram_fits

        def gauges(name: str) -> tuple[float | None, float | None]:
            try:
                res = self._core.stats(name, "1h").resources
            except (MetricsError, ValueError):
                return None, None
            used, total = res.get("vram_used_bytes"), res.get("vram_total_bytes")
            return (used.last if used is not None else None), (total.last if total is not None else None)

        return vram_fits(tracker.recent(service=service), self._vram_before, gauges)

    def existing_jobs(self) -> JobTracker | None:
        """The jobs tracker if one was created (reads that must not create it)."""
        return self._jobs

    def _create_jobs(self) -> JobTracker:
        from .jobs import STORED_COLUMNS, JobTracker, SeriesKey

        if self._closed:
            raise MonitorClosedError("the monitor is closed")
        tracker = JobTracker(
            manual_clock=self._core.manual_clock,
            start_time=self._core.now() if self._core.manual_clock else None,
            max_rows=10_000 if self._storage is not None else 0,
        )
        tracker.peak_vram = self._peak_vram
        with self.storage_session() as st:
            if st is not None:
                stored = [(name, SeriesKey(sv, by, label, m)) for name, sv, by, label, m in st.job_series()]
                # A key whose hash does not match its name is damaged: skipped.
                tracker.restore_keys(k for name, k in stored if k.name == name)
                windows = {r: r * n for r, n in tracker.engine.tiers}
                report = st.load(tracker.engine, tracker.resolutions, windows, self._core.now(), namespace=JOBS_NAMESPACE)
                self.load_report = {**self.load_report, **{f"jobs_{k}": v for k, v in report.items()}}
                since = self._core.now() - RELOAD_S
                rows = st.recent("jobs", STORED_COLUMNS, since)
                tracker.restore_rows(rows[-tracker.recent_limit:] if tracker.recent_limit else [])
                self._series_cursor = tracker.series_after(0)[1]
        return tracker

    # ---- outage history ----------------------------------------------------------

    @property
    def outage_log(self) -> OutageLog:
        """Why each outage began, as the collectors diagnosed it (with
        storage, reloaded at open and persisted at each flush)."""
        return self._outage_log

    def incidents(
        self,
        window: str | float | None = None,
        *,
        start: float | None = None,
        end: float | None = None,
        services: Sequence[str] | None = None,
        history: bool = True,
    ) -> list[Incident]:
        """Outages overlapping the range, **newest first**: ``window``
        (ending now; default ``"24h"``) or ``start``/``end`` (UTC epoch
        seconds), of ``services`` (default: all, the history file's
        included).  Derived from the health runs of the engine and, with
        ``history``, of the history file (``history=False`` reads memory
        only: no file, no wait for a flush; the engine holds what it
        reloaded, 30 days with storage).  See ``incidents`` for the rules
        (gaps, ongoing, cause).  ``UnknownServiceError`` for a name neither
        knows."""
        from .incidents import monitor_incidents

        return monitor_incidents(self, window, start=start, end=end, services=services, history=history)

    def heartbeat(self, service: str, *, span_s: float = 86_400, cells: int = 48) -> tuple[CellState, ...]:
        """``cells`` states of ``service`` over the last ``span_s`` seconds,
        oldest first (``CellState``: UNKNOWN 0, UP 1, DOWN 2, PARTIAL 3).
        Reads the engine only (no file, no lock): cheap enough for a UI's
        main thread.  All UNKNOWN for a service the monitor does not know
        (none is created)."""
        from .incidents import monitor_heartbeat

        return monitor_heartbeat(self, service, span_s=span_s, cells=cells)

    # ---- publishing --------------------------------------------------------------

    def publish(self) -> None:
        """Makes this monitor the one ``movie_director_metrics.shared()``
        records into (other code in the process: add-ons, scripts)."""
        if self._closed:
            raise MonitorClosedError("the monitor is closed; a closed monitor cannot be published")
        from .shared import shared

        shared().publish(self)

    def unpublish(self) -> None:
        """Withdraws this monitor from ``shared()`` if it is the published
        one (``close()`` does this too)."""
        from .shared import shared

        shared().unpublish(self)

    # ---- export and Prometheus -------------------------------------------

    def export(
        self,
        path: str | os.PathLike[str],
        format: Literal["csv", "json"] = "csv",
        *,
        window: str | float | None = None,
        start: float | None = None,
        end: float | None = None,
        services: Sequence[str] | None = None,
        resolution: Literal["raw", "1m", "1h"] = "1m",
    ) -> Path:
        """Writes statistics per service per bucket to ``path`` (CSV or
        JSON; see the README for columns and ``schemas/export.schema.json``)
        atomically; returns the path."""
        from .export import export

        return export(self, path, format, window=window, start=start, end=end, services=services, resolution=resolution)

    def export_jobs(
        self,
        path: str | os.PathLike[str],
        format: Literal["csv", "json"] = "csv",
        *,
        window: str | float | None = None,
        start: float | None = None,
        end: float | None = None,
        services: Sequence[str] | None = None,
    ) -> Path:
        """Writes the jobs finished in the range (default the last 24 h),
        one row each with its tags, to ``path`` (CSV or JSON) atomically;
        returns the path.  See docs/jobs.md."""
        from .jobs.export import export_jobs

        return export_jobs(
            self, path, format, window=window, start=start, end=end,
            services=list(services) if services is not None else None,
        )

    def export_incidents(
        self,
        path: str | os.PathLike[str],
        format: Literal["csv", "json"] = "csv",
        *,
        window: str | float | None = None,
        start: float | None = None,
        end: float | None = None,
        services: Sequence[str] | None = None,
    ) -> Path:
        """Writes the incidents overlapping the range (default the last
        24 h), oldest first, to ``path`` (CSV or JSON) atomically; returns
        the path.  See docs/incidents.md."""
        from .incidents_export import export_incidents

        return export_incidents(self, path, format, window=window, start=start, end=end, services=services)

    def openmetrics(self, *, openmetrics: bool = True) -> str:
        """The Prometheus exposition of every service (OpenMetrics 1.0, or
        text 0.0.4 with ``openmetrics=False``)."""
        from .openmetrics import render

        return render(self, openmetrics=openmetrics)

    def serve_metrics(self, host: str = "127.0.0.1", port: int = 9464) -> MetricsServer:
        """Serves ``/metrics`` from a background thread; returns the server
        (``.url``, ``.close()``)."""
        from .metrics_server import serve_metrics

        return serve_metrics(self, host=host, port=port)

    # ---- collectors and instrumentation ----------------------------------

    #: The running collectors, kept by :meth:`start_collectors`.
    _collectors: Collectors | None = None

    def start_collectors(
        self,
        backends: str | os.PathLike[str] | Sequence[BackendConfig] | None = None,
        *,
        allow_remote: bool = False,
    ) -> Collectors:
        """Starts background workers polling the backends into this monitor
        and returns them (also kept as :attr:`collectors`; stopped by
        ``close()``).

        ``backends``: ``None`` reads the default ``backends.toml`` (see
        ``collectors.config.default_config_path``), or the built-in local
        defaults when there is none; a path reads that file; a list of
        ``BackendConfig`` is used as given.  ``allow_remote=False`` never
        contacts non-loopback hosts.  A second call stops the first set.
        """
        from .collectors.config import load_config
        from .collectors.scheduler import Collectors

        if self._closed:
            raise MonitorClosedError("the monitor is closed; collectors cannot record into it")
        if backends is None or isinstance(backends, (str, os.PathLike)):
            configs = load_config(backends)
        else:
            configs = list(backends)
        collectors = Collectors(self, configs, allow_remote=allow_remote)
        if self._collectors is not None:
            self._collectors.stop()
        self._collectors = collectors.start()
        return collectors

    @property
    def collectors(self) -> Collectors | None:
        """The collectors :meth:`start_collectors` started, or None."""
        return self._collectors

    def track(self, service: str, op: str | None = None) -> Tracker:
        """Times a ``with`` block or each call of a decorated function as one
        request of ``service`` (``"service:op"`` with ``op``); an exception
        records a failure typed by its class name and propagates unchanged."""
        from .track import track

        return track(self, service, op)

    # ---- lifetime --------------------------------------------------------

    def close(self) -> None:
        """Stops the flush thread, writes what is left (partial buckets
        included) and closes the file and the engine (idempotent)."""
        if self._collectors is not None:
            self._collectors.stop()
            self._collectors = None
        if self._alerts is not None and self._alerts.running:
            self._alerts.stop()
        self.unpublish()
        if self._closed:
            return
        self._closed = True
        if self._flusher is not None:
            self._flusher.stop()
        if self._storage is not None:
            try:
                self._flush(final=True)
            except Exception as e:
                self._report(e)
            self._storage.close()
        self._core.close()
        if self._jobs is not None:
            self._jobs.close()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        self.close()
        return False

    def __del__(self) -> None:
        # A forgotten close() must not leave the flush thread and file lock.
        if not getattr(self, "_closed", True):
            try:
                self.close()
            except Exception:
                pass

    def __repr__(self) -> str:
        where = f"storage={str(self._storage.path)!r}" if self._storage else "in memory"
        return f"Monitor({len(self.services())} services, {where})"
