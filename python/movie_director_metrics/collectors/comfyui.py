"""ComfyUI: liveness and queue from ``/prompt``, processing time from
``/api/jobs`` or ``/history``, memory from ``/system_stats``.

Endpoints and payloads follow ComfyUI's ``server.py`` and
``comfy_execution/jobs.py`` (see the reference notes, section 2.1) and are
tested against responses recorded from a real ComfyUI 0.3.64.

What each signal comes from:

- **health**: ``GET /api/prompt`` (``/prompt`` on builds without the
  ``/api`` prefix; which one is decided at ``detect``).  The cheapest
  route ComfyUI has, and its reply carries the queue depth.
- **queue**: ``exec_info.queue_remaining`` from that same reply (running +
  pending).  An idle server costs nothing more; a busy one is split into
  running and pending by ``GET /queue`` (its item lists), because
  ``queue_remaining`` alone cannot tell them apart.
- **processing**: for each finished prompt, ``end - start`` in ms, where
  start is the ``execution_start`` timestamp and end the
  ``execution_success``/``execution_error``/``execution_interrupted`` one
  (``/history?max_items=N`` ``status.messages``), or
  ``execution_end_time - execution_start_time`` from ``/api/jobs`` on
  builds that have it.  Every prompt is counted exactly once across polls
  (a bounded set of seen prompt ids).

  What a poll costs must not grow with the server's history or the size of
  its workflows: a history entry carries the whole prompt graph (64
  entries of a 60-node graph are ~420 KB), so finished prompts are read
  only when something may have finished -- the queue count fell, or a
  prompt left ``/queue`` -- and then only the newest few (what finished,
  plus one already seen that proves nothing older is missing; doubling up
  to :data:`HISTORY_ITEMS` when every entry read is new).  A prompt can
  finish without the count showing it (submitted and finished between two
  polls, as a cached re-run does in milliseconds, or a finish hidden by a
  submission in the same interval), so every :data:`HISTORY_SWEEP_S` the
  newest entry is read as well.  ``/queue`` (whose items carry the graph
  too) is read only when the count changed.  Failed and interrupted runs are
  recorded as processing time too -- they held the executor for that long
  -- and counted per outcome in :attr:`ComfyUI.executions`; they are not
  recorded as failed *requests*, because the HTTP calls that reported them
  succeeded.
- **resources**: ``/system_stats`` ``devices[0]`` ``vram_total``/``vram_free``
  and ``system`` ``ram_total``/``ram_free``.  ComfyUI reports memory only:
  no GPU utilisation, temperature or power (on a CPU-only build the
  ``vram_*`` figures are the machine's RAM).
- **version**: ``system.comfyui_version`` from ``/system_stats``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

from .._core import MAX_DURATION_MS, Service
from .base import Backend, Capabilities, json_object
from .config import BackendConfig
from .http import HttpClient, ProbeError
from .readings import byte_size, count, number

#: The most finished prompts one read covers (the first read after
#: detection reads this many; later ones read what finished, doubling up to
#: this).  More than this many finishing between two reads would be missed.
HISTORY_ITEMS = 64

#: Seconds between reads of the newest finished prompt while the queue
#: count gives no sign that one finished (see the module docs).
HISTORY_SWEEP_S = 10.0

#: Prompt ids remembered as already recorded.  Must exceed HISTORY_ITEMS
#: by a wide margin: an id forgotten while still among the newest
#: HISTORY_ITEMS would be counted again.
SEEN_IDS_MAX = 4096

#: History end events -> the outcome they are counted as.
_END_EVENTS: dict[str, str] = {
    "execution_success": "success",
    "execution_error": "execution_error",
    "execution_interrupted": "interrupted",
}

#: ``/api/jobs`` statuses of finished jobs -> outcome.
_JOB_OUTCOMES: dict[str, str] = {
    "completed": "success",
    "failed": "execution_error",
    "cancelled": "interrupted",
}


def _parse_prompt(data: Any) -> int:
    """``exec_info.queue_remaining`` of a ``/prompt`` reply."""
    info = data.get("exec_info") if isinstance(data, dict) else None
    n = count(info.get("queue_remaining"), "exec_info.queue_remaining") if isinstance(info, dict) else None
    if n is None:
        raise ValueError("no exec_info.queue_remaining count")
    return n


@dataclass(frozen=True)
class _Queue:
    """A ``/queue`` reply: how many prompts run and wait, and their ids."""

    running: int
    pending: int
    prompt_ids: frozenset[str]


def _parse_queue(data: Any) -> _Queue:
    """``queue_running``/``queue_pending`` of a ``/queue`` reply; each item
    is ``[number, prompt_id, prompt, extra_data, outputs_to_execute]``."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    running, pending = data.get("queue_running"), data.get("queue_pending")
    if not (isinstance(running, list) and isinstance(pending, list)):
        raise ValueError("no queue_running/queue_pending lists")
    ids = frozenset(item[1] for item in (*running, *pending) if isinstance(item, list) and len(item) > 1 and isinstance(item[1], str))
    return _Queue(len(running), len(pending), ids)


