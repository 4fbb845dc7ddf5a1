"""Ollama.

Endpoints (reference §2.3; ``ollama/ollama`` ``server/routes.go``,
``api/types.go``, ``server/sched.go``):

- ``GET /api/version`` -> ``{"version"}``: liveness and the version.
- ``GET /api/ps`` -> ``{"models": [{name, size, size_vram, expires_at, ...}]}``:
  the loaded models; ``size_vram`` is the part in GPU memory, so
  ``size_vram < size`` means part of the model runs on the CPU.
- The final ``/api/chat`` or ``/api/generate`` object (``"done": true``)
  carries ``total_duration``, ``load_duration``, ``prompt_eval_duration``,
  ``eval_duration`` (nanoseconds) and ``eval_count``:
  :meth:`Ollama.record_generation` turns it into a processing time.

Cannot report: queue depth (Ollama has no endpoint for it; its limits are
environment settings, ``OLLAMA_NUM_PARALLEL``/``OLLAMA_MAX_QUEUE``, and a
full queue answers HTTP 503 "server busy", which every recorded call counts
as ``server_busy``), processing time from polling (only from our own
calls), whole-GPU memory, utilisation, temperature or power (use
:class:`~.resources.LocalResources`).  ``vram_used_bytes`` here is what
Ollama's loaded models hold, not the device total.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._core import MAX_DURATION_MS, Service
from ..errors import InvalidValueError
from .base import Backend, Capabilities
from .config import BackendConfig
from .http import HttpClient, ProbeError
from .readings import BYTES_MAX, count

VERSION = "/api/version"
PS = "/api/ps"

QUEUE_NA = (
    "Ollama has no queue endpoint (OLLAMA_NUM_PARALLEL and OLLAMA_MAX_QUEUE are server settings); "
    "HTTP 503 'server busy' replies to our calls are counted as server_busy errors"
)
PROCESSING_NA = (
    "not from polling: Ollama keeps no job history; processing time comes from our own calls "
    "(Ollama.record_generation with the final /api/chat or /api/generate object, or track())"
)

_NS_PER_MS = 1e6


@dataclass(frozen=True)
class GenerationTiming:
    """Timings of one finished Ollama generation, in milliseconds.

    ``None`` where Ollama left the field out (every metric is
    ``omitempty``: a cached prompt has no ``prompt_eval_*``).
    """

    total_ms: float
    load_ms: float | None
    prompt_eval_ms: float | None
    eval_ms: float | None
    eval_count: int | None

    @property
    def tokens_per_s(self) -> float | None:
        """Generation speed: ``eval_count / eval_duration``."""
        if self.eval_count is None or not self.eval_ms:
            return None
        return self.eval_count / (self.eval_ms / 1e3)


class Ollama(Backend):
    """Ollama: liveness and version, loaded models and their GPU memory.

    ``version`` is set by every probe; ``models`` (names of the loaded
    models) and ``detail`` (partial CPU offload, per model) by
    :meth:`collect`.
    """

    kind = "ollama"
    default_port = 11434

    def __init__(self, config: BackendConfig, service: Service, client: HttpClient | None = None) -> None:
        super().__init__(config, service, client)
        self.models: list[str] = []
        self.detail: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"Ollama(name={self.config.name!r}, url={self.config.url!r})"

    def probe(self) -> float:
        data, latency_ms = self.fetch(VERSION, check=_check_version)
        self.version = data["version"]
        return latency_ms

    def detect(self) -> Capabilities:
        """A passing failure of ``/api/ps`` (timeout, reset, 5xx, busy)
        leaves the signals n/a "(detection will retry)", and :meth:`collect`
        detects again (at most every half interval)."""
        self.begin_detection()
        caps = self.capabilities
        caps.set("health", f"GET {VERSION}")
        caps.lack("queue", QUEUE_NA)
        caps.lack("processing", PROCESSING_NA)
        self.detected = True
        try:
            found = self._read_ps(absent_ok=True)
        except ProbeError as e:
            why = self.detection_missed(e, str(e))
            caps.lack("resources", why)
            caps.lack("models", why)
        else:
            if found:
                caps.set("models", f"GET {PS} (loaded models)")
            else:
                for signal in ("resources", "models"):
                    caps.lack(signal, f"GET {PS}: HTTP 404: this Ollama is older than /api/ps")
        return caps

    def collect(self) -> None:
        if self.detection_due():
            self.detect()
        elif self.capabilities.has("resources"):
            self._read_ps()

    def _read_ps(self, *, absent_ok: bool = False) -> bool:
        """Records the loaded models' VRAM; False when ``absent_ok`` and the
        server has no ``/api/ps``."""
        loaded, _ = self.fetch(PS, parse=_parse_ps, absent=(404,) if absent_ok else ())
        if loaded is None:
            return False
        names, vram, offloaded = loaded
        # An empty list is a real zero: nothing is loaded.
        self.service.set_resource(vram_used_bytes=vram)
        self.models = names
        self.detail = {
            f"offload {name}": f"{frac * 100:.0f}% in VRAM, the rest on the CPU (partial offload)"
            for name, frac in offloaded.items()
        }
        # The status shows capabilities, so the offload note goes there too.
        source = f"GET {PS} (vram_used_bytes: sum of size_vram of the loaded models)"
        if offloaded:
            source += "; partial CPU offload: " + ", ".join(f"{n} {f * 100:.0f}% in VRAM" for n, f in offloaded.items())
        self.capabilities.set("resources", source)
        return True

    def record_generation(self, response: dict[str, Any]) -> GenerationTiming:
        """Records the processing time of one finished generation.

        ``response`` is the final object of ``POST /api/chat`` or
        ``POST /api/generate`` (``"done": true``; with streaming, the last
        line).  ``total_duration`` (load + prompt evaluation + generation,
        nanoseconds) is recorded with ``Service.record_processing`` in ms;
        the returned :class:`GenerationTiming` also has the parts and the
        generation speed.  Raises :class:`InvalidValueError` (a
        ``ValueError``), recording nothing, for an object that is not final
        or has no ``total_duration``.
        """
        if not isinstance(response, dict) or response.get("done") is not True:
            raise InvalidValueError("record_generation needs the final Ollama object (\"done\": true); got a partial one")
        total = _count(response.get("total_duration"))
        if total is None or total > MAX_DURATION_MS * _NS_PER_MS:
            raise InvalidValueError(
                f"record_generation: total_duration = {response.get('total_duration')!r:.80}; expected nanoseconds "
                f"(an integer in [0, {MAX_DURATION_MS * _NS_PER_MS:.0f}])"
            )
        timing = GenerationTiming(
            total_ms=total / _NS_PER_MS,
            load_ms=_ms(response.get("load_duration")),
            prompt_eval_ms=_ms(response.get("prompt_eval_duration")),
            eval_ms=_ms(response.get("eval_duration")),
            eval_count=_count(response.get("eval_count")),
        )
        self.service.record_processing(timing.total_ms)
        return timing


def _check_version(data: Any) -> str | None:
    if isinstance(data, dict) and isinstance(data.get("version"), str):
        return None
    return "no 'version' string in the reply (not Ollama?)"


def _parse_ps(data: Any) -> tuple[list[str], float, dict[str, float]]:
    """From an ``/api/ps`` reply: the loaded models' names, the sum of
    their ``size_vram`` in bytes, and model -> fraction in VRAM for those
    partly offloaded to the CPU.  ``ValueError`` for a size outside the
    engine's range."""
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise ValueError("no 'models' list in the reply")
    names: list[str] = []
    offloaded: dict[str, float] = {}
    vram = 0
    for i, m in enumerate(models):
        if not isinstance(m, dict):
            continue
        name = str(m.get("name") or m.get("model") or "?")
        names.append(name)
        size = _count(m.get("size"))
        size_vram = count(m.get("size_vram"), f"models[{i}].size_vram", high=int(BYTES_MAX))
        vram += size_vram or 0
        if size and size_vram is not None and size_vram < size:
            offloaded[name] = size_vram / size
    if vram > BYTES_MAX:
        raise ValueError(f"size_vram of the loaded models sums to {vram:.3g} bytes: expected at most {BYTES_MAX:g}")
    return names, float(vram), offloaded


def _count(value: Any) -> int | None:
    """A non-negative integer JSON number, else None."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _ms(ns: Any) -> float | None:
    n = _count(ns)
    return None if n is None or n > MAX_DURATION_MS * _NS_PER_MS else n / _NS_PER_MS
