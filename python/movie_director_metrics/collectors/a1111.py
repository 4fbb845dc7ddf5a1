"""AUTOMATIC1111 stable-diffusion-webui and its fork Forge (the same API).

Endpoints (reference §2.2; ``AUTOMATIC1111/stable-diffusion-webui``
``modules/api/api.py``, ``modules/progress.py``, ``modules/shared_state.py``):

- ``GET /internal/ping`` -> ``{}``: liveness.  Registered by the UI itself,
  so it answers without ``--api`` and without ``--api-auth`` credentials.
- ``GET /internal/pending-tasks`` -> ``{"size", "tasks"}``: jobs *waiting*
  (``start_task`` pops the job it starts, so the running one is not in it).
  Also outside ``--api-auth``.  ``tasks`` (their ids) are reported as the
  queued jobs.
- ``GET /sdapi/v1/progress?skip_current_image=true`` -> ``state.job_count``
  is 0 when idle, -1 or the batch size while a job runs: the running count
  (0 or 1: the webui runs one job at a time under its queue lock), plus
  progress/ETA/step for the status detail, and the jobs (below).
- ``GET /sdapi/v1/memory`` -> ``cuda.system`` (``torch.cuda.mem_get_info``
  of the whole device: every process's use), ``ram`` (``used`` is the webui
  process's RSS, ``total`` the machine's), ``cuda.events.oom`` (the caching
  allocator's lifetime OOM count).  Either half may be ``{"error": ...}``.
- ``GET /sdapi/v1/options`` -> ``sd_model_checkpoint``: the loaded checkpoint.

``/sdapi/*`` exists only with ``--api`` and is behind HTTP Basic when the
webui runs with ``--api-auth user:pass``: put ``user:pass`` in the
environment variable ``api_key_env`` names and it is sent as Basic auth.

Jobs are *inferred*: the webui keeps no job history and gives no job
times, so each job is followed across the ``/sdapi/v1/progress`` replies
the queue signal reads every poll anyway (an idle webui costs no request
more).  What each field comes from:

- **identity**: a job runs while ``state.job_count`` is not 0 or
  ``current_task`` is set.  ``State.begin`` stamps each job with
  ``state.job_timestamp`` ("%Y%m%d%H%M%S" in the webui's local time, to the
  second: an identity only, never a time, since that clock and time zone
  are not ours); newer A1111 also names it in ``current_task`` (the task id, which
  is the job id; else the timestamp is).  A new timestamp, or another task
  id, is a new job.
- **start and end**: a job started at the first poll that saw it and ended
  at the first poll that did not (idle, or another job).  Both are known to
  the time between two polls, so processing time is within one poll
  interval of the truth (a job seen at one poll only is recorded as one
  interval).  A job is recorded only when the reads around its start and
  around its end were consecutive; after a failed read or detection (the
  webui was down, or we had just started) its start or end lies anywhere in
  the gap, and it is counted in ``detail``, not recorded.  A job that
  started and ended between two polls is never seen; the timestamp moving
  on while idle shows that one ran, and ``detail`` counts those too.
- **outcome**: ``state.interrupted`` seen while it ran, or in the idle reply
  right after it (``State.end`` leaves the flags set; the UI clears them) ->
  failed, ``"interrupted"``; ``state.skipped`` -> failed, ``"skipped"``
  (skipped images of a batch); else ok.
- **model**: ``sd_model_checkpoint`` read from ``/sdapi/v1/options`` once
  per job, at the poll that first saw it (the reply holds every setting:
  it is not read per poll).
- **workflow**: ``state.job`` when it names the pipeline (``scripts_txt2img``,
  ``scripts_img2img`` of API calls); the UI's ``(unknown)`` and the
  "Batch 2 out of 4" status text give none.
- **queue wait**: unknown (None): the webui gives no submission time.

The running job and the waiting tasks go to :meth:`Backend.report_queue`,
each finished job to :meth:`Backend.report_job`.

Cannot report: exact processing time (the service's ``processing`` signal
stays n/a: inferred jobs are to the poll interval, so they are kept as jobs
only; time jobs from the outside with the ``track()`` API for exact
figures) and GPU utilisation, temperature or power (use
:class:`~.resources.LocalResources` on the same machine).
"""

from __future__ import annotations

import base64
import math
import re
import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .._core import MAX_DURATION_MS, Service
from ..errors import InvalidValueError
from ..jobs.rows import JobRow, QueuedJob, clean_label
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
#: changes rarely, so it is re-read at most this often (and once per job).
MODELS_REFRESH_S = 60.0

