"""ComfyUI: liveness and queue from ``/prompt``, processing time and jobs
from ``/api/jobs`` or ``/history``, memory from ``/system_stats``.

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
- **jobs**: each finished prompt that read finds is also one job row
  (:class:`~movie_director_metrics.jobs.JobRow`, handed to
  :meth:`~.base.Backend.report_job`), with ``job_id`` = the prompt id and
  ``service`` = this backend's name, so a job the user's code recorded with
  that id counts once.  From the prompt graph (``[number, prompt_id,
  graph, extra_data, outputs]``; ``graph`` = ``{node_id: {"class_type",
  "inputs"}}``): ``model`` is the file a loader node names
  (:data:`MODEL_LOADERS`, the one table of them; the lowest node id first
  when there are several, all of them then in the tag ``models``), the
  LoRAs go in the tag ``loras``; an input wired to another node
  (``[node_id, slot]``) names nothing and is skipped.  ``workflow`` is
  ``extra_data.extra_pnginfo.workflow.id`` -- the id ComfyUI's own frontend
  gives a saved workflow and ``/api/jobs`` reports as ``workflow_id`` --
  else ``graph-`` and 8 hex digits of a hash of the graph's node types (the
  same graph with other settings gets the same label).  No other
  ``extra_data`` key is read: the frontend also puts the user's Comfy API
  key there.  Queue wait is ``execution_start - extra_data.create_time``
  (ms, set at enqueue by newer builds only; unknown, never 0, on older
  ones), and ``submitted_at`` is ``create_time`` when known, else the
  start.  ``error`` is the ``execution_error`` event's ``exception_type``
  without its module path (``SafetensorError``), or ``interrupted``.

  On ``/history`` builds the entries read already hold the graph: jobs cost
  no request more.  On ``/api/jobs`` builds the list has no graph, so
  ``/api/jobs/{id}`` is read for each newly finished job -- a cost that
  follows the jobs that finish, not the history's size.  Prompts that had
  finished before this collector's first read are not jobs (counted as
  processing time as before): a previous session saw them, and ComfyUI
  keeps them across our restarts.  A prompt POST ``/prompt`` rejects (HTTP
  400, e.g. a model file it does not have) never runs and is no job.
- **queued jobs**: each ``/queue`` read (only when the count changed, see
  above) also lists its running and pending prompts as
  :class:`~movie_director_metrics.jobs.QueuedJob` with the same labels, for
  :meth:`~.base.Backend.report_queue`; an empty queue is reported without
  a read.  ``/queue`` has no start time: a running prompt's is unknown.
- **resources**: ``/system_stats`` ``devices[0]`` ``vram_total``/``vram_free``
  and ``system`` ``ram_total``/``ram_free``: every cycle while a prompt
  runs or waits (a job's peak VRAM is read from these), at most every
  :data:`IDLE_RESOURCES_EVERY_S` while the queue is empty (memory that
  does not move is not worth a request a second: a third of an idle
  ComfyUI's requests).  ComfyUI reports memory only:
  no GPU utilisation, temperature or power (on a CPU-only build the
  ``vram_*`` figures are the machine's RAM).
- **version**: ``system.comfyui_version`` from ``/system_stats``.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import quote

from .._core import MAX_DURATION_MS, Service
from ..jobs.rows import MAX_LABEL_CHARS, JobRow, QueuedJob
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

#: Seconds between ``/system_stats`` reads while the queue is empty (every
#: cycle while it is not: see the module docs).
IDLE_RESOURCES_EVERY_S = 5.0

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

#: Loader nodes that name a model file: ``class_type`` -> (the input that
#: holds the name, what it is).  "model" is a base model (a checkpoint, a
#: diffusion model / UNet, a diffusers folder, a GGUF UNet from the
#: ComfyUI-GGUF custom nodes); "lora" a LoRA.  Node types missing here
#: leave a job's model unknown, never wrong.
MODEL_LOADERS: dict[str, tuple[str, str]] = {
    "CheckpointLoaderSimple": ("ckpt_name", "model"),
    "CheckpointLoader": ("ckpt_name", "model"),
    "unCLIPCheckpointLoader": ("ckpt_name", "model"),
    "ImageOnlyCheckpointLoader": ("ckpt_name", "model"),
    "UNETLoader": ("unet_name", "model"),
    "DiffusersLoader": ("model_path", "model"),
    "UnetLoaderGGUF": ("unet_name", "model"),
    "UnetLoaderGGUFAdvanced": ("unet_name", "model"),
    "LoraLoader": ("lora_name", "lora"),
    "LoraLoaderModelOnly": ("lora_name", "lora"),
}

#: Prefix of a workflow label made from the graph's node types.
GRAPH_LABEL_PREFIX = "graph-"


def _label(value: Any) -> str | None:
    """``value`` as a job label: a non-empty printable string, cut to
    ``MAX_LABEL_CHARS``; anything else (a link ``[node_id, slot]``, a
    number) is None."""
    if not isinstance(value, str) or not value or not value.isprintable():
        return None
    return value[:MAX_LABEL_CHARS]


def _epoch_ms(value: Any) -> float | None:
    """An optional epoch-ms field (``create_time``): None unless a positive
    finite number.  Not an error otherwise: it only adds the queue wait."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        v = float(value)
    except OverflowError:
        return None
    return v if math.isfinite(v) and v > 0 else None


