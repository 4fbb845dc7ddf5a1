"""OpenAI-compatible servers: LM Studio, vLLM, llama.cpp's llama-server,
and hosted APIs (OpenAI and the many that copy its surface).

Endpoints (reference §2.4):

- ``GET /v1/models`` -> ``{"object": "list", "data": [{id, ...}]}``: the
  liveness probe everywhere but llama.cpp.  On a hosted API each probe is a
  real request to the provider (rate-limited, maybe counted): the backend's
  ``interval_s`` is what limits its cost, so give hosted APIs a long one.
  Detection notes once whether the host is this machine (``loopback``).
- ``GET /metrics`` (Prometheus text), tried once at detection:
  vLLM ``vllm:num_requests_running``/``vllm:num_requests_waiting`` and
  ``vllm:kv_cache_usage_perc`` (older builds ``vllm:gpu_cache_usage_perc``;
  1 = 100 %); llama.cpp (``--metrics``) ``llamacpp:requests_processing``/
  ``llamacpp:requests_deferred``.
- llama.cpp ``GET /health``: 200 ``{"status": "ok"}``, 503 "Loading model"
  while the model loads (every endpoint answers so then: not up, cause
  ``model_loading``; the flavour and what detection found are kept); needs
  no API key.  ``GET /props`` -> ``build_info`` (the version),
  ``total_slots``, ``is_sleeping``.

llama.cpp, measured against a real llama-server (docs/backends.md):

- **Sleeping** (``--sleep-idle-seconds N``): ``/props`` says
  ``is_sleeping: true`` and the model is unloaded; the next request reloads
  it.  Shown as ``detail["sleeping"]`` with no loaded models.  Only
  endpoints that leave it asleep are polled (``/health``, ``/props``,
  ``/v1/models``, ``/metrics``): never ``GET /slots``, which wakes it.
- **Each ``GET /metrics`` resets** the rate gauges
  ``llamacpp:prompt_tokens_seconds``/``predicted_tokens_seconds`` for every
  scraper (they average since the previous scrape).  It is still the only
  queue source that does not wake a sleeping server, so it is scraped at
  most every :data:`LLAMACPP_METRICS_EVERY_S`, and the token rates shown
  come from the counters' deltas between two of our scrapes
  (``tokens_predicted_total / tokens_predicted_seconds_total``), never
  from the gauges.
- vLLM ``GET /version`` -> ``{"version"}``.
- LM Studio ``GET /api/v0/models`` -> ``state`` "loaded"/"not-loaded".

The URL is the server root (``https://api.openai.com``, not ``.../v1``).
The API key comes from the environment variable ``api_key_env`` names and
is sent as ``Authorization: Bearer``; it is never put in a message, a
status or a repr (auth failures name the variable, not its value).

Cannot report: processing time (no job history; time our own calls with
``track()``); memory, GPU utilisation, temperature, power (no such
endpoint; vLLM's KV-cache use is shown as a detail; for a local server use
:class:`~.resources.LocalResources`); queue depth on LM Studio (only the
``lms ps --json`` CLI shows it), on llama.cpp without ``--metrics`` and on
hosted APIs.
"""

from __future__ import annotations

import json
import math
import re
import time
from typing import Any, ClassVar

from .._core import Service
from ..net import is_loopback
from .base import Backend, Capabilities
from .config import BackendConfig
from .http import HttpClient, ProbeError, Response
from .readings import count

MODELS = "/v1/models"
METRICS = "/metrics"
LLAMACPP_HEALTH = "/health"
LLAMACPP_PROPS = "/props"
VLLM_VERSION = "/version"
LMSTUDIO_MODELS = "/api/v0/models"

#: Shortest time between two ``GET /metrics`` of a llama-server (a
#: backend with a longer ``interval_s`` scrapes every cycle).  Every scrape resets the
#: server's rate gauges for all its scrapers; the queue it gives is a
#: count of requests that each last seconds, so a reading up to 5 s old
#: is what the queue view and the ETAs need, and a Prometheus scraping
#: the same server at 15 s sees its gauges reset at most 3 times per
#: window instead of 15.
LLAMACPP_METRICS_EVERY_S = 5.0

#: llama.cpp: seconds between ``/props`` reads (whether it sleeps): a
#: request a second for a state that changes after minutes of idling is
#: most of what a llama.cpp backend costs the host.
LLAMACPP_PROPS_EVERY_S = 5.0

