"""Demo backends on loopback: a ComfyUI-shaped server and an
OpenAI-compatible (llama.cpp-flavoured) one, for ``watch --demo``, tests
and trying the collectors without a GPU.

They are real HTTP servers (``ThreadingHTTPServer`` on 127.0.0.1, free
ports, daemon threads) speaking the shapes of the real servers: payloads
are modelled on recorded ComfyUI 0.3.64 responses and on the llama.cpp
server's ``/metrics``.  What a collector sees is therefore what it would
see from the real thing, only with knobs:

* ``latency_ms``: every reply is delayed by a lognormal draw around it
  (sigma 0.5, capped at 8x, so read timeouts stay rare);
* ``error_rate``: that fraction of requests answers HTTP 500, or 503
  "busy" one time in three (liveness routes excepted: a backend is down
  only in a down period), and that fraction of ComfyUI prompts ends in
  ``execution_error``;
* ``queue``: the most prompts/requests waiting; the queue moves as a
  random walk between 0 and that as jobs arrive and finish;
* ``flap``: the servers go down for ``flap_down_s`` every
  ``flap_period_s`` (connections are accepted and closed without an
  answer, which a client sees as a reset connection);
  ``sim.comfyui.down = True`` does the same by hand.

Time in the simulation is real time: the job queue is advanced lazily to
"now" whenever a request arrives, so no thread runs between requests and
nothing drifts while nobody is looking.
"""

from __future__ import annotations

import json
import math
import random
import socket
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from .collectors.config import BackendConfig

__all__ = ["ComfyUISim", "LLMSim", "Simulator"]

#: Highest delay, as a multiple of ``latency_ms``.
_LATENCY_CAP = 8.0
#: Finished prompts kept in ``/history`` (ComfyUI keeps 10000).
_HISTORY_MAX = 200
#: Prompts already in ``/history`` when the server starts.
_HISTORY_AT_START = 5
_GIB = 1024**3


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"