def _node_order(node_id: str) -> tuple[tuple[int, int, str], ...]:
    """Node ids in number order ("9" before "10"; subgraph ids such as
    "12:3" part by part), so that "the first loader" does not depend on how
    the client ordered its JSON."""
    # isdecimal, not isdigit: int() refuses some digits ("²") isdigit accepts.
    return tuple((0, int(p), "") if p.isdecimal() else (1, 0, p) for p in node_id.split(":"))


@dataclass(frozen=True)
class _Labels:
    """What a prompt graph says about its job."""

    model: str | None
    workflow: str | None
    tags: dict[str, str] = field(default_factory=dict)


def _labels(graph: Any, workflow_id: str | None) -> _Labels:
    """The model, LoRAs and workflow label of a prompt ``graph`` (see the
    module docs); ``workflow_id`` is the frontend's id when the prompt had
    one."""
    models: list[str] = []
    loras: list[str] = []
    types: list[str] = []
    if isinstance(graph, dict):
        for node_id in sorted((k for k in graph if isinstance(k, str)), key=_node_order):
            node = graph[node_id]
            class_type = node.get("class_type") if isinstance(node, dict) else None
            if not isinstance(class_type, str):
                continue
            types.append(class_type)
            loader = MODEL_LOADERS.get(class_type)
            inputs = node.get("inputs")
            if loader is None or not isinstance(inputs, dict):
                continue
            name = _label(inputs.get(loader[0]))
            found = models if loader[1] == "model" else loras
            if name is not None and name not in found:
                found.append(name)
    tags: dict[str, str] = {}
    if len(models) > 1:
        tags["models"] = ", ".join(models)[:MAX_LABEL_CHARS]
    if loras:
        tags["loras"] = ", ".join(loras)[:MAX_LABEL_CHARS]
    workflow = workflow_id
    if workflow is None and types:
        # Sorted: the same node types give the same label whatever their ids.
        digest = hashlib.blake2b("\n".join(sorted(types)).encode(), digest_size=4).hexdigest()
        workflow = GRAPH_LABEL_PREFIX + digest
    return _Labels(models[0] if models else None, workflow, tags)


def _workflow_id(extra_data: Any) -> str | None:
    """``extra_data.extra_pnginfo.workflow.id``: the id ComfyUI's frontend
    gives the workflow it submits."""
    pnginfo = extra_data.get("extra_pnginfo") if isinstance(extra_data, dict) else None
    workflow = pnginfo.get("workflow") if isinstance(pnginfo, dict) else None
    return _label(workflow.get("id")) if isinstance(workflow, dict) else None


def _exception_type(event: Any) -> str | None:
    """An ``execution_error`` event's ``exception_type`` without its module
    path (``safetensors._safetensors_rust.SafetensorError`` ->
    ``SafetensorError``): the class names a job's error, as for jobs
    recorded from code."""
    name = event.get("exception_type") if isinstance(event, dict) else None
    return _label(name.rsplit(".", 1)[-1]) if isinstance(name, str) else None


def _parse_prompt(data: Any) -> int:
    """``exec_info.queue_remaining`` of a ``/prompt`` reply."""
    info = data.get("exec_info") if isinstance(data, dict) else None
    n = count(info.get("queue_remaining"), "exec_info.queue_remaining") if isinstance(info, dict) else None
    if n is None:
        raise ValueError("no exec_info.queue_remaining count")
    return n


@dataclass(frozen=True)
class _QueueItem:
    """One prompt of a ``/queue`` reply, as its job will be labelled."""

    prompt_id: str
    state: str  # "running" | "queued"
    labels: _Labels
    created_ms: float | None


@dataclass(frozen=True)
class _Queue:
    """A ``/queue`` reply: how many prompts run and wait, their ids, and
    their labels (the graphs themselves are not kept)."""

    running: int
    pending: int
    prompt_ids: frozenset[str]
    items: tuple[_QueueItem, ...] = ()