#: llama.cpp counter pairs (tokens, seconds) the shown rates come from.
_LLAMACPP_RATES: tuple[tuple[str, str, str], ...] = (
    ("generation_tokens_per_s", "llamacpp:tokens_predicted_total", "llamacpp:tokens_predicted_seconds_total"),
    ("prompt_tokens_per_s", "llamacpp:prompt_tokens_total", "llamacpp:prompt_seconds_total"),
)

SLEEPING_DETAIL = (
    "model unloaded (llama-server --sleep-idle-seconds); the next request reloads it "
    "(we poll nothing that wakes it: never GET /slots)"
)

#: Flavours this kind recognises; "openai" is any other compatible server.
FLAVORS: tuple[str, ...] = ("vllm", "llama.cpp", "lmstudio", "openai")

PROCESSING_NA = "OpenAI-compatible servers keep no job history to poll; processing time comes from our own calls (track())"


class OpenAICompatible(Backend):
    """An OpenAI-compatible server; :meth:`detect` finds out which one.

    ``flavor`` is one of :data:`FLAVORS`; ``loopback`` says whether the host
    is this machine; ``models`` lists the served (LM Studio: loaded) model
    ids, none while a llama-server sleeps; ``detail`` holds the KV-cache use
    (vLLM), not-loaded models (LM Studio), ``sleeping`` and the token rates
    from the counters (llama.cpp) and the host note; ``version`` the server
    version where one is reported (vLLM, llama.cpp build).
    ``sleeping`` is True while a llama-server says ``is_sleeping``.
    """

    kind = "openai"
    default_port = None
    #: 404 and 501 are the server's answer "not here" (llama-server
    #: without ``--metrics`` says 501).
    absent_statuses: ClassVar[tuple[int, ...]] = (404, 501)

    def __init__(self, config: BackendConfig, service: Service, client: HttpClient | None = None) -> None:
        super().__init__(config, service, client)
        self.flavor = "openai"
        self.loopback = is_loopback(self.client.host)
        self.models: list[str] = []
        self.detail: dict[str, str] = {}
        self.sleeping = False
        self._metrics_queue = False
        #: llama.cpp: ``/props`` has ``is_sleeping`` (read at most every
        #: LLAMACPP_PROPS_EVERY_S; ``_props_at``: monotonic time of the last).
        self._props = False
        self._props_at = float("-inf")
        #: llama.cpp: the ids ``/v1/models`` served at detection (``models``
        #: is these while awake, empty while asleep).
        self._served: list[str] = []
        #: llama.cpp: monotonic time of the last ``/metrics`` scrape, its
        #: counters, and the details derived from them (kept between scrapes).
        self._metrics_at = float("-inf")
        #: llama.cpp: shortest time between two ``/metrics`` scrapes.
        self.metrics_every_s = LLAMACPP_METRICS_EVERY_S
        self._counters: dict[str, float] = {}
        self._metrics_detail: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"OpenAICompatible(name={self.config.name!r}, url={self.config.url!r}, flavor={self.flavor!r})"

    # ---- probe ---------------------------------------------------------------

    def probe(self) -> float:
        if self.flavor == "llama.cpp":
            _, latency_ms = self.fetch(LLAMACPP_HEALTH)
            return latency_ms
        ids, latency_ms = self.fetch(MODELS, parse=_parse_model_ids)
        if self.flavor != "lmstudio":  # LM Studio: /api/v0/models says which are loaded
            self.models = ids
        return latency_ms

    # ---- detect --------------------------------------------------------------

    def detect(self) -> Capabilities:
        """Finds out which server this is (``flavor``) and what it reports.
        A read that failed for a passing reason (timeout, reset, 5xx, busy)
        is retried: :meth:`collect` detects again (at most every half
        interval)."""
        self.begin_detection()
        self.flavor = "openai"
        caps = self.capabilities
        detail: dict[str, str] = {
            "host": "this machine (loopback)"
            if self.loopback
            else "remote: a hosted API is probed every interval_s; a long interval limits its cost"
        }
        samples, why_metrics = self.try_fetch(METRICS, as_json=False, parse=_parse_metrics)
        lmstudio: list[tuple[str, str]] | None = None
        props: Any = None
        if samples is not None and any(k.startswith("vllm:") for k in samples):
            self.flavor = "vllm"
        elif samples is not None and any(k.startswith("llamacpp:") for k in samples):
            self.flavor = "llama.cpp"
        else:
            if samples is not None:
                why_metrics, samples = "no vllm: or llamacpp: series", None
            lmstudio, _ = self.try_fetch(LMSTUDIO_MODELS, parse=_parse_lmstudio)
            if lmstudio is not None:
                self.flavor = "lmstudio"
            else:
                props, _ = self.try_fetch(LLAMACPP_PROPS)
                if isinstance(props, dict) and ("total_slots" in props or "build_info" in props):
                    self.flavor = "llama.cpp"

        if self.flavor == "llama.cpp":
            caps.set("health", f"GET {LLAMACPP_HEALTH} (503 while the model loads)")
            if props is None:
                props, _ = self.try_fetch(LLAMACPP_PROPS)
            if isinstance(props, dict) and isinstance(props.get("build_info"), str):
                self.version = props["build_info"]
            self._props = isinstance(props, dict) and isinstance(props.get("is_sleeping"), bool)
            self.sleeping = self._props and props.get("is_sleeping") is True
        else:
            caps.set("health", f"GET {MODELS}")
        if self.flavor == "vllm":
            ver, _ = self.try_fetch(VLLM_VERSION)
            if isinstance(ver, dict) and isinstance(ver.get("version"), str):
                self.version = ver["version"]

        self._metrics_queue = samples is not None
        if self.flavor == "vllm":
            caps.set("queue", f"GET {METRICS} (vllm:num_requests_running, vllm:num_requests_waiting)")
        elif self.flavor == "llama.cpp" and samples is not None:
            caps.set(
                "queue",
                f"GET {METRICS} (llamacpp:requests_processing, llamacpp:requests_deferred), at most every "
                f"{self.metrics_every_s:g} s: each scrape resets the server's rate gauges",
            )
        elif self.flavor == "llama.cpp":
            caps.lack("queue", f"GET {METRICS}: {why_metrics}: start llama-server with --metrics")
        elif self.flavor == "lmstudio":
            caps.lack("queue", "LM Studio has no HTTP queue endpoint (only the `lms ps --json` CLI shows queued requests)")
        else:
            caps.lack("queue", f"no Prometheus {METRICS} with a known queue gauge ({why_metrics})")

        caps.lack("processing", PROCESSING_NA)
        resources_na = "OpenAI-compatible APIs report no memory or GPU figures"
        if self.flavor == "vllm":
            resources_na += " (vLLM's KV-cache use is shown as a status detail)"
        if self.loopback:
            resources_na += "; LocalResources reads this machine's GPU and RAM"
        caps.lack("resources", resources_na)

        if lmstudio is not None:
            caps.set("models", f"GET {LMSTUDIO_MODELS} (state: loaded)")
            self._apply_lmstudio(lmstudio, detail)
        elif self.flavor == "llama.cpp":
            caps.set("models", f"GET {MODELS} (at detection); none while GET {LLAMACPP_PROPS} says is_sleeping")
            ids, _ = self.try_fetch(MODELS, parse=_parse_model_ids)
            self._served = ids if ids is not None else self.models
            self._apply_sleeping(detail)
        else:
            caps.set("models", f"GET {MODELS} (every probe)")
        if samples is not None:
            try:
                self._apply_metrics(samples, detail)
            except ValueError as e:
                caps.lack("queue", f"GET {METRICS}: {e}")
                self._metrics_queue = False
            if self.flavor == "llama.cpp":
                self._metrics_at, self._counters, self._metrics_detail = time.monotonic(), _counters_of(samples), {}
        self.detail = detail
        self.detected = True
        return caps

    # ---- collect -------------------------------------------------------------

    def collect(self) -> None:
        """vLLM: the queue from ``/metrics``; llama.cpp: sleeping from
        ``/props`` at most every :data:`LLAMACPP_PROPS_EVERY_S`, the queue and token rates from ``/metrics``
        at most every ``metrics_every_s`` (:data:`LLAMACPP_METRICS_EVERY_S`;
        every cycle when ``interval_s`` is longer); LM Studio: loaded
        models.  Hosted and other servers: nothing beyond the probe."""
        if self.detection_due():
            self.detect()
        detail = {"host": self.detail.get("host", "")}
        if self.flavor == "llama.cpp":
            self._collect_llamacpp(detail)
        elif self._metrics_queue:
            samples, _ = self.fetch(METRICS, as_json=False, parse=self._parse_queue_metrics)
            self._apply_metrics(samples, detail)
        if self.flavor == "lmstudio":
            models, _ = self.fetch(LMSTUDIO_MODELS, parse=_parse_lmstudio)
            self._apply_lmstudio(models, detail)
        self.detail = detail

    def _collect_llamacpp(self, detail: dict[str, str]) -> None:
        now = time.monotonic()
        if self._props and now - self._props_at >= LLAMACPP_PROPS_EVERY_S:
            props, _ = self.fetch(LLAMACPP_PROPS, check=_check_props)
            self.sleeping = props.get("is_sleeping") is True
            self._props_at = now
        self._apply_sleeping(detail)
        if self._metrics_queue and now - self._metrics_at >= self.metrics_every_s:
            samples, _ = self.fetch(METRICS, as_json=False, parse=self._parse_queue_metrics)
            self._apply_metrics(samples, detail)
            counters = _counters_of(samples)
            self._metrics_detail = _rates_between(self._counters, counters, now - self._metrics_at)
            self._metrics_at, self._counters = now, counters
        detail.update(self._metrics_detail)

    def _apply_sleeping(self, detail: dict[str, str]) -> None:
        """llama.cpp: no model is loaded while the server sleeps."""
        self.models = [] if self.sleeping else list(self._served)
        if self.sleeping:
            detail["sleeping"] = SLEEPING_DETAIL

    def _parse_queue_metrics(self, text: str) -> dict[str, list[float]]:
        samples = _parse_metrics(text)
        self._queue_of(samples)  # raises when the gauges are gone
        return samples

    def _queue_of(self, samples: dict[str, list[float]]) -> tuple[int, int]:
        """(running, waiting) from the flavour's gauges; ``ValueError`` when
        neither is there."""
        names = (
            ("vllm:num_requests_running", "vllm:num_requests_waiting")
            if self.flavor == "vllm"
            else ("llamacpp:requests_processing", "llamacpp:requests_deferred")
        )
        running, waiting = (samples.get(n) for n in names)
        if not running and not waiting:
            raise ValueError(f"neither {names[0]} nor {names[1]} is in the reply")
        # vLLM has one series per engine and model: the server's queue is their sum.
        total = [count(sum(values or []), f"sum of {name}") for name, values in zip(names, (running, waiting))]
        return total[0] or 0, total[1] or 0

    def _apply_metrics(self, samples: dict[str, list[float]], detail: dict[str, str]) -> None:
        running, waiting = self._queue_of(samples)
        for name in ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"):
            if samples.get(name):
                # One gauge per engine: the fullest engine is the one that matters.
                detail["kv_cache_usage"] = f"{max(samples[name]) * 100:.1f}% ({name})"
                break
        self.service.set_queue(running=running, pending=waiting)

    def _apply_lmstudio(self, models: list[tuple[str, str]], detail: dict[str, str]) -> None:
        self.models = [m for m, state in models if state == "loaded"]
        not_loaded = [m for m, state in models if state != "loaded"]
        if not_loaded:
            detail["not_loaded"] = f"{len(not_loaded)} downloaded model(s) not loaded"

    # ---- messages ------------------------------------------------------------

    def explain(self, path: str, error: ProbeError) -> str:
        """The message of a failed reply: the server's own error text (never
        for 401/403, whose text may echo the key: auth failures name the
        variable the key comes from, never the key or the server's text)."""
        if error.body is None:  # not a status the server answered with
            return str(error)
        where = f"GET {path}: HTTP {error.status}"
        if error.status in (401, 403):
            var = self.config.api_key_env
            if var and self.config.api_key():
                return f"{where}: the server refused the API key in ${var}"
            if var:
                return f"{where}: the server wants an API key; ${var} is not set"
            return f"{where}: the server wants an API key; set api_key_env to the name of the variable holding it"
        message = self._error_message(error.body)
        if error.status == 503 and message and "loading model" in message.lower():
            return f"{where}: llama.cpp is loading the model ({message!r})"
        return f"{where}: {message!r}" if message else where

    def explain_absent(self, path: str, resp: Response) -> str:
        """A 404, or a 501 with the server's reason."""
        message = self._error_message(resp.body) if resp.status == 501 else None
        return f"HTTP {resp.status} (not served here{': ' + repr(message) if message else ''})"

    def _error_message(self, body: bytes) -> str | None:
        """The server's error text, the key redacted (before it is cut to
        :data:`ERROR_TEXT_MAX` characters: a key cut in two would no longer
        be found)."""
        message = _error_text(body)
        return self.redact(message)[:ERROR_TEXT_MAX] if message else None