#: Most waiting tasks reported as queued jobs (the job tracker keeps 256 per
#: service; the queue depth still counts them all).
MAX_QUEUED_REPORTED = 256

#: Why ``/sdapi/*`` answers 404.
NO_API = "HTTP 404: the webui was started without --api"

PROCESSING_NA = (
    "A1111/Forge keep no job history or job times: jobs inferred between polls (to the poll "
    "interval) are kept as jobs only; exact processing times come from jobs timed with track()"
)

#: ``state.job`` values that name the pipeline (``scripts_txt2img``,
#: ``extras``).  The webui also writes status text there ("Batch 2 out of
#: 4", the UI's "(unknown)"), which as a workflow would be a label per batch.
_PIPELINE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")

#: ``state.job_timestamp`` before the webui's first job.
_NO_TIMESTAMP = "0"

_NO_TAGS: MappingProxyType[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Sighting:
    """What one ``/sdapi/v1/progress`` reply says about the job running."""

    running: bool
    timestamp: str | None  # state.job_timestamp
    task: str | None  # current_task
    pipeline: str | None  # state.job, when it names the pipeline
    interrupted: bool
    skipped: bool
    progress: float | None  # 0-1 while running


@dataclass(slots=True)
class SeenJob:
    """A job followed across polls (see the module doc).  Its start is the
    poll that first saw it: ``time.monotonic()`` for its length,
    ``time.time()`` for the wall-clock anchor of its row."""

    timestamp: str | None
    task: str | None
    first_mono: float
    first_wall: float
    #: Whether the read before the first sighting was the previous poll
    #: (else the job may have started anywhere in the gap).
    start_known: bool
    workflow: str | None = None
    model: str | None = None
    model_read: bool = False
    interrupted: bool = False
    skipped: bool = False
    progress: float | None = None

    @property
    def job_id(self) -> str | None:
        return self.task or self.timestamp

    def shows(self, s: Sighting) -> bool:
        """Whether ``s`` shows this job: the same timestamp and no other
        task id.  The webui sets ``current_task`` just after
        ``State.begin`` and clears it just before ``State.end``, so one job
        may be seen both with and without it."""
        return s.timestamp == self.timestamp and (s.task is None or self.task is None or s.task == self.task)

    def note(self, s: Sighting) -> None:
        self.task = self.task or s.task
        # The first name that is a pipeline's: a later "Batch 2 out of 4"
        # overwrites state.job mid-job.
        self.workflow = self.workflow or s.pipeline
        # Once seen, kept: the webui resets the flags only at the next job
        # (``skipped`` also at the next image of a batch).
        self.interrupted = self.interrupted or s.interrupted
        self.skipped = self.skipped or s.skipped
        self.progress = s.progress


class A1111(Backend):
    """AUTOMATIC1111 / Forge: liveness, queue, memory, OOM events, loaded
    model, and the jobs inferred from progress (see the module doc).

    After :meth:`collect`, ``detail`` holds the progress of the running job
    (``progress``, ``eta_s``, ``step``, ``job``), memory notes and the jobs
    that could not be recorded, ``models`` the loaded checkpoint.  OOM
    events the allocator counts are recorded on the service as failures of
    type ``"oom"``, each new event once.
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
        #: Jobs that started and ended between two polls (seen only as the
        #: job timestamp moving on while idle): not recorded.
        self.jobs_unseen = 0
        #: Jobs seen whose start or end fell in a gap of the reads (a failed
        #: read, the webui down, our own start): not recorded.
        self.jobs_untimed = 0
        #: Lifetime OOM count at the last reading (None: not read yet).
        self._oom_seen: int | None = None
        self._progress_known = False
        self._models_read_at = float("-inf")
        #: This cycle's running count (None: progress not read this cycle).
        self._running: int | None = None
        self._job: SeenJob | None = None
        #: Whether the reads were interrupted since the last progress reply
        #: (true until the first one).
        self._reads_broken = True
        self._last_timestamp: str | None = None
        #: Waiting task id -> when we first saw it (wall clock).
        self._waiting: dict[str, float] = {}

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
        if not self.detected:
            # First detection, or again after the webui was down: the polls
            # in between are missing.
            self._reads_broken = True
        self.begin_detection()
        caps = self.capabilities
        caps.set("health", f"GET {PING}")
        caps.lack("processing", PROCESSING_NA)

        pending, why_pending = self.try_fetch(PENDING, parse=_parse_pending)
        progress, why_progress = self.try_fetch(PROGRESS, check=_check_progress)
        self._progress_known = progress is not None
        if progress is None:
            self._reads_broken = True
            if self._job is not None:  # no longer followed: its end will not be seen
                self._job = None
                self.jobs_untimed += 1
        else:
            self._follow(_sighting(progress), time.monotonic(), self.now())
        if pending is None:
            caps.lack("queue", f"GET {PENDING}: {why_pending}")
        else:
            self._note_waiting(pending[1])
            if self._progress_known:
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
            self._loaded(checkpoint)
        else:
            caps.lack("models", f"GET {OPTIONS}: {why_options or 'no sd_model_checkpoint in the reply'}")
        if why_progress == NO_API and why_options == NO_API:
            # The webui runs (it answers the ping) but every /sdapi route
            # 404s: started without --api, none of its API can be used.  A
            # failed detection, so the backend is not shown as up.
            raise ProbeError("http_4xx", f"GET {OPTIONS}: {NO_API}", 0.0, 404)
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
        self._running = None
        parts = (self._collect_progress, self._collect_queue, self._collect_jobs, self._collect_memory, self._collect_models)
        for part in parts:
            try:
                part(detail)
            except ProbeError as e:
                failures.append(e)
        self.detail = detail
        if failures:
            raise failures[0]

    def _collect_progress(self, detail: dict[str, str]) -> None:
        if not self._progress_known:
            return
        try:
            progress = self.fetch(PROGRESS, check=_check_progress)[0]
        except ProbeError:
            self._reads_broken = True  # a job's start or end may fall in this gap
            raise
        self._running = _progress_detail(progress, detail)
        self._follow(_sighting(progress), time.monotonic(), self.now())

    def _collect_queue(self, detail: dict[str, str]) -> None:
        if not self.capabilities.has("queue"):
            return
        if self._progress_known and self._running is None:
            return  # the running count failed to read: nothing recorded (the engine keeps the last reading)
        size, waiting = self.fetch(PENDING, parse=_parse_pending)[0]
        self._note_waiting(waiting)
        self.service.set_queue(running=self._running or 0, pending=size)

    def _collect_jobs(self, detail: dict[str, str]) -> None:
        """The running job's model (one options read per job), then the
        running and waiting jobs to :meth:`Backend.report_queue`."""
        try:
            job = self._job
            if job is not None and not job.model_read and self.capabilities.has("models"):
                self._read_checkpoint()
        finally:
            if self.jobs_unseen:
                detail["jobs_unseen"] = f"{self.jobs_unseen} job(s) started and ended between two polls (not recorded)"
            if self.jobs_untimed:
                detail["jobs_untimed"] = (
                    f"{self.jobs_untimed} job(s) not recorded: a read failed or the webui was down as they started or ended"
                )
            if self.on_queue is not None and (self._progress_known or self.capabilities.has("queue")):
                self.report_queue(self._queued())

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
        self._read_checkpoint()

    def _read_checkpoint(self) -> None:
        checkpoint = self.fetch(OPTIONS, check=json_object())[0].get("sd_model_checkpoint")
        self._loaded(checkpoint)

    def _loaded(self, checkpoint: Any) -> None:
        """A read of ``sd_model_checkpoint``: the loaded model, and the model
        of the running job that has none yet."""
        self._models_read_at = time.monotonic()
        self.models = [checkpoint] if isinstance(checkpoint, str) else []
        job = self._job
        if job is not None and not job.model_read:
            job.model, job.model_read = _label(checkpoint), True

    # ---- jobs ------------------------------------------------------------------

    def _follow(self, s: Sighting, mono: float, wall: float) -> None:
        """One progress reply, read at ``mono``/``wall``: ends the job it no
        longer shows (recording it), starts the one it shows first."""
        consecutive = not self._reads_broken
        job = self._job
        if job is not None and s.running and job.shows(s):
            job.note(s)
        elif job is not None:
            if not s.running and s.timestamp == job.timestamp:
                # The idle reply right after the job: State.end leaves its
                # flags set (API jobs; the UI clears them).
                job.interrupted = job.interrupted or s.interrupted
                job.skipped = job.skipped or s.skipped
            self._job = None
            self._finished(job, mono, consecutive)
        if s.running and self._job is None:
            self._job = SeenJob(s.timestamp, s.task, mono, wall, start_known=consecutive)
            self._job.note(s)
        elif (
            not s.running
            and self._last_timestamp is not None
            and s.timestamp not in (None, _NO_TIMESTAMP, self._last_timestamp)
        ):
            # State.begin stamped a job we never saw running (at least one).
            self.jobs_unseen += 1
        self._last_timestamp = s.timestamp
        self._reads_broken = False

    def _finished(self, job: SeenJob, end_mono: float, consecutive: bool) -> None:
        """Records a job that ended before the poll at ``end_mono``, when its
        start and end both fell between consecutive reads."""
        if not (job.start_known and consecutive):
            self.jobs_untimed += 1
            return
        processing_ms = min((end_mono - job.first_mono) * 1e3, MAX_DURATION_MS)
        error = "interrupted" if job.interrupted else "skipped" if job.skipped else None
        self.report_job(
            JobRow(
                service=self.config.name,
                model=job.model,
                workflow=job.workflow,
                job_id=job.job_id,
                tags=_NO_TAGS,
                source="backend",
                # No submission time: the queue wait is unknown (None), and
                # the job counts from its start.
                submitted_at=job.first_wall,
                started_at=job.first_wall,
                finished_at=job.first_wall + processing_ms / 1e3,
                queue_wait_ms=None,
                processing_ms=processing_ms,
                ok=error is None,
                error=error,
            )
        )

    def _note_waiting(self, waiting: list[str]) -> None:
        """The waiting task ids now, each with when we first saw it."""
        wall, seen = self.now(), self._waiting
        self._waiting = {task: seen.get(task, wall) for task in waiting}

    def _queued(self) -> list[QueuedJob]:
        name = self.config.name
        jobs: list[QueuedJob] = []
        job = self._job
        if job is not None:
            jobs.append(
                QueuedJob(
                    name,
                    job.job_id or "(running)",
                    "running",
                    model=job.model,
                    workflow=job.workflow,
                    started_at=job.first_wall if job.start_known else None,
                    progress_fraction=job.progress,
                    seen_at=job.first_wall,
                )
            )
        jobs.extend(QueuedJob(name, task, "queued", seen_at=seen) for task, seen in self._waiting.items())
        return jobs

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


def _parse_pending(reply: Any) -> tuple[int, list[str]]:
    """``size`` of an ``/internal/pending-tasks`` reply, and the ids in its
    ``tasks`` (the first :data:`MAX_QUEUED_REPORTED`; ids that are not
    printable text are left out: they are for the views, the size counts)."""
    size = count(reply.get("size"), "size") if isinstance(reply, dict) else None
    if size is None:
        raise ValueError("no integer 'size' in the reply")
    tasks = reply.get("tasks")
    ids: list[str] = []
    if isinstance(tasks, list):
        for task in tasks[:MAX_QUEUED_REPORTED]:
            label = _label(task)
            if label is not None:
                ids.append(label)
    return size, ids


@json_object
def _check_progress(reply: dict[str, Any]) -> str | None:
    return None if isinstance(reply.get("state"), dict) else "no 'state' object in the reply"


def _is_running(progress: dict[str, Any]) -> bool:
    """``state.job_count`` is 0 only between jobs (``State.begin`` sets -1,
    ``process_images`` the batch count, ``State.end`` 0); ``current_task``
    is set while a queued task runs (newer A1111)."""
    return (_int(progress["state"].get("job_count")) or 0) != 0 or bool(progress.get("current_task"))


def _sighting(progress: dict[str, Any]) -> Sighting:
    """The job a progress reply (checked by ``_check_progress``) shows.
    Never raises: a field of the wrong type reads as absent."""
    state = progress["state"]
    name = state.get("job")
    frac = _number(progress.get("progress"))
    running = _is_running(progress)
    return Sighting(
        running=running,
        timestamp=_label(state.get("job_timestamp")),
        task=_label(progress.get("current_task")),
        pipeline=name if isinstance(name, str) and _PIPELINE.fullmatch(name) else None,
        interrupted=state.get("interrupted") is True,
        skipped=state.get("skipped") is True,
        progress=min(max(frac, 0.0), 1.0) if running and frac is not None else None,
    )


def _label(value: Any) -> str | None:
    """``value`` as a job label (printable text, cut to the row's limit),
    else None."""
    try:
        return clean_label("label", value)
    except InvalidValueError:
        return None


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
    """Running jobs (0 or 1) from ``/sdapi/v1/progress`` (see
    ``_is_running``); fills the status detail.  The progress fraction is a
    status detail only: Forge users report it stuck at 0.01, and it is not
    a processing time."""
    state = progress["state"]  # checked by _check_progress
    job_count = _int(state.get("job_count")) or 0
    running = 1 if _is_running(progress) else 0
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