@dataclass(frozen=True)
class _Finished:
    """One finished prompt: its execution time (None when its timestamps
    are missing or run backwards) and outcome (None when unknown)."""

    prompt_id: str
    duration_ms: float | None
    outcome: str | None


def _finished(prompt_id: str, start: Any, end: Any, outcome: str | None, where: str) -> _Finished:
    s = number(start, f"{where} start timestamp", high=float("inf"))
    e = number(end, f"{where} end timestamp", high=float("inf"))
    duration = e - s if s is not None and e is not None and e >= s else None
    if duration is not None and duration > MAX_DURATION_MS:
        raise ValueError(f"{where}: end - start = {duration:g} ms: expected at most {MAX_DURATION_MS:g} ms")
    return _Finished(prompt_id, duration, outcome)


@dataclass(frozen=True)
class _FinishedPage:
    """The newest finished prompts of one read, newest first, and how many
    finished prompts the server holds in all when it says (``/api/jobs``
    ``pagination.total``; None for ``/history``)."""

    newest_first: list[_Finished]
    total: int | None = None


def _parse_jobs(data: Any) -> _FinishedPage:
    """The finished jobs of an ``/api/jobs`` reply, newest first."""
    jobs = data.get("jobs") if isinstance(data, dict) else None
    if not isinstance(jobs, list):
        raise ValueError("no jobs list")
    pagination = data.get("pagination")
    total = count(pagination.get("total"), "pagination.total") if isinstance(pagination, dict) else None
    return _FinishedPage([
        _finished(
            job["id"],
            job.get("execution_start_time"),
            job.get("execution_end_time"),
            _JOB_OUTCOMES.get(str(job.get("status"))),
            f"job {job['id']!r}",
        )
        for job in jobs
        if isinstance(job, dict) and isinstance(job.get("id"), str)
    ], total)


