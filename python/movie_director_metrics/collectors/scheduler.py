"""Background workers that poll the configured backends.

CONTRACT (implemented by the collectors work; the CLI and the Blender
add-on build on exactly this API):

- ``Collectors(monitor, configs, *, allow_remote=False, resources=True)``:
  ``monitor`` is a ``movie_director_metrics.Monitor`` (or the engine's
  ``_core.Monitor``); one service per config (``config.name``).
  ``allow_remote=False`` refuses non-loopback hosts: such backends get
  state ``"blocked"`` and are never contacted (Blender's "Allow Online
  Access" switch is passed here).
- ``.start()`` starts one daemon worker per enabled backend (idempotent);
  ``.stop(timeout_s=3.0)`` stops them all and joins (idempotent); context
  manager.  Workers never raise out, never touch ``bpy``, never block the
  caller.
- Each cycle: ``probe()`` -> ``service.health(up, latency_ms)``; on the
  first success ``detect()``; then ``collect()``.  Failures back off
  exponentially (interval x 2^k, capped at 30 s), reset on success.
- ``.status() -> dict[str, BackendStatus]`` (a snapshot, thread-safe).
- ``check_once(configs, *, allow_remote=False, monitor=None) ->
  list[BackendStatus]``: probe + detect every backend once, in parallel,
  and return their states (the CLI's ``check``).
"""

from __future__ import annotations

import math
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .. import _core
from ..errors import ConfigError
from ..jobs.rows import JobRow, QueuedJob
from ..net import is_loopback
from .base import SIGNALS, Backend, Capabilities
from .config import BackendConfig
from .diagnosis import Diagnosis, diagnose, sniff_kind
from .http import TRANSIENT_ERRORS, HttpClient, ProbeError
from .kinds import backend_class

__all__ = ["BACKOFF_CAP_S", "BackendStatus", "Collectors", "backoff_delay_s", "check_once"]


@dataclass(frozen=True)
class BackendStatus:
    """What the UIs show about one backend."""

    name: str
    kind: str
    url: str
    #: "up", "down", "loading" (it answers, but its model is still loading:
    #: llama.cpp's 503 "Loading model"; not up, not gone either),
    #: "unknown" (not contacted yet), "blocked" (remote host
    #: while online access is off), "disabled" (enabled = false).
    state: str
    #: signal -> where it comes from, or None for n/a (see base.SIGNALS).
    capabilities: dict[str, str | None] = field(default_factory=dict)
    #: signal -> why it is n/a.
    missing: dict[str, str] = field(default_factory=dict)
    last_error: str | None = None
    last_error_type: str | None = None
    last_latency_ms: float | None = None
    #: Consecutive failed probes (drives the backoff).
    failures: int = 0
    #: Seconds until the next probe (backoff included).
    next_poll_s: float | None = None
    #: Server version when the backend reports one.
    version: str | None = None
    #: Models the backend has loaded (Ollama /api/ps, A1111 checkpoint,
    #: OpenAI-compatible /v1/models), when it reports them.
    models: tuple[str, ...] = ()
    #: Kind-specific state worth showing (progress, partial offload, KV cache).
    detail: dict[str, str] = field(default_factory=dict)
    #: Why it is not up: a cause from ``diagnosis.CAUSES`` (None while up
    #: or not contacted yet), and the one-line hint of what to do.
    cause: str | None = None
    hint: str | None = None


# ---------------------------------------------------------------------------
# Implementation
#
# Threading model: one daemon thread per enabled, allowed backend.  A worker
# owns its Backend (whose HttpClient is not thread-safe) and is the only
# thread that calls it; what other threads read is the worker's small state
# record, guarded by that worker's lock, and copied out as a frozen
# BackendStatus.  Waiting between cycles is ``Event.wait`` on the
# worker's own stop event, so ``stop()`` wakes every idle worker at once,
# ``update()`` only those of backends that changed, and the GIL is free
# meanwhile.  A worker
# inside a request cannot be interrupted: that costs at most the backend's
# connect + read timeout, which is what bounds ``stop()``.
# ---------------------------------------------------------------------------

#: Longest wait between probes of a failing backend, in seconds (a backend
#: whose own interval is longer keeps its interval).
BACKOFF_CAP_S = 30.0