def _json(status: int, payload: Any) -> _Reply:
    return _Reply(status, json.dumps(payload).encode())


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], backend: _Backend) -> None:
        self.backend = backend
        #: Connections being served: clients keep them open between
        #: requests, and a server that stops closes them (see close_all).
        self.open: set[socket.socket] = set()
        self.open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def close_all(self) -> None:
        """Closes every connection still open, as a server process that
        exits does (``shutdown`` stops only the accept loop)."""
        with self.open_lock:
            conns, self.open = list(self.open), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    #: Buffered: a reply's headers and body leave in one write (flushed
    #: after each request), as a real ComfyUI (aiohttp) sends them.  With
    #: http.server's default (unbuffered) they left in two segments, and
    #: the client woke twice per request: against the real ComfyUI 0.3.64
    #: our client reads 1.00 segment per reply, against the unbuffered
    #: simulator 1.9-2.0, at 2.5-3x the CPU (measured 2026-12-07).
    wbufsize = 64 * 1024

    def setup(self) -> None:
        super().setup()
        with self.server.open_lock:
            self.server.open.add(self.connection)

    def finish(self) -> None:
        with self.server.open_lock:
            self.server.open.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:
        self.server.backend._serve(self, "GET")

    def do_POST(self) -> None:
        self.server.backend._serve(self, "POST")

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Backend:
    """One simulated server: the HTTP plumbing, latency, errors and down
    periods.  Subclasses implement ``route``."""

    name: str = "backend"
    #: Paths the collectors probe for liveness (exempt from ``error_rate``).
    liveness: frozenset[str] = frozenset()

    def __init__(
        self,
        *,
        latency_ms: float,
        error_rate: float,
        queue: int,
        flap: bool,
        flap_period_s: float,
        flap_down_s: float,
        rng: random.Random,
        host: str = "127.0.0.1",
    ) -> None:
        self.latency_ms = latency_ms
        self.error_rate = error_rate
        self.queue = queue
        self.flap = flap
        self.flap_period_s = flap_period_s
        self.flap_down_s = flap_down_s
        #: Set to True to drop every connection (a backend that went away).
        self.down = False
        self.rng = rng
        self.lock = threading.Lock()
        self.started = time.time()
        #: Requests answered, by path (without the query).
        self.hits: dict[str, int] = {}
        self._server = _Server((host, 0), self)
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"sim-{self.name}-{self.port}",
            daemon=True,
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def is_down(self, now: float) -> bool:
        """Down by hand, or inside a flap period's down part (the first
        ``flap_period_s - flap_down_s`` seconds of each period are up)."""
        if self.down:
            return True
        if not self.flap:
            return False
        phase = (now - self.started) % self.flap_period_s
        return phase >= self.flap_period_s - self.flap_down_s

    def delay_s(self, scale: float = 1.0) -> float:
        if self.latency_ms <= 0:
            return 0.0
        with self.lock:
            draw = self.rng.lognormvariate(math.log(self.latency_ms * scale), 0.5)
        return min(draw, self.latency_ms * scale * _LATENCY_CAP) / 1e3

    def injected_error(self) -> _Reply | None:
        with self.lock:
            if self.rng.random() >= self.error_rate:
                return None
            busy = self.rng.random() < 1 / 3
        if busy:
            return _json(503, {"error": {"code": 503, "message": "server busy, please try again", "type": "unavailable_error"}})
        return _json(500, {"error": {"code": 500, "message": "simulated internal error", "type": "server_error"}})

    def route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> _Reply:
        raise NotImplementedError

    def _serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        now = time.time()
        if self.is_down(now):
            handler.close_connection = True
            try:
                handler.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self.lock:
            self.hits[parts.path] = self.hits.get(parts.path, 0) + 1
        # Liveness routes never fail at random: a backend is down only when
        # it is (flap / down), and error_rate shows as failed requests.
        reply = None if parts.path in self.liveness else self.injected_error()
        if reply is None:
            try:
                reply = self.route(method, parts.path, parse_qs(parts.query), body)
            except Exception as e:  # a simulator bug must still answer
                reply = _json(500, {"error": {"message": f"{type(e).__name__}: {e}"}})
        scale = 4.0 if parts.path.endswith("/chat/completions") else 1.0
        time.sleep(self.delay_s(scale))
        try:
            handler.send_response(reply.status)
            handler.send_header("Content-Type", reply.content_type)
            handler.send_header("Content-Length", str(len(reply.body)))
            handler.end_headers()
            handler.wfile.write(reply.body)
        except OSError:
            pass  # the client gave up (its read timeout); nothing to do

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._server.close_all()
        self._thread.join(timeout=2.0)


# --- ComfyUI -----------------------------------------------------------------

#: The workflow every simulated prompt runs (as in the recorded fixtures:
#: no model files needed).
_WORKFLOW: dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1, "color": 0}},
    "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 20, "sigma": 5.0}},
    "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
}


@dataclass
class _Prompt:
    number: int
    prompt_id: str
    created_ms: int
    duration_s: float
    fails: bool
    started_at: float | None = None
    prompt: dict[str, Any] = field(default_factory=lambda: _WORKFLOW)

    def item(self) -> list[Any]:
        """The positional queue item ComfyUI returns."""
        extra = {"client_id": "sim", "create_time": self.created_ms}
        return [self.number, self.prompt_id, self.prompt, extra, ["3"]]