def _parse_history(data: Any) -> _FinishedPage:
    """The prompts of a ``/history`` reply (oldest first, as ComfyUI keeps
    them: in the order they finished), newest first: the
    ``execution_start`` event's timestamp to that of the end event
    (success, error or interrupted)."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    out: list[_Finished] = []
    for prompt_id, entry in data.items():
        start: Any = None
        end: Any = None
        outcome: str | None = None
        status = entry.get("status") if isinstance(entry, dict) else None
        messages = status.get("messages") if isinstance(status, dict) else None
        for i, msg in enumerate(messages if isinstance(messages, list) else ()):
            if not (isinstance(msg, list) and len(msg) >= 2 and isinstance(msg[1], dict)):
                continue
            if not isinstance(msg[0], str):
                raise ValueError(f"prompt {prompt_id!r} status.messages[{i}]: expected an event name, got {msg[0]!r:.60}")
            if msg[0] == "execution_start":
                start = msg[1].get("timestamp")
            elif msg[0] in _END_EVENTS:
                end, outcome = msg[1].get("timestamp"), _END_EVENTS[msg[0]]
        out.append(_finished(prompt_id, start, end, outcome, f"prompt {prompt_id!r}"))
    out.reverse()
    return _FinishedPage(out)


def _parse_system_stats(stats: Any) -> dict[str, float]:
    """Engine gauges from a ``/system_stats`` reply (only the pairs whose
    total and free are both there)."""
    if not isinstance(stats, dict):
        raise ValueError(f"expected a JSON object, got {type(stats).__name__}")
    gauges: dict[str, float] = {}
    devices = stats.get("devices")
    if isinstance(devices, list) and devices and isinstance(devices[0], dict):
        total = byte_size(devices[0].get("vram_total"), "devices[0].vram_total")
        free = byte_size(devices[0].get("vram_free"), "devices[0].vram_free")
        if total is not None and free is not None:
            gauges["vram_used_bytes"] = max(total - free, 0.0)
            gauges["vram_total_bytes"] = total
    system = stats.get("system")
    if isinstance(system, dict):
        total = byte_size(system.get("ram_total"), "system.ram_total")
        free = byte_size(system.get("ram_free"), "system.ram_free")
        if total is not None and free is not None:
            gauges["ram_used_bytes"] = max(total - free, 0.0)
            gauges["ram_total_bytes"] = total
    return gauges


def _version(stats: Any) -> str | None:
    system = stats.get("system") if isinstance(stats, dict) else None
    version = system.get("comfyui_version") if isinstance(system, dict) else None
    return version if isinstance(version, str) and version else None


class ComfyUI(Backend):
    """A ComfyUI server (default port 8188)."""

    kind: ClassVar[str] = "comfyui"
    default_port: ClassVar[int | None] = 8188

    def __init__(self, config: BackendConfig, service: Service, client: HttpClient | None = None) -> None:
        super().__init__(config, service, client)
        #: Server version from ``/system_stats``, once read.
        self.version: str | None = None
        #: Finished prompts seen, by outcome: success, execution_error,
        #: interrupted (since this object was created).
        self.executions: dict[str, int] = {"success": 0, "execution_error": 0, "interrupted": 0}
        #: "/api" or "" once detected; probes before that try both.
        self._prefix: str | None = None
        self._probe_prefix = "/api"
        self._jobs = False
        #: The probe's ``queue_remaining``, until ``collect`` reports it.
        self._queue_remaining: int | None = None
        #: What the last ``collect`` knew of the queue: its count, and the
        #: last ``/queue`` reply while that count held (None: unread).
        self._last_remaining: int | None = None
        self._last_queue: _Queue | None = None
        #: Whether the first read of finished prompts (HISTORY_ITEMS of
        #: them) is still due; set again at each detection.
        self._first_read = True
        #: Prompts the queue says finished since the last read of them.
        self._due_finished = 0
        #: ``time.monotonic()`` of the last read of finished prompts.
        self._read_at = float("-inf")
        #: ``pagination.total`` of the last ``/api/jobs`` read.
        self._jobs_total: int | None = None
        self._seen: OrderedDict[str, None] = OrderedDict()

    # ---- Backend -------------------------------------------------------------

    def probe(self) -> float:
        """``GET {prefix}/prompt``; keeps ``queue_remaining`` for ``collect``.
        Before detection it tries ``/api/prompt`` and falls back to
        ``/prompt`` when that 404s (an older build)."""
        prefixes = [self._prefix] if self.detected and self._prefix is not None else ["/api", ""]
        while True:
            prefix = prefixes.pop(0)
            # A 404 on the prefixed route is an answer (an older build), not
            # a failure; on the last route it is one.
            remaining, latency_ms = self.fetch(f"{prefix}/prompt", parse=_parse_prompt, absent=(404,) if prefixes else ())
            if remaining is not None:
                break
        self._probe_prefix = prefix
        self._queue_remaining = remaining
        return latency_ms

    def detect(self) -> Capabilities:
        caps = self.capabilities
        caps.available.clear()
        caps.missing.clear()
        self._prefix = self._probe_prefix
        p = self._prefix
        caps.set("health", f"GET {p}/prompt")
        caps.set("queue", f"{p}/prompt exec_info.queue_remaining, split by {p}/queue")
        try:
            stats, _ = self.fetch(f"{p}/system_stats", check=json_object(), absent=(404,))
            served = stats is not None
        except ProbeError:
            # Up (the probe just answered) but failing here: keep the signal
            # and let collect retry it (and read the version) each cycle.
            stats, served = None, True
        if not served:
            caps.lack("resources", f"{p}/system_stats is not served by this build")
        else:
            caps.set("resources", f"{p}/system_stats devices[0].vram_*, system.ram_* (memory only)")
            if stats is not None:
                self.version = _version(stats) or self.version
        caps.lack("gpu_util", "ComfyUI reports memory only")
        caps.lack("models", "ComfyUI does not report which models are loaded")
        self._jobs = False
        try:
            # /api/jobs is registered with its prefix only, whatever the build.
            jobs, _ = self.fetch("/api/jobs?limit=1", parse=_parse_jobs, absent=(400, 404, 405))
            self._jobs = jobs is not None
        except ProbeError:
            self._jobs = False  # /history is always there: use it
        if self._jobs:
            caps.set("processing", "/api/jobs execution_end_time - execution_start_time (the newest, as they finish)")
        else:
            caps.set("processing", f"{p}/history status.messages, end - execution_start (the newest, as they finish)")
        self._first_read = True
        return caps

    def collect(self) -> None:
        """Queue, processing times and memory; a failed read of one signal
        does not stop the others (the first failure is re-raised at the
        end, after all were tried)."""
        first: ProbeError | None = None
        for signal, step in (
            ("queue", self._collect_queue),
            ("processing", self._collect_processing),
            ("resources", self._collect_resources),
        ):
            if not self.capabilities.has(signal):
                continue
            try:
                step()
            except ProbeError as e:
                first = first or e
        if first is not None:
            raise first

    # ---- signals ---------------------------------------------------------------

    @property
    def _p(self) -> str:
        return self._prefix if self._prefix is not None else self._probe_prefix

    def _collect_queue(self) -> None:
        remaining = self._queue_remaining
        if remaining is None:
            return
        self._queue_remaining = None  # one probe reply feeds one report
        before, last = self._last_remaining, self._last_queue
        # Forget the old reply first: if /queue fails now, the next cycle
        # must read it again rather than trust a split of another count.
        self._last_remaining, self._last_queue = remaining, None
        if before is not None and remaining < before:
            self._due_finished += before - remaining
        queue: _Queue
        if remaining == 0:
            queue = _Queue(0, 0, frozenset())
        elif remaining == before and last is not None and last.running + last.pending == remaining:
            # Same count as last cycle: the split is the one read then.  A
            # finish hidden by a submission in the same interval is caught
            # by the sweep (see the module docs).
            queue = last
        else:
            queue = self.fetch(f"{self._p}/queue", parse=_parse_queue)[0]
            if last is not None:
                # Prompts that left the queue (finished, or deleted while
                # pending: reading one more entry than needed is cheap).
                left = len(last.prompt_ids - queue.prompt_ids)
                self._due_finished = max(self._due_finished, left)
        self.service.set_queue(queue.running, queue.pending)
        self._last_queue = queue

    def _collect_processing(self) -> None:
        now = time.monotonic()
        if self._first_read:
            want = HISTORY_ITEMS
        elif self._due_finished > 0:
            want = self._due_finished + 1  # plus one already seen: proves nothing older was missed
        elif now - self._read_at >= HISTORY_SWEEP_S:
            want = 1
        else:
            return
        fresh = self._read_newest(want)
        # Only a read that answered settles what was due (a failed one is
        # tried again next cycle).
        self._first_read, self._due_finished, self._read_at = False, 0, now
        for prompt in reversed(fresh):  # record oldest first
            self._record_finished(prompt)

    def _read_newest(self, want: int) -> list[_Finished]:
        """The newest finished prompts not yet recorded, newest first: reads
        ``want`` of them, and twice as many again while every one read is
        new (or, on ``/api/jobs``, while its total says more finished),
        up to :data:`HISTORY_ITEMS`."""
        k = min(max(want, 1), HISTORY_ITEMS)
        while True:
            page = self._fetch_finished(k)
            fresh = [p for p in page.newest_first if p.prompt_id not in self._seen]
            grown = None if page.total is None or self._jobs_total is None else page.total - self._jobs_total
            more = len(fresh) == len(page.newest_first) or (grown is not None and len(fresh) < grown)
            if not (more and len(page.newest_first) >= k and k < HISTORY_ITEMS):
                self._jobs_total = page.total
                return fresh
            k = min(2 * k, HISTORY_ITEMS)

    def _fetch_finished(self, k: int) -> _FinishedPage:
        """The newest ``k`` finished prompts, newest first."""
        page: _FinishedPage
        if self._jobs:
            page, _ = self.fetch(
                f"/api/jobs?status=completed,failed,cancelled&sort_by=created_at&sort_order=desc&limit={k}",
                parse=_parse_jobs,
            )
        else:
            page, _ = self.fetch(f"{self._p}/history?max_items={k}", parse=_parse_history)
        return page

    def _record_finished(self, prompt: _Finished) -> None:
        """Records one finished prompt's execution time, once per id.

        A prompt appears in history (and as a finished job) only once it
        has finished, and its entry never changes after that, so an entry
        without usable timestamps is marked seen too: it never gets them.
        """
        if prompt.prompt_id in self._seen:
            return
        self._seen[prompt.prompt_id] = None
        if len(self._seen) > SEEN_IDS_MAX:
            self._seen.popitem(last=False)
        if prompt.duration_ms is None or prompt.outcome is None:
            return
        self.service.record_processing(prompt.duration_ms)
        self.executions[prompt.outcome] += 1

    def _collect_resources(self) -> None:
        stats, _ = self.fetch(f"{self._p}/system_stats", parse=lambda data: (_version(data), _parse_system_stats(data)))
        version, gauges = stats
        self.version = version or self.version
        if gauges:
            self.service.set_resource(**gauges)
