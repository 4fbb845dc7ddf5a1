"""`JobTracker`: jobs of one monitor — their statistics, rows and the jobs
still running.

Where each number lives:

* **Statistics** per (service), (service, model) and (service, workflow)
  come from engine series in a jobs engine of its own (a second
  ``_core.Monitor``, tiers :data:`JOB_TIERS`), so they have the engine's
  percentiles (bin error ≤ 0.39 %), persistence and accuracy.  Jobs take
  seconds to minutes, so the tiers start at a minute: 1 h of minutes,
  24 h of 10 minutes, 30 days of hours (a window is covered to its
  tier's bucket: 1 h to the minute, 24 h to 10 minutes); that keeps a
  label busy all day at ~10 KiB instead of the ~110 KiB a day of minutes
  would cost.  Every tier is persisted.
  Each label has two series: *run* (latency = processing time, failures
  with their error type) and *wait* (latency = queue wait, recorded only
  when the start was reported — an unknown wait is never a 0).  Series
  are named by a hash of their key (``SeriesKey.name``); the key is kept
  beside them in the history file.
* **Labels are bounded**: at most ``max_models`` models and
  ``max_workflows`` workflows per service (64 each by default); later new
  ones count under ``"other"``.  At most ``max_services`` services have
  jobs (15: each label costs two engine series, and 15 services x 2 x
  (1 + 65 + 65) series fit the engine's 4096).
* **Rows** (:mod:`.rows`, with the free-form tags) wait in a bounded
  buffer for the history file, and the last ``recent`` ones stay for the
  views.  Tags never become series, so their cardinality costs only rows.
* **Running jobs** are the ``Job`` objects not yet finished (at most
  ``max_active``; older ones leave the view, counted in ``faults``).

Recording never raises: bad input and limits are counted per kind in
``faults`` and logged once per kind, unless ``strict=True`` (for tests),
which raises ``InvalidValueError``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .. import _core
from .._core import record_each
from ..errors import InvalidValueError, MetricsError, UnknownServiceError
from .job import Job, PeakVram, new_job
from .outlook import MIN_JOBS, JobOutlook, StuckRule, outlook
from .rows import JobRow, QueuedJob

__all__ = ["BY", "JOB_TIERS", "OTHER_LABEL", "JobStats", "JobTracker", "SeriesKey"]

log = logging.getLogger("movie_director_metrics.jobs")

By = Literal["service", "model", "workflow"]
#: Label kinds statistics are grouped by.
BY: tuple[By, ...] = ("service", "model", "workflow")
#: The label of models / workflows past the per-service limit.
OTHER_LABEL = "other"
#: Tiers of the jobs engine (see the module doc); all of them persist.
JOB_TIERS: tuple[tuple[int, int], ...] = ((60, 60), (600, 144), (3600, 720))

#: Backend job ids remembered per source for linking (a job is seen by
#: the other source within seconds; thousands of jobs later is not linked).
LINK_IDS = 4096
#: Measures kept per label.
MEASURES = ("run", "wait")

#: The engine series one finish records into (run or wait measure).
_Handles = tuple[_core.Service, ...]


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """What one series of the jobs engine holds."""

    service: str
    by: str
    label: str
    measure: str

    @property
    def name(self) -> str:
        """The engine name: stable across runs, within the engine's limit."""
        h = hashlib.blake2b("\0".join((self.service, self.by, self.label)).encode(), digest_size=12)
        return f"{self.measure}:{h.hexdigest()}"