#: Longest server error text quoted in a status or exception.
ERROR_TEXT_MAX = 200


def _error_text(body: bytes) -> str | None:
    """The server's error text from an OpenAI-style ``{"error": {"message"}}``,
    an ``{"error": "..."}``/``{"detail": "..."}`` body, or plain text (the
    first 64 KiB: enough for any key in it to be redacted whole)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        text = body[:65536].decode("utf-8", "replace").strip()
        return text or None
    if isinstance(data, dict):
        err = data.get("error", data.get("detail"))
        if isinstance(err, dict):
            err = err.get("message")
        if isinstance(err, str):
            return err
    return None


def _parse_model_ids(data: Any) -> list[str]:
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ValueError("no 'data' list of models in the reply (not OpenAI-compatible?)")
    return [m["id"] for m in items if isinstance(m, dict) and isinstance(m.get("id"), str)]


def _check_props(data: Any) -> str | None:
    if isinstance(data, dict) and isinstance(data.get("is_sleeping", False), bool):
        return None
    return "expected a JSON object with a boolean 'is_sleeping' (llama-server /props)"


def _counters_of(samples: dict[str, list[float]]) -> dict[str, float]:
    """The llama.cpp counters the rates come from (absent ones left out)."""
    names = {n for _, tokens, seconds in _LLAMACPP_RATES for n in (tokens, seconds)}
    return {n: sum(samples[n]) for n in names if samples.get(n)}


def _rates_between(before: dict[str, float], after: dict[str, float], elapsed_s: float) -> dict[str, str]:
    """Token rates from two scrapes' counters: tokens over the time the
    server spent on them between the scrapes (the counters' own ratio, so
    the rate while generating, not averaged over idle time).  Nothing for a
    pair that did not move or went back (a restart), nor for a first scrape."""
    out: dict[str, str] = {}
    if not math.isfinite(elapsed_s):
        return out
    for key, tokens, seconds in _LLAMACPP_RATES:
        if not all(n in before and n in after for n in (tokens, seconds)):
            continue
        d_tokens, d_seconds = after[tokens] - before[tokens], after[seconds] - before[seconds]
        if d_tokens > 0 and d_seconds > 0:
            out[key] = f"{d_tokens / d_seconds:.1f} ({tokens} / {seconds}, last {elapsed_s:.0f} s)"
    return out


def _parse_lmstudio(data: Any) -> list[tuple[str, str]]:
    """``(id, state)`` from LM Studio's ``/api/v0/models``."""
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items or not all(isinstance(m, dict) and "state" in m for m in items):
        raise ValueError("no 'data' list of models with a 'state' (not LM Studio)")
    return [(str(m.get("id")), str(m["state"])) for m in items]