#: ``check_once`` waits this much beyond the slowest connect + read timeout.
CHECK_GRACE_S = 0.5

#: Error type recorded when a kind's code raises something other than
#: ProbeError (a bug or an unexpected payload it did not guard against).
COLLECTOR_ERROR = "collector_error"

_BLOCKED_REASON = "remote host: online access is off (allow_remote=False)"
_DISABLED_REASON = "disabled in the configuration (enabled = false)"


class ServiceSource(Protocol):
    """What the collectors need from a monitor: ``Monitor`` and the
    engine's ``_core.Monitor`` both fit."""

    def service(self, name: str) -> _core.Service: ...


def backoff_delay_s(interval_s: float, failures: int) -> float:
    """Seconds to wait after ``failures`` consecutive failed probes:
    ``interval_s * 2**failures``, at most :data:`BACKOFF_CAP_S` (or
    ``interval_s`` itself when that is longer); ``interval_s`` when
    ``failures`` is 0."""
    if failures <= 0:
        return interval_s
    return min(interval_s * 2.0 ** min(failures, 60), max(BACKOFF_CAP_S, interval_s))


def _clean_latency(ms: float) -> float | None:
    return min(ms, _core.MAX_DURATION_MS) if isinstance(ms, (int, float)) and math.isfinite(ms) and ms >= 0 else None


def _llm_loaded_hook(monitor: Any) -> Callable[[str, tuple[str, ...]], None] | None:
    """Tells the monitor's LLM tracker which models Ollama has loaded (its
    "active models"); None for an engine monitor without one."""
    if not hasattr(type(monitor), "llm"):
        return None

    def note(kind: str, models: tuple[str, ...]) -> None:
        monitor.llm.note_loaded(kind, models)

    return note


@dataclass(frozen=True)
class _JobHooks:
    """Where collectors put the jobs they see on their backends: the
    monitor's job tracker."""

    finished: Callable[[JobRow], None]
    queued: Callable[[str, list[QueuedJob]], None]


def _jobs_hooks(monitor: Any) -> _JobHooks | None:
    """Hooks into the monitor's job tracker; None for an engine monitor
    without one."""
    if not hasattr(type(monitor), "jobs"):
        return None

    def finished(row: JobRow) -> None:
        monitor.jobs.record(row)

    def queued(service: str, jobs: list[QueuedJob]) -> None:
        monitor.jobs.set_backend_queue(service, jobs)

    return _JobHooks(finished, queued)


#: Called on every down result a worker records: (service, cause, detail,
#: first of its streak).
OutageHook = Callable[[str, str, str | None, bool], None]


def _outage_hook(monitor: Any) -> OutageHook | None:
    """Keeps why each outage began in the monitor's outage log (stamped
    with the monitor's clock, like the health result); None for an engine
    monitor without one."""
    if not hasattr(type(monitor), "outage_log"):
        return None

    def note(service: str, cause: str, detail: str | None, first: bool) -> None:
        monitor.outage_log.note(service, monitor.now(), cause, detail, first=first)

    return note


#: Failures that may mean another kind of server answers on the port.
_SNIFF_ON = frozenset({"http_4xx", "bad_json", "unexpected_status"})


def _all_missing(reason: str) -> dict[str, str]:
    return {s: reason for s in SIGNALS}


