"""AUTOMATIC1111 stable-diffusion-webui and its fork Forge (the same API).

Endpoints (reference §2.2; ``AUTOMATIC1111/stable-diffusion-webui``
``modules/api/api.py``, ``modules/progress.py``, ``modules/shared_state.py``):

- ``GET /internal/ping`` -> ``{}``: liveness.  Registered by the UI itself,
  so it answers without ``--api`` and without ``--api-auth`` credentials.
- ``GET /internal/pending-tasks`` -> ``{"size", "tasks"}``: jobs *waiting*
  (``start_task`` pops the job it starts, so the running one is not in it).
  Also outside ``--api-auth``.
- ``GET /sdapi/v1/progress?skip_current_image=true`` -> ``state.job_count``
  is 0 when idle, -1 or the batch size while a job runs: the running count
  (0 or 1: the webui runs one job at a time under its queue lock), plus
  progress/ETA/step for the status detail.
- ``GET /sdapi/v1/memory`` -> ``cuda.system`` (``torch.cuda.mem_get_info``
  of the whole device: every process's use), ``ram`` (``used`` is the webui
  process's RSS, ``total`` the machine's), ``cuda.events.oom`` (the caching
  allocator's lifetime OOM count).  Either half may be ``{"error": ...}``.
- ``GET /sdapi/v1/options`` -> ``sd_model_checkpoint``: the loaded checkpoint.

``/sdapi/*`` exists only with ``--api`` and is behind HTTP Basic when the
webui runs with ``--api-auth user:pass``: put ``user:pass`` in the
environment variable ``api_key_env`` names and it is sent as Basic auth.

Cannot report: processing time (no job history endpoint; time jobs from
the outside with the ``track()`` API) and GPU utilisation, temperature or
power (use :class:`~.resources.LocalResources` on the same machine).
"""

from __future__ import annotations

import base64
import math
import time
from typing import Any

from .._core import MAX_DURATION_MS, Service
from .base import Backend, Capabilities, json_object
from .config import BackendConfig
from .http import HttpClient, ProbeError, Response
from .readings import byte_size, count

PING = "/internal/ping"
PENDING = "/internal/pending-tasks"
PROGRESS = "/sdapi/v1/progress?skip_current_image=true"
MEMORY = "/sdapi/v1/memory"
OPTIONS = "/sdapi/v1/options"

#: Most OOM events recorded from one memory reading.
MAX_OOM_EVENTS_PER_READ = 100

#: The options payload is large (every setting); the loaded checkpoint
#: changes rarely, so it is re-read at most this often.
MODELS_REFRESH_S = 60.0

#: Why ``/sdapi/*`` answers 404.
NO_API = "HTTP 404: the webui was started without --api"

PROCESSING_NA = (
    "A1111/Forge keep no job history to poll; processing time comes from jobs "
    "submitted through track() (timed from the outside)"
)


