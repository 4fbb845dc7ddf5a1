"""`shared()`: one process-wide recording handle for code that does not own
the monitor — another Blender add-on, a script, a pipeline tool.

::

    import movie_director_metrics as mdm

    h = mdm.shared()                          # always the same object
    with h.job("comfyui", model="sdxl.safetensors", tags={"shot": "010"}) as job:
        job.started()
        render()
    h.service("comfyui").record(182.5)
    h.llm.record("openai", "gpt-4o", usage, latency_ms=950)

A host (the Blender add-on, ``movie-director-metrics serve``, your own
program) publishes its monitor with ``monitor.publish()`` and withdraws it
with ``monitor.unpublish()`` or ``close()``.  The handle forwards every
call to whichever monitor is published *at the time of the call*, so a
reference kept across a reopen never goes stale, and a job started before
a reopen finishes into the new monitor.

Instrumentation never raises into its caller: with no monitor published
the calls record nothing and count what they dropped (``dropped``); bad
input, a full service table or a closed monitor are logged once per kind
and counted.  ``strict=True`` (for tests) raises instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import InvalidNameError, InvalidValueError, MonitorClosedError, ServiceLimitError
from .jobs import Job, JobTracker
from .jobs.job import new_job
from .track import Tracker

if TYPE_CHECKING:
    from .llm.rows import Row
    from .monitor import Monitor

__all__ = ["SharedHandle", "SharedLlm", "SharedService", "shared"]

log = logging.getLogger("movie_director_metrics.shared")

T = TypeVar("T")


def _fault_kind(e: BaseException) -> str:
    if isinstance(e, ServiceLimitError):
        return "service_limit"
    if isinstance(e, MonitorClosedError):
        return "closed"
    if isinstance(e, InvalidNameError):
        return "invalid_name"
    if isinstance(e, (InvalidValueError, TypeError, ValueError)):
        return "invalid_value"
    return "error"


class SharedHandle:
    """The process-wide handle (see the module doc); get it with
    :func:`shared`."""

    #: Unfinished jobs the handle lists (older ones leave the list, counted).
    MAX_ACTIVE = 1024
    #: Jobs that finish while no monitor is published are held this many
    #: seconds (at most MAX_HELD of them) and recorded into the next
    #: monitor published within that time: a reopen loses none.  They are
    #: counted as dropped ("no_monitor") when they finish, and in
    #: ``replayed`` when a monitor takes them.
    HOLD_S = 5.0
    MAX_HELD = 1024

    def __init__(self) -> None:
        self._monitor: Monitor | None = None
        # The published monitor's job tracker, kept with it: finishing a job
        # is on the caller's path, so it should not look the tracker up.
        self._tracker: JobTracker | None = None
        self._lock = threading.Lock()
        self._services: dict[str, SharedService] = {}
        self._active: dict[int, Job] = {}
        self._held: deque[tuple[float, Job]] = deque(maxlen=self.MAX_HELD)
        #: Held jobs recorded into a monitor published soon after they finished.
        self.replayed = 0
        #: Calls that recorded nothing, by reason (``no_monitor``,
        #: ``invalid_value``, ``service_limit``, ``closed``, ...).
        self.dropped: Counter[str] = Counter()
        #: Raise instead of counting (for tests).
        self.strict = False
        self.llm = SharedLlm(self)

    # ---- publishing ----------------------------------------------------------

    @property
    def monitor(self) -> Monitor | None:
        """The monitor calls go to now, or None."""
        return self._monitor

    def publish(self, monitor: Monitor) -> None:
        """Makes ``monitor`` the one calls go to (``Monitor.publish``)."""
        tracker = monitor.jobs
        with self._lock:
            previous, self._monitor, self._tracker = self._monitor, monitor, tracker
            held, now = list(self._held), time.monotonic()
            self._held.clear()
        for at, job in held:
            if now - at <= self.HOLD_S:
                tracker.job_finished(job)
                self.replayed += 1
        if previous is not None and previous is not monitor:
            old = previous.existing_jobs()
            if old is not None:
                old.include_active(None)
        tracker.include_active(self.active_jobs)

    def unpublish(self, monitor: Monitor) -> None:
        """Withdraws ``monitor`` if it is the published one (a no-op
        otherwise).  Jobs still running stay with the handle and finish
        into the next monitor published."""
        with self._lock:
            if self._monitor is not monitor:
                return
            self._monitor, self._tracker = None, None
        tracker = monitor.existing_jobs()
        if tracker is not None:
            tracker.include_active(None)

    def clear_held(self) -> None:
        """Forgets the finished jobs held for the next monitor (tests)."""
        self._held.clear()

    def active_jobs(self) -> list[Job]:
        """Unfinished jobs made through the handle, oldest first."""
        return list(self._active.copy().values())  # dict.copy is atomic under the GIL

    # ---- faults --------------------------------------------------------------

    def drop(self, kind: str, message: str) -> None:
        """Counts a call that recorded nothing and logs the first of each
        kind; in strict mode raises ``InvalidValueError`` (except for
        ``no_monitor``: having none published is a normal state)."""
        if self.strict and kind != "no_monitor":
            raise InvalidValueError(message)
        with self._lock:
            first = kind not in self.dropped
            self.dropped[kind] += 1
        if first:
            log.warning("movie_director_metrics: %s (further %r drops are only counted)", message, kind)

    def guarded(self, what: str, call: Callable[[Monitor], T]) -> T | None:
        """Runs ``call`` on the published monitor; never raises (unless
        strict): returns None when nothing was recorded."""
        m = self._monitor
        if m is None:
            self.drop("no_monitor", f"{what}: no monitor is published")
            return None
        try:
            return call(m)
        except Exception as e:
            if self.strict:
                raise
            self.drop(_fault_kind(e), f"{what}: {type(e).__name__}: {e}")
            return None

    # ---- recording -----------------------------------------------------------

    def service(self, name: str) -> SharedService:
        """Recording calls of service ``name`` (the engine service is
        looked up at each call, in the monitor published then)."""
        svc = self._services.get(name)
        if svc is None:
            svc = SharedService(self, name)
            if len(self._services) < 4096:  # a cache of proxies, not a record
                self._services[name] = svc
        return svc

    def track(self, service: str, op: str | None = None) -> Tracker:
        """Times a ``with`` block or a decorated function as one request of
        ``service`` (``"service:op"``); an exception records a failure
        typed by its class and propagates unchanged."""
        return Tracker(self.service, service, op)  # type: ignore[arg-type]

    def job(
        self,
        service: str,
        *,
        model: str | None = None,
        workflow: str | None = None,
        tags: Mapping[str, object] | None = None,
        job_id: str | None = None,
    ) -> Job:
        """A job of ``service``, queued from now (see ``jobs.Job``).  It
        finishes into the monitor published when it finishes."""
        job = new_job(self, service, model=model, workflow=workflow, tags=tags, job_id=job_id)
        # A dict store is atomic under the GIL: no lock on the recording path.
        self._active[id(job)] = job  # id(job) is Job.key, without the property call
        if len(self._active) > self.MAX_ACTIVE:
            with self._lock:
                while len(self._active) > self.MAX_ACTIVE:
                    self._active.pop(next(iter(self._active)), None)
                    self.dropped["active_dropped"] += 1
        return job

    # JobSink: where jobs made here report.
    def job_finished(self, job: Job) -> None:
        self._active.pop(id(job), None)
        tracker = self._tracker
        if tracker is None:
            self.drop("no_monitor", f"job of {job.service!r} finished with no monitor published")
            # Held briefly: a host reopening its monitor (a preference
            # change) publishes the new one within a second or two.
            self._held.append((time.monotonic(), job))
            return
        try:
            tracker.job_finished(job)
        except Exception as e:
            if self.strict:
                raise
            self.drop(_fault_kind(e), f"job of {job.service!r}: {type(e).__name__}: {e}")

    def job_fault(self, kind: str, message: str) -> None:
        self.drop(kind, message)

    def __repr__(self) -> str:
        return f"<SharedHandle publishing {self._monitor!r}, dropped {dict(self.dropped)}>"


class SharedService:
    """The recording calls of one service, through the shared handle.
    Same signatures as ``Service``; they never raise and return None."""

    __slots__ = ("_handle", "name")

    def __init__(self, handle: SharedHandle, name: str) -> None:
        self._handle = handle
        self.name = name

    def record(self, latency_ms: float, ok: bool = True, error: str | None = None) -> None:
        self._handle.guarded(
            f"record({self.name!r})", lambda m: m.service(self.name).record(latency_ms, ok=ok, error=error)
        )

    def record_processing(self, ms: float) -> None:
        self._handle.guarded(f"record_processing({self.name!r})", lambda m: m.service(self.name).record_processing(ms))

    def set_queue(self, running: int = 0, pending: int = 0) -> None:
        self._handle.guarded(
            f"set_queue({self.name!r})", lambda m: m.service(self.name).set_queue(running=running, pending=pending)
        )

    def set_resource(self, **gauges: float) -> None:
        self._handle.guarded(f"set_resource({self.name!r})", lambda m: m.service(self.name).set_resource(**gauges))

    def health(self, up: bool, latency_ms: float | None = None) -> None:
        self._handle.guarded(f"health({self.name!r})", lambda m: m.service(self.name).health(up, latency_ms))

    def __repr__(self) -> str:
        return f"<SharedService {self.name!r}>"


class SharedLlm:
    """``LlmTracker.record`` through the shared handle (never raises;
    returns the row, or None when nothing was recorded)."""

    __slots__ = ("_handle",)

    def __init__(self, handle: SharedHandle) -> None:
        self._handle = handle

    def record(
        self,
        provider: str,
        model: str,
        usage: Any,
        latency_ms: float,
        ttft_ms: float | None = None,
        ok: bool = True,
        error: str | None = None,
        at: float | None = None,
        *,
        base_url: str | None = None,
    ) -> Row | None:
        return self._handle.guarded(
            f"llm.record({provider!r}, {model!r})",
            lambda m: m.llm.record(provider, model, usage, latency_ms, ttft_ms, ok, error, at, base_url=base_url),
        )


_HANDLE = SharedHandle()


def shared() -> SharedHandle:
    """The process-wide recording handle (always the same object)."""
    return _HANDLE