class _Worker:
    """One backend's state and cycle.  ``cycle`` runs on one thread only;
    ``snapshot`` may run on any (both take ``lock`` for the shared fields)."""

    def __init__(
        self,
        config: BackendConfig,
        service: _core.Service,
        *,
        allow_remote: bool,
        resources: bool,
        on_models: Callable[[str, tuple[str, ...]], None] | None = None,
        jobs: _JobHooks | None = None,
        on_down: OutageHook | None = None,
    ) -> None:
        self.on_models = on_models
        self.on_down = on_down
        self.config = config
        self.service = service
        self.resources = resources
        self.lock = threading.Lock()
        self.backend: Backend | None = None
        self.state = "unknown"
        self.capabilities: dict[str, str | None] = Capabilities().as_dict()
        self.missing: dict[str, str] = {}
        self.last_error: str | None = None
        self.last_error_type: str | None = None
        self.last_latency_ms: float | None = None
        self.failures = 0
        self.next_due: float | None = None  # time.monotonic() of the next probe
        self.version: str | None = None
        self.models: tuple[str, ...] = ()
        self.detail: dict[str, str] = {}
        self.diagnosis: Diagnosis | None = None
        #: The kind sniff_kind found on the port during this failure streak
        #: (sniffed once per streak; None: not yet, or nothing recognisable).
        self._sniffed: tuple[str | None] | None = None
        if not config.enabled:
            self.state, self.missing = "disabled", _all_missing(_DISABLED_REASON)
            self.diagnosis = Diagnosis("disabled", "set enabled = true in the backends file to poll it")
        elif not allow_remote and not is_loopback(config.host):
            self.state, self.missing = "blocked", _all_missing(_BLOCKED_REASON)
            self.diagnosis = Diagnosis(
                "blocked",
                f"{config.host} is another machine: turn on Online Access (Blender) or pass --allow-remote / "
                "allow_remote=True",
            )
        else:
            try:
                self.backend = backend_class(config.kind)(config, service)
                if jobs is not None:
                    self.backend.on_job, self.backend.on_queue = jobs.finished, jobs.queued
            except Exception as e:  # a kind that fails to import must not take the others down
                self.last_error_type = COLLECTOR_ERROR
                self.last_error = f"cannot load the {config.kind!r} collector: {type(e).__name__}: {e}\n" + (
                    traceback.format_exc()
                )
                self.missing = _all_missing(f"the {config.kind!r} collector failed to load")

    # ---- one cycle -----------------------------------------------------------

    def cycle(self, stop: threading.Event, *, collect: bool = True) -> None:
        """probe -> health; detect when needed; collect.  Never raises."""
        b = self.backend
        assert b is not None
        if not self._probe(b, stop) or stop.is_set():
            return
        if not b.detected:
            if not self._guarded(b, "detect", stop):
                return
            b.detected = True
            if not self.resources:
                b.capabilities.lack("resources", "resource collection is off (resources=False)")
            self._sync(b)
        if collect and not stop.is_set():
            self._guarded(b, "collect", stop)
            self._sync(b)

    def _probe(self, b: Backend, stop: threading.Event) -> bool:
        t0 = time.perf_counter()
        try:
            latency = _clean_latency(b.probe())
        except ProbeError as e:
            # call() already recorded the failed request with its error type.
            self._down(b, stop, e.error_type, f"{e}", e)
            return False
        except Exception as e:  # a kind broke its contract: still just "down"
            self.service.record(min((time.perf_counter() - t0) * 1e3, _core.MAX_DURATION_MS), ok=False, error=COLLECTOR_ERROR)
            self._down(b, stop, COLLECTOR_ERROR, f"probe raised {type(e).__name__}: {e}\n{traceback.format_exc()}")
            return False
        if stop.is_set():
            return False
        self.service.health(True, latency)
        with self.lock:
            self.state = "up"
            self.failures = 0
            self.last_latency_ms = latency
            self.diagnosis, self._sniffed = None, None
        return True

    def _down(
        self, b: Backend, stop: threading.Event, error_type: str, message: str, error: ProbeError | None = None
    ) -> None:
        # Detect again when it comes back: it may be another build or version.
        b.detected = False
        b.lost()  # what it reported as queued is no longer known
        recorded = not stop.is_set()
        if recorded:
            self.service.health(False)
        c = self.config

        def diagnosis(found: str | None) -> Diagnosis:
            if error is None:
                return Diagnosis("collector_error", f"{message.splitlines()[0]}: please report this")
            return diagnose(c.kind, c.host, c.port, error, key_source=c.key_source(), key_problem=c.key_problem(),
                            found=found, redact=b.redact)

        sniff = error is not None and error.error_type in _SNIFF_ON and not stop.is_set()
        known = self._sniffed[0] if self._sniffed is not None else None
        with self.lock:
            self.failures += 1
            self.last_error_type, self.last_error = error_type, message
            self.diagnosis = diagnosis(known)
            # At once: what the port is can be told after.
            self.state = "loading" if self.diagnosis.cause == "model_loading" else "down"
        if sniff and self._sniffed is None:  # once per streak of failures
            self._sniffed = (sniff_kind(self._sniff_get),)
            if self._sniffed[0] is not None:
                found = diagnosis(self._sniffed[0])
                with self.lock:
                    self.diagnosis = found
                    self.state = "loading" if found.cause == "model_loading" else "down"
        if recorded and self.on_down is not None:
            self._note_down(b, message)

    def _note_down(self, b: Backend, message: str) -> None:
        """Hands the cause of this down result (the streak's first, once
        sniffed) to the monitor's outage log: the failed request's first
        line, credentials redacted, as the detail.  Never raises: the
        history of causes is a convenience, polling is not."""
        assert self.on_down is not None
        with self.lock:
            cause = self.diagnosis.cause if self.diagnosis is not None else COLLECTOR_ERROR
            first = self.failures == 1
        try:
            lines = message.splitlines()
            detail = b.redact(lines[0]) if lines else None
            self.on_down(self.config.name, cause, detail, first)
        except Exception:
            pass

    def _sniff_get(self, path: str) -> tuple[int, bytes]:
        """One GET at the server's root for :func:`sniff_kind` (a client of
        its own: the backend's may have a path prefix)."""
        c = self.config
        client = HttpClient(
            c.root_url,
            connect_timeout_s=c.connect_timeout_s,
            read_timeout_s=c.read_timeout_s,
            keep_alive=False,
        )
        try:
            resp = client.request("GET", path, ok_statuses=tuple(range(100, 600)))
            return resp.status, resp.body
        finally:
            client.close()

    def _guarded(self, b: Backend, step: str, stop: threading.Event) -> bool:
        """Runs ``b.detect()`` or ``b.collect()``; a failure is kept as the
        last error and, unless it is a ProbeError (recorded by the call
        that raised it), recorded as ``collector_error``."""
        t0 = time.perf_counter()
        try:
            if step == "detect":
                b.detect()
            else:
                b.collect()
            return True
        except ProbeError as e:
            if step == "detect" and e.error_type not in TRANSIENT_ERRORS:
                # Answers the probe, but its API cannot be used (A1111
                # without --api, a refused key): not up.
                self._down(b, stop, e.error_type, f"{step}: {e}", e)
                return False
            error_type, message = e.error_type, f"{step}: {e}"
        except Exception as e:
            error_type = COLLECTOR_ERROR
            message = f"{step} raised {type(e).__name__}: {e}\n{traceback.format_exc()}"
            if not stop.is_set():
                self.service.record(min((time.perf_counter() - t0) * 1e3, _core.MAX_DURATION_MS), ok=False, error=COLLECTOR_ERROR)
        with self.lock:
            self.last_error_type, self.last_error = error_type, message
        return False

    def _sync(self, b: Backend) -> None:
        caps = b.capabilities.as_dict()
        missing = dict(b.capabilities.missing)
        version = getattr(b, "version", None)
        models = getattr(b, "models", None)
        detail = getattr(b, "detail", None)
        loaded = tuple(str(m) for m in models) if isinstance(models, (list, tuple)) else ()
        with self.lock:
            changed = loaded != self.models
            self.capabilities, self.missing = caps, missing
            self.version = version if isinstance(version, str) else None
            self.models = loaded
            self.detail = {str(k): str(v) for k, v in detail.items()} if isinstance(detail, dict) else {}
        # The provider the LLM tracker files the models under: the kind, or
        # for an OpenAI-compatible server its flavour (llama.cpp, vllm,
        # lmstudio: what its requests are recorded under).  A hosted
        # OpenAI API lists every model it offers, none of them "loaded".
        provider = self.config.kind if self.config.kind != "openai" else getattr(b, "flavor", None)
        if changed and self.on_models is not None and b.capabilities.has("models") and provider not in (None, "openai"):
            try:
                self.on_models(str(provider), loaded)
            except Exception:  # the LLM view is a convenience: never stop polling for it
                pass

    # ---- scheduling ------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """The worker thread: cycles until ``stop`` is set."""
        interval = self.config.interval_s
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.cycle(stop)
            except BaseException as e:  # pragma: no cover - cycle() guards itself; belt and braces
                with self.lock:
                    self.last_error_type = COLLECTOR_ERROR
                    self.last_error = f"worker: {type(e).__name__}: {e}\n{traceback.format_exc()}"
            with self.lock:
                failures = self.failures
                # Healthy: keep the cadence (start to start).  Failing: back
                # off from the end of the failed attempt, so a hanging server
                # is not retried back to back.
                base = started if failures == 0 else time.monotonic()
                self.next_due = base + backoff_delay_s(interval, failures)
                due = self.next_due
            stop.wait(max(0.0, due - time.monotonic()))
        with self.lock:
            self.next_due = None
        self.close()

    def close(self) -> None:
        """Closes the backend's kept-open connection (its worker thread
        only, or once that thread has ended)."""
        if self.backend is not None:
            self.backend.client.close()

    def snapshot(self, now: float) -> BackendStatus:
        with self.lock:
            return BackendStatus(
                name=self.config.name,
                kind=self.config.kind,
                url=self.config.url,
                state=self.state,
                capabilities=dict(self.capabilities),
                missing=dict(self.missing),
                last_error=self.last_error,
                last_error_type=self.last_error_type,
                last_latency_ms=self.last_latency_ms,
                failures=self.failures,
                next_poll_s=None if self.next_due is None else max(0.0, self.next_due - now),
                version=self.version,
                models=self.models,
                detail=dict(self.detail),
                cause=None if self.diagnosis is None else self.diagnosis.cause,
                hint=None if self.diagnosis is None else self.diagnosis.hint,
            )