class A1111(Backend):
    """AUTOMATIC1111 / Forge: liveness, queue, memory, OOM events, loaded model.

    After :meth:`collect`, ``detail`` holds the progress of the running job
    (``progress``, ``eta_s``, ``step``, ``job``) and memory notes, ``models``
    the loaded checkpoint.  OOM events the allocator counts are recorded on
    the service as failures of type ``"oom"``, each new event once.
    """

    kind = "a1111"
    default_port = 7860

    def __init__(self, config: BackendConfig, service: Service, client: HttpClient | None = None) -> None:
        super().__init__(config, service, client)
        creds = config.api_key()
        if creds is not None and ":" in creds:
            # --api-auth is HTTP Basic, not a bearer token.
            token = base64.b64encode(creds.encode()).decode("ascii")
            self.client.headers["Authorization"] = f"Basic {token}"
        self.models: list[str] = []
        self.detail: dict[str, str] = {}
        #: Lifetime OOM count at the last reading (None: not read yet).
        self._oom_seen: int | None = None
        self._running_known = False
        self._models_read_at = float("-inf")

    def __repr__(self) -> str:
        return f"A1111(name={self.config.name!r}, url={self.config.url!r})"

    # ---- probe ---------------------------------------------------------------

    def probe(self) -> float:
        try:
            return self.call("GET", PING).latency_ms
        except ProbeError as e:
            raise self.explained(PING, e) from None

    # ---- detect --------------------------------------------------------------

    def detect(self) -> Capabilities:
        """Finds the signals this webui has.  A read that failed for a
        passing reason (timeout, reset, 5xx, busy) leaves the signal n/a
        "(detection will retry)", and :meth:`collect` detects again (at most
        every half interval) rather than lose the signal for the session."""
        self.begin_detection()
        caps = self.capabilities
        caps.set("health", f"GET {PING}")
        caps.lack("processing", PROCESSING_NA)

        pending, why_pending = self.try_fetch(PENDING, parse=_parse_pending)
        progress, why_progress = self.try_fetch(PROGRESS, check=_check_progress)
        if pending is None:
            caps.lack("queue", f"GET {PENDING}: {why_pending}")
        else:
            self._running_known = progress is not None
            if self._running_known:
                caps.set("queue", f"GET {PENDING} (size: waiting) + GET /sdapi/v1/progress (state.job_count: running)")
            else:
                caps.set("queue", f"GET {PENDING} (size: waiting; running reported as 0: /sdapi/v1/progress {why_progress})")

        reading, why_memory = self.try_fetch(MEMORY, parse=_parse_memory)
        if reading is None:
            caps.lack("resources", f"GET {MEMORY}: {why_memory}")
        else:
            gauges, notes, memory = reading
            if gauges:
                note = f"; {'; '.join(notes)}" if notes else ""
                caps.set("resources", f"GET {MEMORY} ({', '.join(sorted(gauges))}){note}")
            else:
                caps.lack("resources", f"GET {MEMORY}: {'; '.join(notes) or 'no ram or cuda.system figures'}")
            if self._oom_seen is None:
                self._count_ooms(memory, 0.0)  # the baseline: records nothing

        options, why_options = self.try_fetch(OPTIONS, check=json_object())
        checkpoint = options.get("sd_model_checkpoint") if options is not None else None
        if isinstance(checkpoint, str):
            caps.set("models", f"GET {OPTIONS} (sd_model_checkpoint)")
            self.models = [checkpoint]
            self._models_read_at = time.monotonic()
        else:
            caps.lack("models", f"GET {OPTIONS}: {why_options or 'no sd_model_checkpoint in the reply'}")
        self.detected = True
        return caps

    # ---- collect -------------------------------------------------------------

    def collect(self) -> None:
        """Reads every available signal; one failing endpoint does not stop
        the others.  The first failure is re-raised at the end (every
        failed call is already recorded on the service)."""
        if self.detection_due():
            self.detect()
        failures: list[ProbeError] = []
        detail: dict[str, str] = {}
        for part in (self._collect_queue, self._collect_memory, self._collect_models):
            try:
                part(detail)
            except ProbeError as e:
                failures.append(e)
        self.detail = detail
        if failures:
            raise failures[0]

    def _collect_queue(self, detail: dict[str, str]) -> None:
        if not self.capabilities.has("queue"):
            return
        pending = self.fetch(PENDING, parse=_parse_pending)[0]
        running = 0
        if self._running_known:
            running = _progress_detail(self.fetch(PROGRESS, check=_check_progress)[0], detail)
        self.service.set_queue(running=running, pending=pending)

    def _collect_memory(self, detail: dict[str, str]) -> None:
        if not self.capabilities.has("resources"):
            return
        (gauges, notes, memory), latency_ms = self.fetch(MEMORY, parse=_parse_memory)
        if gauges:
            self.service.set_resource(**gauges)
        if notes:
            detail["memory"] = "; ".join(notes)
        self._count_ooms(memory, latency_ms)
        if self._oom_seen:
            detail["oom_events"] = f"{self._oom_seen} CUDA OOM event(s) since the webui started"

    def _collect_models(self, detail: dict[str, str]) -> None:
        if not self.capabilities.has("models") or time.monotonic() - self._models_read_at < MODELS_REFRESH_S:
            return
        checkpoint = self.fetch(OPTIONS, check=json_object())[0].get("sd_model_checkpoint")
        self._models_read_at = time.monotonic()
        self.models = [checkpoint] if isinstance(checkpoint, str) else []

    # ---- OOM events ------------------------------------------------------------

    def _count_ooms(self, memory: dict[str, Any], latency_ms: float) -> None:
        """Records each OOM event new since the last reading once.

        ``cuda.events.oom`` is ``torch.cuda.memory_stats()["num_ooms"]``: a
        lifetime counter of the webui process.  The first reading is the
        baseline (events before we watched are history, not news).  A count
        lower than the last one means the webui restarted after our last
        reading, so all of its events are new.  The engine records a failure
        with a latency; the memory call's own latency is used (the request
        that revealed the event), so latency percentiles barely move.
        """
        cuda = memory.get("cuda")
        events = cuda.get("events") if isinstance(cuda, dict) else None
        count = _int(events.get("oom")) if isinstance(events, dict) else None
        if count is None or count < 0:
            return
        last = self._oom_seen
        self._oom_seen = count
        if last is None:
            return
        new = count - last if count >= last else count
        # A counter that jumps absurdly (a broken or hostile server) must not
        # stall the worker: at most MAX_OOM_EVENTS_PER_READ per reading.
        for _ in range(min(new, MAX_OOM_EVENTS_PER_READ)):
            self.service.record(min(latency_ms, MAX_DURATION_MS), ok=False, error="oom")

    # ---- messages ------------------------------------------------------------

    def explain(self, path: str, error: ProbeError) -> str:
        """401 and a 404 of ``/sdapi/*`` get a message that says what to do."""
        if error.status == 401:
            var = self.config.api_key_env
            if var and self.config.api_key():
                return f"GET {path}: HTTP 401: the webui refused the --api-auth credentials in ${var} (expected user:password)"
            return (
                f"GET {path}: HTTP 401: the webui wants credentials (--api-auth); set api_key_env to the "
                "name of an environment variable holding user:password"
            )
        if error.status == 404 and path.startswith("/sdapi/"):
            return f"GET {path}: {NO_API}"
        return str(error)

    def explain_absent(self, path: str, resp: Response) -> str:
        """A 404 at detection: no ``--api``, or an older webui."""
        return NO_API if path.startswith("/sdapi/") else "HTTP 404: this webui build has no such endpoint"