#: The queue of an idle server (one object: an idle cycle reports nothing new).
_IDLE = _Queue(0, 0, frozenset())


def _parse_queue(data: Any) -> _Queue:
    """``queue_running``/``queue_pending`` of a ``/queue`` reply; each item
    is ``[number, prompt_id, prompt, extra_data, outputs_to_execute]``."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    running, pending = data.get("queue_running"), data.get("queue_pending")
    if not (isinstance(running, list) and isinstance(pending, list)):
        raise ValueError("no queue_running/queue_pending lists")
    items = []
    for state, group in (("running", running), ("queued", pending)):
        for item in group:
            if not (isinstance(item, list) and len(item) > 1 and isinstance(item[1], str)):
                continue
            graph = item[2] if len(item) > 2 else None
            extra = item[3] if len(item) > 3 and isinstance(item[3], dict) else {}
            items.append(_QueueItem(item[1], state, _labels(graph, _workflow_id(extra)), _epoch_ms(extra.get("create_time"))))
    return _Queue(len(running), len(pending), frozenset(i.prompt_id for i in items), tuple(items))


@dataclass(frozen=True)
class _Finished:
    """One finished prompt: its execution time (None when its timestamps
    are missing or run backwards) and outcome (None when unknown), and what
    its job row needs: the start and end timestamps (epoch ms), the
    enqueue time when the build keeps one, the error's class name, the
    frontend's workflow id, and the prompt graph when the read carried it
    (``/history``; None from the ``/api/jobs`` list)."""

    prompt_id: str
    duration_ms: float | None
    outcome: str | None
    start_ms: float | None = None
    end_ms: float | None = None
    created_ms: float | None = None
    error: str | None = None
    workflow_id: str | None = None
    graph: dict[str, Any] | None = None


def _finished(
    prompt_id: str,
    start: Any,
    end: Any,
    outcome: str | None,
    where: str,
    *,
    created: Any = None,
    error: str | None = None,
    workflow_id: str | None = None,
    graph: Any = None,
) -> _Finished:
    s = number(start, f"{where} start timestamp", high=float("inf"))
    e = number(end, f"{where} end timestamp", high=float("inf"))
    duration = e - s if s is not None and e is not None and e >= s else None
    if duration is not None and duration > MAX_DURATION_MS:
        raise ValueError(f"{where}: end - start = {duration:g} ms: expected at most {MAX_DURATION_MS:g} ms")
    return _Finished(
        prompt_id, duration, outcome, s, e, _epoch_ms(created), error, workflow_id,
        graph if isinstance(graph, dict) else None,
    )


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
            created=job.get("create_time"),
            error=_exception_type(job.get("execution_error")),
            workflow_id=_label(job.get("workflow_id")),
        )
        for job in jobs
        if isinstance(job, dict) and isinstance(job.get("id"), str)
    ], total)


def _parse_job_graph(data: Any) -> dict[str, Any] | None:
    """The prompt graph of an ``/api/jobs/{id}`` reply (``workflow.prompt``;
    None when it has none)."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    workflow = data.get("workflow")
    graph = workflow.get("prompt") if isinstance(workflow, dict) else None
    return graph if isinstance(graph, dict) else None


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
        error: str | None = None
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
                error = _exception_type(msg[1]) if msg[0] == "execution_error" else None
        # "prompt" is [number, prompt_id, graph, extra_data, outputs]; the
        # graph is only referenced here, and labelled only if the prompt
        # becomes a job.
        prompt = entry.get("prompt") if isinstance(entry, dict) else None
        graph = prompt[2] if isinstance(prompt, list) and len(prompt) > 2 else None
        extra = prompt[3] if isinstance(prompt, list) and len(prompt) > 3 and isinstance(prompt[3], dict) else {}
        out.append(_finished(
            prompt_id, start, end, outcome, f"prompt {prompt_id!r}",
            created=extra.get("create_time"), error=error, workflow_id=_workflow_id(extra), graph=graph,
        ))
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
        #: Monotonic time of the last ``/system_stats`` read, and whether
        #: the queue was empty at the last report (memory is then read at
        #: most every IDLE_RESOURCES_EVERY_S).
        self._resources_at = float("-inf")
        self._idle = False
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
        #: True until the first read of finished prompts answered: what it
        #: finds had finished before this collector started, so is no job.
        self._before_start = True
        #: When each prompt of the last ``/queue`` read was first seen
        #: (epoch s), and the queue last reported as jobs.
        self._queue_seen: dict[str, float] = {}
        self._reported_queue: _Queue | None = None

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
        self._idle = remaining == 0
        if before is not None and remaining < before:
            self._due_finished += before - remaining
        queue: _Queue
        if remaining == 0:
            queue = _IDLE
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
        if queue is not self._reported_queue:
            self._report_queue(queue)

    def lost(self) -> None:
        super().lost()
        self._reported_queue = None  # report again once it answers
        self._resources_at = float("-inf")  # and read its memory at once

    def _report_queue(self, queue: _Queue) -> None:
        """Hands the prompts of ``queue`` to :meth:`report_queue` as queued
        jobs (nothing is built when nobody listens)."""
        self._reported_queue = queue
        now = time.time()
        seen = {item.prompt_id: self._queue_seen.get(item.prompt_id, now) for item in queue.items}
        self._queue_seen = seen
        if self.on_queue is None:
            return
        self.report_queue([
            QueuedJob(
                service=self.config.name,
                job_id=item.prompt_id,
                state=item.state,
                model=item.labels.model,
                workflow=item.labels.workflow,
                submitted_at=None if item.created_ms is None else item.created_ms / 1000.0,
                seen_at=seen[item.prompt_id],
            )
            for item in queue.items
        ])

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
        before_start, self._before_start = self._before_start, False
        failure: ProbeError | None = None
        for prompt in reversed(fresh):  # record oldest first
            if not self._record_finished(prompt) or before_start:
                continue
            try:
                self._report_finished(prompt)
            except ProbeError as e:  # the others are still reported
                failure = failure or e
        if failure is not None:
            raise failure

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

    def _record_finished(self, prompt: _Finished) -> bool:
        """Records one finished prompt's execution time, once per id; True
        when it was recorded now.

        A prompt appears in history (and as a finished job) only once it
        has finished, and its entry never changes after that, so an entry
        without usable timestamps is marked seen too: it never gets them.
        """
        if prompt.prompt_id in self._seen:
            return False
        self._seen[prompt.prompt_id] = None
        if len(self._seen) > SEEN_IDS_MAX:
            self._seen.popitem(last=False)
        if prompt.duration_ms is None or prompt.outcome is None:
            return False
        self.service.record_processing(prompt.duration_ms)
        self.executions[prompt.outcome] += 1
        return True

    def _report_finished(self, prompt: _Finished) -> None:
        """Hands a newly recorded prompt to ``report_job`` as a job row.

        On ``/api/jobs`` builds the graph is read from ``/api/jobs/{id}``
        first (nothing is read when nobody listens).  When that read fails,
        the job is still reported, without its model, and the failure is
        raised after (the read is recorded as a failed request)."""
        if self.on_job is None:
            return
        graph, failure = prompt.graph, None
        if graph is None and self._jobs:
            try:
                graph, _ = self.fetch(f"/api/jobs/{quote(prompt.prompt_id, safe='')}", parse=_parse_job_graph, absent=(404,))
            except ProbeError as e:
                failure = e
        row = self._job_row(prompt, graph)
        if row is not None:
            self.report_job(row)
        if failure is not None:
            raise failure

    def _job_row(self, prompt: _Finished, graph: dict[str, Any] | None) -> JobRow | None:
        """The job row of a finished prompt (None without its timestamps)."""
        start, end = prompt.start_ms, prompt.end_ms
        if start is None or end is None or prompt.duration_ms is None or prompt.outcome is None:
            return None
        labels = _labels(graph, prompt.workflow_id)
        # A create_time after the start is not this prompt's enqueue time
        # (another clock set it): the wait is then unknown.
        created = prompt.created_ms if prompt.created_ms is not None and prompt.created_ms <= start else None
        ok = prompt.outcome == "success"
        error = None if ok else "interrupted" if prompt.outcome == "interrupted" else prompt.error or "execution_error"
        return JobRow(
            service=self.config.name,
            model=labels.model,
            workflow=labels.workflow,
            job_id=prompt.prompt_id,
            tags=labels.tags,
            source="backend",
            submitted_at=(start if created is None else created) / 1000.0,
            started_at=start / 1000.0,
            finished_at=end / 1000.0,
            queue_wait_ms=None if created is None else start - created,
            processing_ms=prompt.duration_ms,
            ok=ok,
            error=error,
        )

    def _collect_resources(self) -> None:
        now = time.monotonic()
        if self._idle and now - self._resources_at < IDLE_RESOURCES_EVERY_S:
            return
        self._resources_at = now
        stats, _ = self.fetch(f"{self._p}/system_stats", parse=lambda data: (_version(data), _parse_system_stats(data)))
        version, gauges = stats
        self.version = version or self.version
        if gauges:
            self.service.set_resource(**gauges)