def _unique(configs: Iterable[BackendConfig]) -> list[BackendConfig]:
    out = list(configs)
    seen: set[str] = set()
    for c in out:
        if not isinstance(c, BackendConfig):
            raise ConfigError(f"backend {c!r} is not a BackendConfig")
        if c.name in seen:
            raise ConfigError(f"backend name {c.name!r} is used twice; names must be unique")
        seen.add(c.name)
    return out


class Collectors:
    """Background workers polling ``configs`` into ``monitor`` (see the
    module docs for the contract).

    Thread-safe: ``start``, ``stop`` and ``status`` may be called from any
    thread (the Blender add-on calls them from its main-thread timer; none
    of them waits on the network except ``stop``, for at most
    ``timeout_s``).
    """

    def __init__(
        self,
        monitor: ServiceSource,
        configs: Iterable[BackendConfig],
        *,
        allow_remote: bool = False,
        resources: bool = True,
    ) -> None:
        self.configs: tuple[BackendConfig, ...] = tuple(_unique(configs))
        self.allow_remote = allow_remote
        self.resources = resources
        self._monitor = monitor
        self._on_models = _llm_loaded_hook(monitor)
        self._jobs = _jobs_hooks(monitor)
        self._on_down = _outage_hook(monitor)
        self._workers = [self._worker(c) for c in self.configs]
        self._lock = threading.Lock()  # guards _running and _workers' replacement
        #: Worker -> (its thread, its own stop event), while started; a
        #: worker's own event lets update() stop one and keep the others.
        self._running: dict[_Worker, tuple[threading.Thread, threading.Event]] = {}
        self._started = False

    def _worker(self, c: BackendConfig) -> _Worker:
        return _Worker(c, self._monitor.service(c.name), allow_remote=self.allow_remote, resources=self.resources,
                       on_models=self._on_models if c.kind in ("ollama", "openai") else None, jobs=self._jobs, on_down=self._on_down)

    def _launch(self, w: _Worker) -> None:
        """Starts ``w``'s thread (caller holds the lock; a worker without a
        backend — disabled, blocked, failed to load — has none)."""
        if w.backend is None:
            return
        stop = threading.Event()
        t = threading.Thread(target=w.run, args=(stop,), name=f"mdm-collector:{w.config.name}", daemon=True)
        self._running[w] = (t, stop)
        t.start()

    @property
    def running(self) -> bool:
        """True while worker threads run: between ``start()`` and
        ``stop()``, when a backend is enabled and allowed."""
        with self._lock:
            return bool(self._running)

    def start(self) -> Collectors:
        """Starts one daemon worker per enabled, allowed backend (a no-op
        when already running); returns self."""
        with self._lock:
            if self._started:
                return self
            self._started = True
            for w in self._workers:
                self._launch(w)
        return self

    def update(self, configs: Iterable[BackendConfig], *, allow_remote: bool | None = None, timeout_s: float = 3.0) -> Collectors:
        """Brings the workers in line with ``configs`` without restarting
        the ones whose backend did not change: such a worker keeps its
        thread, its schedule and its state (a hosted backend polled every
        300 s is not probed again because another backend was edited).
        Workers of removed or changed backends stop (joined within
        ``timeout_s``; the jobs they reported withdrawn), new ones start if
        the collectors run.  Changing ``allow_remote`` replaces every
        worker.  ``ConfigError`` for duplicate names, before anything
        changes.  Returns self."""
        new = tuple(_unique(configs))
        with self._lock:
            if allow_remote is not None and allow_remote != self.allow_remote:
                keep: dict[BackendConfig, _Worker] = {}
                self.allow_remote = allow_remote
            else:
                keep = {w.config: w for w in self._workers}
            workers = [keep.pop(c) if c in keep else self._worker(c) for c in new]
            gone = [w for w in self._workers if w not in workers]
            fresh = [w for w in workers if w not in self._workers]
            self._workers, self.configs = workers, new
            stopping = [self._running.pop(w) for w in gone if w in self._running]
            for _, stop in stopping:
                stop.set()
            if self._started:
                for w in fresh:
                    self._launch(w)
        self._retire(gone, [t for t, _ in stopping], timeout_s)
        return self

    def stop(self, timeout_s: float = 3.0) -> None:
        """Stops every worker and joins them, waiting at most ``timeout_s``
        in all (idempotent).  A worker still inside a request finishes it
        (bounded by that backend's connect + read timeout), records
        nothing more and exits."""
        with self._lock:
            running, self._running = self._running, {}
            self._started = False
            for _, stop in running.values():
                stop.set()
            workers = list(self._workers)
        self._retire(workers, [t for t, _ in running.values()], timeout_s)

    @staticmethod
    def _retire(workers: Sequence[_Worker], threads: Sequence[threading.Thread], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in threads):
            return  # a worker still in a request owns its backend: leave its report
        # Nobody polls these backends any more (disabled, removed, or a new
        # set of collectors takes over and reports afresh at its first
        # cycle): the jobs they reported as queued or running are withdrawn,
        # or a disabled backend would show its last queue for ever.
        for w in workers:
            if w.backend is not None:
                w.backend.lost()

    def status(self) -> dict[str, BackendStatus]:
        """Every backend's current state, in config order (a snapshot)."""
        now = time.monotonic()
        return {w.config.name: w.snapshot(now) for w in self._workers}

    def __enter__(self) -> Collectors:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        states = ", ".join(f"{n}={s.state}" for n, s in self.status().items())
        return f"Collectors({states}{', running' if self.running else ''})"