def _parse_metrics(text: str) -> dict[str, list[float]]:
    try:
        return parse_prometheus(text)
    except ValueError as e:
        raise ValueError(f"not Prometheus text ({e})") from None


# ---- Prometheus text ----------------------------------------------------------

#: ``name{labels} value [timestamp]``; label values may hold spaces and braces.
_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{.*\})?\s+(\S+)(?:\s+\S+)?\s*$")


def parse_prometheus(text: str) -> dict[str, list[float]]:
    """Finite sample values per sample name, labels dropped (vLLM has one
    series per engine and model: callers sum or take the max).

    A line parser good for the flat gauges read here, not
    ``prometheus_client.parser``: a llama.cpp or vLLM ``/metrics`` reply
    takes it ~18 us against ~300 us, on every poll, in the host's process.
    (The tests check that both give the same samples.)  ``ValueError`` when
    the text is not Prometheus exposition format.  NaN samples (llama.cpp
    rates before the first request) are skipped.
    """
    out: dict[str, list[float]] = {}
    for name, value in _parse_lines(text):
        if math.isfinite(value):
            out.setdefault(name, []).append(value)
    return out


def _parse_lines(text: str) -> list[tuple[str, float]]:
    pairs: list[tuple[str, float]] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m is None:
            raise ValueError(f"line {n}: {line[:80]!r} is not a sample")
        try:
            pairs.append((m.group(1), float(m.group(3))))
        except ValueError:
            raise ValueError(f"line {n}: value {m.group(3)!r} is not a number") from None
    return pairs