def _parse_pending(reply: Any) -> int:
    """``size`` of an ``/internal/pending-tasks`` reply."""
    size = count(reply.get("size"), "size") if isinstance(reply, dict) else None
    if size is None:
        raise ValueError("no integer 'size' in the reply")
    return size


@json_object
def _check_progress(reply: dict[str, Any]) -> str | None:
    return None if isinstance(reply.get("state"), dict) else "no 'state' object in the reply"


def _int(value: Any) -> int | None:
    """An integral JSON number (bools are not counts)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not value.is_integer():  # also NaN and inf
        return None
    return int(value)


def _number(value: Any) -> float | None:
    """A finite JSON number, else None (for status details only)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        v = float(value)
    except OverflowError:  # an integer past the float range
        return None
    return v if math.isfinite(v) else None


def _parse_memory(memory: Any) -> tuple[dict[str, float], list[str], dict[str, Any]]:
    """Engine gauges from a ``/sdapi/v1/memory`` reply, notes on the parts
    that are n/a (a half that is ``{"error": ...}``), and the reply itself
    (for the OOM counter).  ``ValueError`` for a size outside the engine's
    range."""
    if not isinstance(memory, dict):
        raise ValueError(f"expected a JSON object, got {type(memory).__name__}")
    gauges: dict[str, float] = {}
    notes: list[str] = []
    ram = memory.get("ram")
    if isinstance(ram, dict) and "error" in ram:
        notes.append(f"ram n/a: the webui reported {ram['error']!r}")
    elif isinstance(ram, dict):
        used, total = byte_size(ram.get("used"), "ram.used"), byte_size(ram.get("total"), "ram.total")
        if used is not None and total is not None:
            gauges["ram_used_bytes"] = used  # the webui process's RSS
            gauges["ram_total_bytes"] = total
    cuda = memory.get("cuda")
    if isinstance(cuda, dict) and "error" in cuda:
        notes.append(f"vram n/a: the webui reported {cuda['error']!r}")
    elif isinstance(cuda, dict):
        system = cuda.get("system")
        if isinstance(system, dict):
            used = byte_size(system.get("used"), "cuda.system.used")
            total = byte_size(system.get("total"), "cuda.system.total")
            if used is not None and total is not None:
                gauges["vram_used_bytes"] = used  # whole device, every process
                gauges["vram_total_bytes"] = total
    return gauges, notes, memory


def _progress_detail(progress: dict[str, Any], detail: dict[str, str]) -> int:
    """Running jobs (0 or 1) from ``/sdapi/v1/progress``; fills the status
    detail.  ``state.job_count`` is 0 only between jobs (``State.begin``
    sets -1, ``process_images`` the batch count, ``State.end`` 0).  The
    progress fraction is a status detail only: Forge users report it stuck
    at 0.01, and it is not a processing time."""
    state = progress["state"]  # checked by _check_progress
    job_count = _int(state.get("job_count")) or 0
    running = 1 if job_count != 0 or progress.get("current_task") else 0
    if running:
        frac = _number(progress.get("progress"))
        eta = _number(progress.get("eta_relative"))
        if frac is not None:
            detail["progress"] = f"{frac * 100:.0f}%"
        if eta is not None:
            detail["eta_s"] = f"{eta:.1f}"
        step, steps = _int(state.get("sampling_step")), _int(state.get("sampling_steps"))
        if step is not None and steps:
            detail["step"] = f"{step}/{steps}"
        if job_count > 0:
            detail["job"] = f"{(_int(state.get('job_no')) or 0) + 1}/{job_count}"
        if state.get("interrupted"):
            detail["state"] = "interrupted"
        elif state.get("skipped"):
            detail["state"] = "skipped"
    return running