def check_once(
    configs: Iterable[BackendConfig],
    *,
    allow_remote: bool = False,
    monitor: ServiceSource | None = None,
) -> list[BackendStatus]:
    """Probes and detects every backend once, all in parallel, and returns
    their states in config order.

    Returns within about the slowest backend's connect + read timeout (plus
    :data:`CHECK_GRACE_S`): a backend whose probe answered but whose
    detection is still running then reports ``"up"`` with what is known so
    far.  Results are recorded on ``monitor`` when one is given, else on a
    throwaway in-memory engine.
    """
    cfgs = _unique(configs)
    own = monitor is None
    source: ServiceSource = _core.Monitor() if monitor is None else monitor
    try:
        workers = [_Worker(c, source.service(c.name), allow_remote=allow_remote, resources=True) for c in cfgs]
        never = threading.Event()
        threads = []
        for w in workers:
            if w.backend is None:
                continue
            t = threading.Thread(
                target=w.cycle, args=(never,), kwargs={"collect": False}, name=f"mdm-check:{w.config.name}", daemon=True
            )
            t.start()
            threads.append((w, t))
        budget = max((w.config.connect_timeout_s + w.config.read_timeout_s for w, _ in threads), default=0.0)
        deadline = time.monotonic() + budget + CHECK_GRACE_S
        for w, t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                with w.lock:
                    w.last_error_type = w.last_error_type or "timeout"
                    w.last_error = f"check did not finish within {budget + CHECK_GRACE_S:.1f} s"
            else:
                w.close()  # a thread still running closes nothing of its own: GC does
        now = time.monotonic()
        return [w.snapshot(now) for w in workers]
    finally:
        if own:
            assert isinstance(source, _core.Monitor)
            source.close()