class ComfyUISim(_Backend):
    """ComfyUI: ``/prompt``, ``/queue``, ``/history``, ``/system_stats``,
    ``/features`` (each also under ``/api``).  Prompts arrive at random,
    run one at a time for a lognormal ``job_s`` and land in history with
    ``execution_start`` and ``execution_success`` (or ``execution_error``)
    timestamps in epoch ms."""

    name = "comfyui"
    liveness = frozenset({"/prompt", "/api/prompt"})

    def __init__(self, *, job_s: float, **kw: Any) -> None:
        super().__init__(**kw)
        self.job_s = job_s
        self._number = 0
        self._running: _Prompt | None = None
        self._pending: list[_Prompt] = []
        self.history: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._clock = self.started
        self._next_arrival = self.started
        # A server that has been running: a few prompts finished just
        # before start (so history has entries at once), then busy: one
        # running, half the queue waiting.
        done = [self._enqueue(self.started) for _ in range(_HISTORY_AT_START)]
        self._pending.clear()
        t = self.started - sum(p.duration_s for p in done)
        for p in done:
            p.created_ms, p.started_at = int(t * 1e3), t
            t += p.duration_s
            self._finish(p, t)
        for _ in range(1 + self.queue // 2):
            self._enqueue(self.started)
        self._start_next(self.started)

    # ---- the queue model (callers hold self.lock) ------------------------

    def _enqueue(self, at: float, prompt: dict[str, Any] | None = None) -> _Prompt:
        self._number += 1
        p = _Prompt(
            number=self._number,
            prompt_id=str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            created_ms=int(at * 1e3),
            duration_s=min(self.rng.lognormvariate(math.log(self.job_s), 0.35), self.job_s * 4),
            fails=self.rng.random() < self.error_rate,
        )
        if prompt is not None:
            p.prompt = prompt
        self._pending.append(p)
        return p

    def _start_next(self, at: float) -> None:
        if self._running is None and self._pending:
            self._running = self._pending.pop(0)
            self._running.started_at = at

    def _finish(self, p: _Prompt, at: float) -> None:
        assert p.started_at is not None
        start_ms, end_ms = int(p.started_at * 1e3), int(at * 1e3)
        messages: list[list[Any]] = [
            ["execution_start", {"prompt_id": p.prompt_id, "timestamp": start_ms}],
            ["execution_cached", {"nodes": [], "prompt_id": p.prompt_id, "timestamp": start_ms + 1}],
        ]
        if p.fails:
            messages.append([
                "execution_error",
                {
                    "prompt_id": p.prompt_id, "node_id": "2", "node_type": "ImageBlur", "executed": ["1"],
                    "exception_message": "CUDA out of memory. Tried to allocate 2.00 GiB",
                    "exception_type": "torch.OutOfMemoryError", "traceback": [],
                    "current_inputs": {}, "current_outputs": {}, "timestamp": end_ms,
                },
            ])
            outputs: dict[str, Any] = {}
        else:
            messages.append(["execution_success", {"prompt_id": p.prompt_id, "timestamp": end_ms}])
            outputs = {"3": {"images": [{"filename": f"ComfyUI_temp_{p.number:05d}_.png", "subfolder": "", "type": "temp"}]}}
        self.history[p.prompt_id] = {
            "prompt": p.item(),
            "outputs": outputs,
            "status": {"status_str": "error" if p.fails else "success", "completed": not p.fails, "messages": messages},
            "meta": {"3": {"node_id": "3", "display_node": "3", "parent_node": None, "real_node_id": "3"}},
        }
        while len(self.history) > _HISTORY_MAX:
            self.history.popitem(last=False)

    def _advance(self, now: float) -> None:
        """Plays arrivals and completions up to ``now`` in time order.
        Arrivals come at the service rate (a random walk), dropped when
        ``queue`` prompts already wait; with ``queue=0`` one arrives
        whenever the server is idle."""
        rate = 1.0 / self.job_s
        while True:
            end = math.inf
            if self._running is not None and self._running.started_at is not None:
                end = self._running.started_at + self._running.duration_s
            t = min(end, self._next_arrival)
            if t > now:
                break
            if t == end:
                assert self._running is not None
                self._finish(self._running, t)
                self._running = None
                if not self._pending and self.queue == 0:
                    self._enqueue(t)
                self._start_next(t)
            else:
                if len(self._pending) < self.queue:
                    self._enqueue(t)
                self._start_next(t)
                self._next_arrival = t + self.rng.expovariate(rate)
        self._clock = now

    def counts(self) -> tuple[int, int]:
        """(running, pending) right now."""
        with self.lock:
            self._advance(time.time())
            return (1 if self._running else 0), len(self._pending)

    # ---- routes --------------------------------------------------------------

    def route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> _Reply:
        if path.startswith("/api/"):
            path = path[4:]
        now = time.time()
        with self.lock:
            self._advance(now)
            if path == "/prompt" and method == "GET":
                remaining = (1 if self._running else 0) + len(self._pending)
                return _json(200, {"exec_info": {"queue_remaining": remaining}})
            if path == "/prompt" and method == "POST":
                if not isinstance(body, dict) or "prompt" not in body:
                    return _json(400, {
                        "error": {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided", "extra_info": {}},
                        "node_errors": {},
                    })
                p = self._enqueue(now, body["prompt"] if isinstance(body["prompt"], dict) else None)
                self._start_next(now)
                return _json(200, {"prompt_id": p.prompt_id, "number": p.number, "node_errors": {}})
            if path == "/queue" and method == "GET":
                return _json(200, {
                    "queue_running": [self._running.item()] if self._running else [],
                    "queue_pending": [p.item() for p in self._pending],
                })
            if path == "/history" and method == "GET":
                return _json(200, self._history(query))
            if path.startswith("/history/") and method == "GET":
                pid = path.split("/", 2)[2]
                return _json(200, {pid: self.history[pid]} if pid in self.history else {})
            if path == "/system_stats" and method == "GET":
                return _json(200, self._system_stats())
            if path == "/features" and method == "GET":
                return _json(200, {"supports_preview_metadata": True, "max_upload_size": 104857600})
        return _json(404, {"error": "not found"})

    def _history(self, query: dict[str, list[str]]) -> dict[str, Any]:
        """``?max_items=N&offset=K`` as ComfyUI pages: by default the newest
        N, oldest first."""
        items = list(self.history.items())
        try:
            max_items = int(query["max_items"][0]) if "max_items" in query else None
            offset = int(query["offset"][0]) if "offset" in query else -1
        except ValueError:
            max_items, offset = None, -1
        if max_items is None:
            return dict(items)
        if offset < 0:
            offset = max(len(items) - max_items, 0)
        return dict(items[offset : offset + max_items])

    def _system_stats(self) -> dict[str, Any]:
        total = 24 * _GIB
        # A loaded model plus a working set while a prompt runs.
        used = 7.2 * _GIB + (5.5 * _GIB if self._running else 0.0) + self.rng.uniform(-0.2, 0.2) * _GIB
        ram_total = 64 * _GIB
        return {
            "system": {
                "os": "linux",
                "ram_total": ram_total,
                "ram_free": int(ram_total - 21 * _GIB - self.rng.uniform(0, 1) * _GIB),
                "comfyui_version": "0.3.64",
                "required_frontend_version": "1.27.10",
                "python_version": "3.11.7 (simulated)",
                "pytorch_version": "2.5.1+cu124",
                "embedded_python": False,
                "argv": ["main.py", "--listen", self.host, "--port", str(self.port)],
            },
            "devices": [{
                "name": "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync",
                "type": "cuda",
                "index": 0,
                "vram_total": total,
                "vram_free": int(total - used),
                "torch_vram_total": int(used + 1.1 * _GIB),
                "torch_vram_free": int(1.1 * _GIB),
            }],
        }


# --- OpenAI-compatible (llama.cpp server) ------------------------------------

_MODEL = "demo-llama-3.1-8b-instruct-q4_k_m"
_SLOTS = 2


class LLMSim(_Backend):
    """An OpenAI-compatible server with llama.cpp's extras: ``/v1/models``,
    ``/health``, ``/props``, ``/metrics`` (``llamacpp:*``, with
    ``requests_processing`` and ``requests_deferred`` as the queue) and
    non-streaming ``POST /v1/chat/completions`` answering ``usage`` and
    ``timings``."""

    name = "llm"
    liveness = frozenset({"/health", "/v1/health", "/v1/models", "/models"})

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.prompt_tokens = 0
        self.predicted_tokens = 0
        self.prompt_seconds = 0.0
        self.predicted_seconds = 0.0
        self.decodes = 0
        self._processing = 1
        self._deferred = min(self.queue, 1)
        self._last_step = self.started

    def _advance(self, now: float) -> None:
        """Every half second the load moves one step: busy slots and the
        deferred queue random-walk within [0, slots] and [0, queue];
        token counters grow with the busy slots."""
        while self._last_step + 0.5 <= now:
            self._last_step += 0.5
            self._processing = max(0, min(_SLOTS, self._processing + self.rng.choice((-1, 0, 1))))
            if self._processing < _SLOTS:
                self._deferred = 0 if self.queue == 0 else max(0, self._deferred - 1)
            else:
                self._deferred = max(0, min(self.queue, self._deferred + self.rng.choice((-1, 0, 1, 1))))
            n = self._processing * self.rng.randint(15, 25)
            self.predicted_tokens += n
            self.predicted_seconds += 0.5 * self._processing
            self.prompt_tokens += self._processing * self.rng.randint(20, 80)
            self.prompt_seconds += 0.02 * self._processing
            self.decodes += n

    def counts(self) -> tuple[int, int]:
        """(requests processing, requests deferred) right now."""
        with self.lock:
            self._advance(time.time())
            return self._processing, self._deferred

    def route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> _Reply:
        now = time.time()
        with self.lock:
            self._advance(now)
            if path in ("/health", "/v1/health") and method == "GET":
                return _json(200, {"status": "ok"})
            if path in ("/v1/models", "/models") and method == "GET":
                return _json(200, {
                    "object": "list",
                    "data": [{"id": _MODEL, "object": "model", "created": int(self.started), "owned_by": "llamacpp",
                              "meta": {"n_ctx_train": 131072, "n_params": 8030261248, "size": 4920734720}}],
                })
            if path == "/props" and method == "GET":
                return _json(200, {"total_slots": _SLOTS, "model_path": f"/models/{_MODEL}.gguf",
                                   "build_info": "b4500-simulated", "is_sleeping": False})
            if path == "/metrics" and method == "GET":
                return _Reply(200, self._metrics().encode(), "text/plain; version=0.0.4")
            if path in ("/v1/chat/completions", "/chat/completions") and method == "POST":
                return self._chat(body)
        return _json(404, {"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}})

    def _chat(self, body: Any) -> _Reply:
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _json(400, {"error": {"code": 400, "message": "'messages' is required", "type": "invalid_request_error"}})
        if body.get("stream"):
            return _json(400, {"error": {"code": 400, "message": "the simulator does not stream", "type": "invalid_request_error"}})
        text = " ".join(str(m.get("content", "")) for m in body["messages"] if isinstance(m, dict))
        prompt_n = max(1, len(text.split()) * 4 // 3)
        predicted_n = self.rng.randint(16, 64)
        prompt_ms, predicted_ms = prompt_n * 0.4, predicted_n * 18.0
        self.prompt_tokens += prompt_n
        self.predicted_tokens += predicted_n
        self.prompt_seconds += prompt_ms / 1e3
        self.predicted_seconds += predicted_ms / 1e3
        return _json(200, {
            "id": f"chatcmpl-{uuid.UUID(int=self.rng.getrandbits(128), version=4).hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or _MODEL,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "A slow dolly-in on the lighthouse at dusk."}}],
            "usage": {"prompt_tokens": prompt_n, "completion_tokens": predicted_n, "total_tokens": prompt_n + predicted_n},
            "timings": {
                "prompt_n": prompt_n, "prompt_ms": prompt_ms, "prompt_per_token_ms": 0.4,
                "prompt_per_second": 2500.0, "predicted_n": predicted_n, "predicted_ms": predicted_ms,
                "predicted_per_token_ms": 18.0, "predicted_per_second": 1e3 / 18.0,
            },
        })

    def _metrics(self) -> str:
        def family(name: str, kind: str, help_: str, value: float) -> str:
            return f"# HELP llamacpp:{name} {help_}\n# TYPE llamacpp:{name} {kind}\nllamacpp:{name} {value:g}\n"

        pred_rate = self.predicted_tokens / self.predicted_seconds if self.predicted_seconds else 0.0
        prompt_rate = self.prompt_tokens / self.prompt_seconds if self.prompt_seconds else 0.0
        return "".join([
            family("prompt_tokens_total", "counter", "Number of prompt tokens processed.", self.prompt_tokens),
            family("prompt_seconds_total", "counter", "Prompt process time", round(self.prompt_seconds, 3)),
            family("tokens_predicted_total", "counter", "Number of generation tokens processed.", self.predicted_tokens),
            family("tokens_predicted_seconds_total", "counter", "Predict process time", round(self.predicted_seconds, 3)),
            family("n_decode_total", "counter", "Total number of llama_decode() calls", self.decodes),
            family("n_busy_slots_per_decode", "counter", "Average number of busy slots per llama_decode() call",
                   round(max(self._processing, 1) * 0.9, 3)),
            family("prompt_tokens_seconds", "gauge", "Average prompt throughput in tokens/s.", round(prompt_rate, 2)),
            family("predicted_tokens_seconds", "gauge", "Average generation throughput in tokens/s.", round(pred_rate, 2)),
            family("requests_processing", "gauge", "Number of requests processing.", self._processing),
            family("requests_deferred", "gauge", "Number of requests deferred.", self._deferred),
        ])


# --- both ----------------------------------------------------------------------


class Simulator:
    """Both demo backends, started at construction; ``close()`` (or leaving
    ``with``) stops them.  ``configs()`` gives the collectors' view:
    ``comfyui-demo`` (kind ``comfyui``) and ``llm-demo`` (kind ``openai``).

    ``seed`` makes the draws (latencies, errors, queue moves) repeatable;
    the timing of requests still comes from the caller.
    """

    def __init__(
        self,
        *,
        latency_ms: float = 40.0,
        error_rate: float = 0.02,
        queue: int = 4,
        job_s: float = 1.5,
        flap: bool = False,
        flap_period_s: float = 30.0,
        flap_down_s: float = 6.0,
        seed: int | None = None,
    ) -> None:
        if not (isinstance(latency_ms, (int, float)) and 0 <= latency_ms <= 60_000):
            raise ValueError(f"latency_ms={latency_ms!r} is out of range: expected 0 to 60000 ms")
        if not (isinstance(error_rate, (int, float)) and 0 <= error_rate <= 1):
            raise ValueError(f"error_rate={error_rate!r} is out of range: expected 0 to 1")
        if not (isinstance(queue, int) and 0 <= queue <= 1000):
            raise ValueError(f"queue={queue!r} is out of range: expected an int from 0 to 1000")
        if not (isinstance(job_s, (int, float)) and 0.05 <= job_s <= 3600):
            raise ValueError(f"job_s={job_s!r} is out of range: expected 0.05 to 3600 seconds")
        if not (0 < flap_down_s < flap_period_s):
            raise ValueError(
                f"flap_down_s={flap_down_s!r} must be above 0 and below flap_period_s={flap_period_s!r}"
            )
        rng = random.Random(seed)
        common: dict[str, Any] = dict(
            latency_ms=float(latency_ms), error_rate=float(error_rate), queue=queue, flap=flap,
            flap_period_s=float(flap_period_s), flap_down_s=float(flap_down_s),
        )
        self.comfyui = ComfyUISim(job_s=float(job_s), rng=random.Random(rng.getrandbits(64)), **common)
        try:
            self.llm = LLMSim(rng=random.Random(rng.getrandbits(64)), **common)
        except BaseException:
            self.comfyui.close()
            raise
        self._closed = False

    @property
    def backends(self) -> tuple[ComfyUISim, LLMSim]:
        return self.comfyui, self.llm

    def configs(self, interval_s: float = 1.0) -> list[BackendConfig]:
        """The two backends as the collectors take them."""
        return [
            BackendConfig("comfyui-demo", "comfyui", self.comfyui.url, interval_s=interval_s),
            BackendConfig("llm-demo", "openai", self.llm.url, interval_s=interval_s),
        ]

    def set_down(self, down: bool) -> None:
        """Takes both servers down (or brings them back) by hand."""
        for b in self.backends:
            b.down = down

    def close(self) -> None:
        """Stops both servers and frees their ports (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for b in self.backends:
            b.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Simulator(comfyui={self.comfyui.url}, llm={self.llm.url}{', closed' if self._closed else ''})"