@dataclass(frozen=True, slots=True)
class JobStats:
    """Jobs of one label over one window.  Durations in ms, ``None`` when
    the window has none (never a 0 that looks real)."""

    service: str
    by: str
    label: str
    window_s: int
    count: int
    failed: int
    success_rate: float | None
    processing_avg_ms: float | None
    processing_p50_ms: float | None
    processing_p90_ms: float | None
    processing_p95_ms: float | None
    processing_p99_ms: float | None
    queue_wait_count: int
    queue_wait_avg_ms: float | None
    queue_wait_p50_ms: float | None
    queue_wait_p95_ms: float | None
    queue_wait_p99_ms: float | None
    error_counts: Mapping[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {f: (dict(v) if isinstance(v := getattr(self, f), Mapping) else v) for f in self.__slots__}


class JobTracker:
    """Jobs of one monitor (see the module doc).

    ``manual_clock`` and ``start_time`` are the monitor engine's, so time
    lines up; ``tiers`` defaults to :data:`JOB_TIERS`.  Thread-safe: jobs may be created
    and finished from any thread.
    """

    def __init__(
        self,
        *,
        tiers: Sequence[tuple[int, int]] | None = None,
        manual_clock: bool = False,
        start_time: float | None = None,
        max_models: int = 64,
        max_workflows: int = 64,
        max_services: int = 15,
        max_rows: int = 10_000,
        recent: int = 200,
        max_active: int = 1024,
        strict: bool = False,
    ) -> None:
        for name, v, hi in (
            ("max_models", max_models, 1024),
            ("max_workflows", max_workflows, 1024),
            ("max_services", max_services, 64),
            ("max_rows", max_rows, 10_000_000),
            ("recent", recent, 100_000),
            ("max_active", max_active, 1_000_000),
        ):
            if not (isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= hi):
                raise InvalidValueError(f"{name}={v!r} is out of range: expected 0 to {hi}")
        series_per_service = len(MEASURES) * (1 + max_models + 1 + max_workflows + 1)
        if max_services * series_per_service > _core.MAX_SERVICES_LIMIT:
            raise InvalidValueError(
                f"max_services={max_services} x {series_per_service} series per service exceeds the "
                f"engine's {_core.MAX_SERVICES_LIMIT}: lower max_services, max_models or max_workflows"
            )
        self.engine = _core.Monitor(
            tiers=JOB_TIERS if tiers is None else tiers,
            max_services=_core.MAX_SERVICES_LIMIT,
            manual_clock=manual_clock,
            start_time=start_time,
        )
        self.max_models = max_models
        self.max_workflows = max_workflows
        self.max_services = max_services
        self.strict = strict
        self._lock = threading.Lock()
        # (service, model, workflow) -> the engine handles a finish records into.
        self._handles: dict[tuple[str, str | None, str | None], tuple[_Handles, _Handles]] = {}
        self._labels: dict[tuple[str, str], set[str]] = {}
        self._services: set[str] = set()
        self.keys: dict[str, SeriesKey] = {}
        self._key_log: list[SeriesKey] = []  # creation order, for storage
        self._active: dict[int, Job] = {}
        self._max_active = max_active
        self._extra_active: Callable[[], list[Job]] | None = None
        self._queued: dict[str, tuple[QueuedJob, ...]] = {}
        #: When a running job counts as stuck (see :mod:`.outlook`).
        self.stuck_rule = StuckRule()
        self._stuck: dict[int, JobOutlook] = {}
        # Finished jobs are kept as they came (a Job or a JobRow); a Job
        # becomes a row only when read, off the recording path.
        self._unsaved: deque[Job | JobRow] = deque(maxlen=max_rows)
        self._recent: deque[Job | JobRow] = deque(maxlen=recent)
        self.recent_limit = recent
        self.faults: Counter[str] = Counter()
        #: Answers a job's peak VRAM from the backend's polled readings (the
        #: monitor sets it); rows get it when they are built, off the
        #: recording path.
        self.peak_vram: PeakVram | None = None
        # Backend job ids recorded from the user's code and from collectors,
        # so the same job seen both ways counts once.
        self._user_ids: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._backend_ids: OrderedDict[tuple[str, str], None] = OrderedDict()
        #: Jobs seen both from the user's code and on the backend, counted once.
        self.linked = 0

    # ---- faults --------------------------------------------------------------

    def job_fault(self, kind: str, message: str) -> None:
        """Counts a fault of ``kind``; logs its first occurrence; raises in
        strict mode."""
        if self.strict:
            raise InvalidValueError(message)
        first = kind not in self.faults
        self.faults[kind] += 1
        if first:
            log.warning("job recording: %s (further %r faults are only counted)", message, kind)

    # ---- creating --------------------------------------------------------------

    def job(
        self,
        service: str,
        *,
        model: str | None = None,
        workflow: str | None = None,
        tags: Mapping[str, object] | None = None,
        job_id: str | None = None,
    ) -> Job:
        """A new job, queued from now (see :class:`Job`)."""
        job = new_job(self, service, model=model, workflow=workflow, tags=tags, job_id=job_id)
        self.adopt(job)
        return job

    def include_active(self, source: Callable[[], list[Job]] | None) -> None:
        """Also list the jobs ``source`` returns as running/queued (the
        shared handle's, while this tracker's monitor is published)."""
        self._extra_active = source

    def adopt(self, job: Job) -> None:
        """Lists an unfinished job as running/queued here."""
        # One dict store: atomic under the GIL, so the recording path takes
        # no lock; only the rare eviction does.
        self._active[id(job)] = job  # id(job) is Job.key, without the property call
        if len(self._active) > self._max_active:
            with self._lock:
                while len(self._active) > self._max_active:
                    self._active.pop(next(iter(self._active)), None)
                    self.faults["active_dropped"] += 1

    def active(self) -> list[Job]:
        """Unfinished jobs recorded from code (this tracker's and, while
        published, the shared handle's), oldest first."""
        with self._lock:
            jobs = list(self._active.values())
        extra = self._extra_active
        if extra is not None:
            jobs.extend(j for j in extra() if j.state != "finished")
            jobs.sort(key=lambda j: j.submitted_at)
        return jobs

    def set_backend_queue(self, service: str, jobs: Sequence[QueuedJob]) -> None:
        """What a collector sees waiting or running on ``service`` now
        (replaces its previous report; at most 256 are kept)."""
        with self._lock:
            self._queued[service] = tuple(jobs[:256])

    def queued(self) -> list[Job | QueuedJob]:
        """Every job not yet finished: those recorded from code, then those
        only a collector sees on its backend (a job seen both ways is listed
        once, as the code's)."""
        mine = self.active()
        ids = {(j.service, j.job_id) for j in mine if j.job_id is not None}
        with self._lock:
            seen = [q for jobs in self._queued.values() for q in jobs if q.key not in ids]
        return [*mine, *seen]

    # ---- finishing ---------------------------------------------------------------

    def job_finished(self, job: Job) -> None:
        """Records a finished job: its series and its row (built when read).
        A job a collector already recorded from the backend (same service
        and backend job id) is counted once: this one is then dropped."""
        self._active.pop(id(job), None)
        if job.job_id is not None and self._link((job.service, job.job_id), self._user_ids, self._backend_ids):
            return
        wait, processing = job.timings_ms()
        self._record(job.service, job.model, job.workflow, wait, processing, bool(job.ok), job.error)
        self._keep(job, True)

    def record(self, row: JobRow, *, store: bool = True) -> None:
        """Records a finished job given as a row (collectors use this for
        jobs they see on a backend).  ``store=False`` for rows reloaded
        from the history file: their series were restored with it."""
        row.check()
        if store and row.peak_vram_bytes is None and self.peak_vram is not None:
            peak = self.peak_vram(row.service, row.started_at or row.submitted_at, row.finished_at)
            if peak is not None:
                row = dataclasses.replace(row, peak_vram_bytes=peak)
        if store and row.source == "backend" and row.job_id is not None:
            key = (row.service, row.job_id)
            running = any(j.job_id == row.job_id and j.service == row.service for j in self.active())
            if running or self._link(key, self._backend_ids, self._user_ids):
                if running:
                    self.linked += 1
                return
        self._record(row.service, row.model, row.workflow, row.queue_wait_ms, row.processing_ms, row.ok, row.error)
        self._keep(row, store)

    def _link(
        self, key: tuple[str, str], mine: OrderedDict[tuple[str, str], None], theirs: OrderedDict[tuple[str, str], None]
    ) -> bool:
        """Whether ``key`` was recorded by the other source already (then it
        counts as linked); else remembers it as recorded by this one."""
        with self._lock:
            if key in theirs:
                self.linked += 1
                return True
            mine[key] = None
            if len(mine) > LINK_IDS:
                mine.popitem(last=False)
            return False

    def _record(
        self,
        service: str,
        model: str | None,
        workflow: str | None,
        wait: float | None,
        processing: float,
        ok: bool,
        error: str | None,
    ) -> None:
        handles = self._handles.get((service, model, workflow))
        if handles is None:
            handles = self._resolve(service, model, workflow)
        run, wait_series = handles
        if run:
            record_each(run, processing, ok, None if ok else (error or "error"))
            if wait is not None:
                record_each(wait_series, wait)

    def _keep(self, item: Job | JobRow, store: bool) -> None:
        """Buffers a finished job.  No lock: ``deque.append`` is atomic, and
        storage takes rows with ``popleft`` (``take_unsaved``), so each row
        is taken exactly once whatever the interleaving."""
        self._recent.append(item)
        if store and self._unsaved.maxlen:
            if len(self._unsaved) == self._unsaved.maxlen:
                self.faults["rows_dropped"] += 1  # the oldest unsaved row goes
            self._unsaved.append(item)

    def _resolve(self, service: str, model: str | None, workflow: str | None) -> tuple[_Handles, _Handles]:
        """The run and wait handles of a job's labels, creating series on
        first use (bounded: past the limits, labels become ``other``)."""
        with self._lock:
            if service not in self._services and len(self._services) >= self.max_services:
                self.faults["service_limit"] += 1
                if self.faults["service_limit"] == 1:
                    log.warning(
                        "jobs of %r are not counted: %d services have jobs already", service, self.max_services
                    )
                return (), ()
            self._services.add(service)
            labels = [("service", "")]
            if model is not None:
                labels.append(("model", self._bounded(service, "model", model, self.max_models)))
            if workflow is not None:
                labels.append(("workflow", self._bounded(service, "workflow", workflow, self.max_workflows)))
            keys = [SeriesKey(service, by, label, m) for m in MEASURES for by, label in labels]
            for k in keys:
                if k.name not in self.keys:
                    self.keys[k.name] = k
                    self._key_log.append(k)
            n = len(keys) // 2
            engine = [self.engine.service(k.name) for k in keys]
            handles = (tuple(engine[:n]), tuple(engine[n:]))
            if len(self._handles) > 65_536:  # (model, workflow) pairs: a cache, not a record
                self._handles.clear()
            self._handles[(service, model, workflow)] = handles
            return handles

    def _bounded(self, service: str, by: str, label: str, limit: int) -> str:
        seen = self._labels.setdefault((service, by), set())
        if label in seen:
            return label
        if len(seen) < limit:
            seen.add(label)
            return label
        self.faults[f"{by}_other"] += 1
        return OTHER_LABEL

    # ---- reading -------------------------------------------------------------------

    def stats(self, window: str | float = "5m", by: By = "model", service: str | None = None) -> list[JobStats]:
        """Statistics per label of kind ``by`` (``"service"``, ``"model"``
        or ``"workflow"``) over ``window``, busiest first; only ``service``'s
        when given.  Labels without jobs in the window are left out."""
        if by not in BY:
            raise InvalidValueError(f"by={by!r}: expected one of {', '.join(BY)}")
        with self._lock:
            keys = [k for k in self.keys.values() if k.by == by and k.measure == "run"]
        out: list[JobStats] = []
        for k in keys:
            if service is not None and k.service != service:
                continue
            run = self._stats_or_none(k.name, window)
            if run is None or run.count == 0:
                continue
            wait_name = SeriesKey(k.service, k.by, k.label, "wait").name
            wait = self._stats_or_none(wait_name, window) if wait_name in self.keys else None
            has_wait = wait is not None and wait.count > 0
            out.append(
                JobStats(
                    service=k.service,
                    by=k.by,
                    label=k.label,
                    window_s=run.window_s,
                    count=run.count,
                    failed=run.errors,
                    success_rate=run.success_rate,
                    processing_avg_ms=run.avg_ms,
                    processing_p50_ms=run.p50_ms,
                    processing_p90_ms=run.p90_ms,
                    processing_p95_ms=run.p95_ms,
                    processing_p99_ms=run.p99_ms,
                    queue_wait_count=wait.count if has_wait and wait else 0,
                    queue_wait_avg_ms=wait.avg_ms if has_wait and wait else None,
                    queue_wait_p50_ms=wait.p50_ms if has_wait and wait else None,
                    queue_wait_p95_ms=wait.p95_ms if has_wait and wait else None,
                    queue_wait_p99_ms=wait.p99_ms if has_wait and wait else None,
                    error_counts=run.error_counts,
                )
            )
        out.sort(key=lambda s: (-s.count, s.service, s.label))
        return out

    def _stats_or_none(self, name: str, window: str | float) -> _core.ServiceStats | None:
        """A series' statistics; None for a key the engine holds no series
        of: a history file keeps the keys of every label, but only the
        series that recorded something (a label whose jobs never reported
        a start has a wait key and no wait series)."""
        try:
            return self.engine.stats(name, window)
        except UnknownServiceError:
            return None

    def outlook(self, window: str | float = "24h", rule: StuckRule | None = None) -> list[JobOutlook]:
        """Every unfinished job (:meth:`queued` order) with its position,
        ETA and whether it looks stuck (see :mod:`.outlook`), from the
        processing percentiles over ``window``.  Only the services with an
        unfinished job are read, and nothing when there is none: the alert
        manager asks at every evaluation (each Blender tick)."""
        jobs = self.queued()
        if not jobs:
            return []
        table: dict[tuple[str, str | None], tuple[float, float, float]] = {}
        for service in {j.service for j in jobs}:
            for by in ("model", "service"):
                for st in self.stats(window, by=by, service=service):
                    p50, p90, p95 = st.processing_p50_ms, st.processing_p90_ms, st.processing_p95_ms
                    if st.count >= MIN_JOBS and p50 is not None and p90 is not None and p95 is not None:
                        table[(st.service, st.label if by == "model" else None)] = (p50 / 1e3, p90 / 1e3, p95 / 1e3)

        def stalled(job: Any) -> float | None:
            return job.progress_stalled_s() if isinstance(job, Job) else None

        return outlook(jobs, lambda service, model: table.get((service, model)), rule or self.stuck_rule, stalled)

    def stuck_changes(self, window: str | float = "24h") -> list[tuple[JobOutlook, bool]]:
        """Jobs that became stuck (``True``) or stopped being stuck —
        finished, or moving again (``False``) — since the last call; the
        alert manager turns them into ``job_stuck`` events."""
        now_stuck = {id(o.job): o for o in self.outlook(window) if o.stuck is not None}
        with self._lock:
            before = self._stuck
            self._stuck = now_stuck
        changes = [(o, True) for k, o in now_stuck.items() if k not in before]
        changes += [(o, False) for k, o in before.items() if k not in now_stuck]
        return changes

    def recent(self, limit: int | None = None, service: str | None = None) -> list[JobRow]:
        """The last finished jobs, newest first."""
        with self._lock:
            items = [r for r in reversed(self._recent) if service is None or r.service == service]
        return [self._row(r) for r in (items if limit is None else items[:limit])]

    def series_totals(self) -> list[tuple[SeriesKey, Mapping[str, Any], Mapping[str, Any] | None]]:
        """Lifetime totals of every label since this tracker started (for
        Prometheus counters): ``(run key, run totals, wait totals or None)``
        per label, in key order.  History reloaded from a file is not in
        them, so they only grow."""
        with self._lock:
            keys = sorted((k for k in self.keys.values() if k.measure == "run"),
                          key=lambda k: (k.by, k.service, k.label))
        out: list[tuple[SeriesKey, Mapping[str, Any], Mapping[str, Any] | None]] = []
        for k in keys:
            wait = SeriesKey(k.service, k.by, k.label, "wait").name
            out.append((
                k,
                self.engine.service(k.name).totals(),
                self.engine.service(wait).totals() if wait in self.keys else None,
            ))
        return out

    @property
    def resolutions(self) -> list[int]:
        """Bucket lengths the history file keeps of the jobs engine: all."""
        return [r for r, _ in self.engine.tiers]

    def memory_bytes(self) -> int:
        """Bytes of the jobs engine (the series); rows are extra."""
        return int(self.engine.memory_bytes())

    # ---- storage --------------------------------------------------------------------

    def _row(self, item: Job | JobRow) -> JobRow:
        return item if isinstance(item, JobRow) else item.row(self.peak_vram)

    def take_unsaved(self) -> list[JobRow]:
        """Removes and returns the rows not yet given to storage, oldest
        first (the caller keeps them until they are committed)."""
        items = []
        while True:
            try:
                items.append(self._unsaved.popleft())
            except IndexError:
                return [self._row(r) for r in items]

    def series_after(self, cursor: int = 0) -> tuple[list[SeriesKey], int]:
        """``(series keys created after cursor, new cursor)`` for the
        history file (at most 4096 keys exist, so all are kept)."""
        with self._lock:
            return self._key_log[cursor:], len(self._key_log)

    def restore_keys(self, keys: Iterable[SeriesKey]) -> None:
        """Puts stored series keys back (before their series are loaded), so
        the label limits count them and reads find them."""
        with self._lock:
            for k in keys:
                if k.by not in BY or k.measure not in MEASURES:
                    continue
                self.keys[k.name] = k
                self._services.add(k.service)
                if k.by != "service" and k.label != OTHER_LABEL:
                    self._labels.setdefault((k.service, k.by), set()).add(k.label)

    def restore_rows(self, rows: Iterable[Sequence[Any]]) -> dict[str, int]:
        """Puts stored rows back into the recent view (not into the series:
        those come back with the engine's own history)."""
        report = {"restored": 0, "rejected": 0}
        checked = []
        for values in rows:
            try:
                checked.append(JobRow.from_stored(values))
            except (InvalidValueError, MetricsError, TypeError, ValueError):
                report["rejected"] += 1
        with self._lock:
            for row in checked:
                self._recent.append(row)
                report["restored"] += 1
        return report

    def close(self) -> None:
        self.engine.close()

    def __repr__(self) -> str:
        return f"JobTracker({len(self._services)} services with jobs, {len(self._active)} running or queued)"
