"""`LlmTracker`: tokens, cost, latency and time to first token per model.

Where each number lives:

* **Latency and TTFT** go to the engine, into one service per model named
  ``llm:<provider>/<model>``: latency via ``Service.record`` (failures with
  their error type), TTFT via ``Service.record_processing``.  So the
  engine's tiers, percentiles and persistence apply, and for these services
  **``processing_*`` means time to first token**.  Names past the engine's
  64 characters are cut and end in ``~`` and 8 hex digits of a hash
  (:meth:`LlmTracker.service_name`).  Percentiles do not merge across
  services, so per-provider stats carry them only when the provider had one
  model in the window.
* **Requests, errors, tokens by kind and cost** go to Python buckets per
  model: 1-minute buckets for 24 h and 1-hour buckets for 30 days
  (``_buckets``), plus lifetime totals for Prometheus counters.  Requests
  whose usage was not reported count in ``requests_usage_unknown`` and add
  no tokens; requests without a price count as such and make the window's
  ``cost_usd`` None (``cost_known_usd`` still sums the priced ones).
* **Per-request rows** (:mod:`.rows`) wait in a bounded buffer for storage:
  :meth:`LlmTracker.rows_after` gives each row exactly once,
  :meth:`LlmTracker.restore` rebuilds the buckets from stored rows.

Output tokens/s is tokens-weighted: the backend's reported rate where there
is one (Ollama, llama.cpp, LM Studio), else ``output / (latency - ttft)``
when TTFT was measured.

Thread-safety: ``record`` may be called from any thread; the buckets sit
behind one lock held for a few dict updates, and the engine calls happen
outside it (they are lock-free).  Memory is bounded by ``max_models`` x
(1,441 + 721) bucket rows of at most 104 bytes (~225 KiB a model at most; see
``_buckets``) plus ``max_rows`` buffered rows.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import os
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from .. import _core
from ..errors import InvalidValueError, InvalidWindowError, ServiceLimitError, UnknownServiceError
from ..windows import window_seconds
from ._buckets import HOUR_RETENTION_S, Agg, BucketStore, Key
from .prices import PriceTable, normalize_provider
from .report import EXPORT_COLUMNS, ActiveModel, LlmStats, write_table
from .rows import TOKEN_COLUMNS, Row, check_row
from .usage import StreamUsage, normalize_usage

__all__ = ["EXPORT_COLUMNS", "ActiveModel", "LlmStats", "LlmTracker", "MonitorLike"]


class MonitorLike(Protocol):
    """What the tracker needs of a monitor: ``Monitor`` or ``_core.Monitor``."""

    def service(self, name: str, /) -> _core.Service: ...
    def stats(self, service: str, window: str | float | None = None, /) -> _core.ServiceStats: ...
    def now(self) -> float: ...


def _window_seconds(window: str | float) -> int:
    seconds = window_seconds(window)
    if seconds > HOUR_RETENTION_S:
        raise InvalidWindowError(f"window={window!r} is longer than the 30 days LLM usage is kept")
    return seconds


def _finite(name: str, v: object, *, nullable: bool = False) -> float | None:
    if v is None and nullable:
        return None
    if isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v)) and float(v) >= 0:
        return float(v)
    raise InvalidValueError(f"{name}={v!r} is invalid: expected a finite number >= 0{' or None' if nullable else ''}")


class LlmTracker:
    """Tracks LLM requests of ``monitor`` (see the module doc).

    ``prices``: a :class:`PriceTable` (default: ``PriceTable.load()``, the
    shipped table).  ``max_models``: distinct (provider, model) pairs kept;
    later new ones are counted under ``(provider, "other")``.  ``max_rows``:
    rows buffered for storage (oldest dropped first, counted in
    ``rows_dropped``; 0 buffers none, as a monitor without storage does).
    ``timer``: monotonic seconds for ``track_stream``.
    """

    def __init__(
        self,
        monitor: MonitorLike,
        prices: PriceTable | None = None,
        *,
        max_models: int = 256,
        max_rows: int = 10_000,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        if not (isinstance(max_models, int) and 1 <= max_models <= 10_000):
            raise InvalidValueError(f"max_models={max_models!r} is out of range: expected 1 to 10000")
        if not (isinstance(max_rows, int) and 0 <= max_rows <= 10_000_000):
            raise InvalidValueError(f"max_rows={max_rows!r} is out of range: expected 0 to 10000000")
        self.monitor = monitor
        self.prices = prices if prices is not None else PriceTable.load()
        self.max_models = max_models
        self._timer = timer
        self._lock = threading.Lock()
        self._store = BucketStore()
        self._last_at: dict[Key, float] = {}
        self._loaded: dict[str, tuple[float, tuple[str, ...]]] = {}
        self._services: dict[str, _core.Service | None] = {}
        self._rows: deque[tuple[int, Row]] = deque(maxlen=max_rows)
        self._seq = 0
        self.rows_dropped = 0
        self._warned_engine = False

    # ---- naming ------------------------------------------------------------

    @staticmethod
    def service_name(provider: str, model: str | None = None) -> str:
        """The engine service of a model (``llm:openai/gpt-4o``); with
        ``model=None`` the provider's prefix (``llm:openai``), which names
        no service but labels per-provider stats."""
        name = f"llm:{normalize_provider(provider)}" + ("" if model is None else f"/{model}")
        if len(name) <= _core.MAX_NAME_CHARS:
            return name
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        return f"{name[: _core.MAX_NAME_CHARS - 9]}~{digest}"

    def _service(self, name: str) -> _core.Service | None:
        svc = self._services.get(name, ...)
        if svc is not ...:
            return svc
        try:
            created: _core.Service | None = self.monitor.service(name)
        except ServiceLimitError as e:
            created = None
            if not self._warned_engine:
                self._warned_engine = True
                warnings.warn(f"LLM latency of {name!r} is not recorded: {e}", RuntimeWarning, stacklevel=4)
        self._services[name] = created
        return created

    def _key(self, provider: str, model: str) -> Key:
        key = (provider, model)
        if key in self._last_at or len(self._last_at) < self.max_models:
            return key
        return (provider, "other")

    # ---- recording ---------------------------------------------------------

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
    ) -> Row:
        """Records one request and returns its row.

        ``usage``: anything :func:`~.usage.normalize_usage` accepts (a
        ``Usage``, an SDK object or dict, ``None`` = unknown).  ``at``: UTC
        epoch seconds for the buckets, rows and price date (default: the
        monitor's now); the engine records latency at its current time.
        ``base_url`` marks a loopback server as local (free unless priced).
        ``InvalidValueError`` for bad values; nothing is recorded then.
        """
        p = normalize_provider(provider)
        if not (isinstance(model, str) and model and model.isprintable()):
            raise InvalidValueError(f"model={model!r} is invalid: expected a non-empty printable model name")
        lat = _finite("latency_ms", latency_ms)
        ttft = _finite("ttft_ms", ttft_ms, nullable=True)
        if error is not None and not isinstance(error, str):
            raise InvalidValueError(f"error={error!r} is invalid: expected a string or None")
        u = normalize_usage(usage, p)
        now = self.monitor.now()
        at_s = now if at is None else _finite("at", at)
        assert lat is not None and at_s is not None
        cost = self.prices.cost(p, model, u, at_s, latency_ms=lat, base_url=base_url)
        tps = u.output_tokens_per_s
        if tps is None and u.known and u.output and ttft is not None and lat > ttft:
            tps = u.output / ((lat - ttft) / 1e3)
        row: Row = {
            "at_s": at_s, "provider": p, "model": model,
            **{k: (getattr(u, k) if u.known else None) for k in TOKEN_COLUMNS},
            "cost_usd": cost, "latency_ms": lat, "ttft_ms": ttft, "ok": bool(ok),
            "error": None if ok else (error or "error"), "usage_known": u.known, "output_tokens_per_s": tps,
        }
        with self._lock:
            key, _ = self._add(row, now, lifetime=True)
            self._seq += 1
            if self._rows.maxlen:  # max_rows=0: no buffer, nothing to drop
                if len(self._rows) == self._rows.maxlen:
                    self.rows_dropped += 1
                self._rows.append((self._seq, row))
        # Outside the lock: the engine's handles are lock-free.
        svc = self._service(self.service_name(*key))
        if svc is not None:
            svc.record(lat, ok=bool(ok), error=row["error"])
            if ttft is not None:
                svc.record_processing(ttft)
        return dict(row)

    def _add(self, row: Row, now: float, *, lifetime: bool) -> tuple[Key, bool]:
        """Adds a row to the buckets (lock held); returns its bucket key and
        whether it was recent enough to keep."""
        one = Agg(requests=1, errors=0 if row["ok"] else 1)
        if row["usage_known"]:
            for k in TOKEN_COLUMNS:
                setattr(one, k, row[k])
            tps = row["output_tokens_per_s"]
            if tps and row["output"]:
                one.gen_tokens, one.gen_seconds = row["output"], row["output"] / tps
        else:
            one.usage_unknown = 1
        if row["cost_usd"] is not None:
            one.cost_usd, one.cost_known = row["cost_usd"], 1
        key = self._key(row["provider"], row["model"])
        self._last_at[key] = max(self._last_at.get(key, row["at_s"]), row["at_s"])
        self._store.prune(now)
        return key, self._store.add(key, row["at_s"], one, now, lifetime=lifetime)

    def track_stream(
        self, provider: str, model: str, stream: Iterable[Any], *, base_url: str | None = None
    ) -> Iterator[Any]:
        """Yields ``stream``'s chunks unchanged and records the request when
        it ends: latency from this call to the end, TTFT to the first chunk,
        usage via :class:`~.usage.StreamUsage` (unknown when the stream
        carried none).  If the consumer stops early (``close()``, ``break``)
        or an exception escapes, the request is recorded as failed with the
        exception's class name (``GeneratorExit`` for an early stop) and a
        closable ``stream`` is closed.  Timing starts at this call."""
        normalize_provider(provider)
        if not (isinstance(model, str) and model and model.isprintable()):
            raise InvalidValueError(f"model={model!r} is invalid: expected a non-empty printable model name")
        return self._tracked(provider, model, stream, base_url, self._timer())

    def _tracked(
        self, provider: str, model: str, stream: Iterable[Any], base_url: str | None, start: float
    ) -> Iterator[Any]:
        acc = StreamUsage(provider)
        ttft: float | None = None
        ok, error = True, None
        try:
            for chunk in stream:
                if ttft is None:
                    ttft = (self._timer() - start) * 1e3
                acc.add(chunk)
                yield chunk
        except BaseException as e:
            ok, error = False, type(e).__name__
            close = getattr(stream, "close", None)
            if isinstance(e, GeneratorExit) and callable(close):
                close()
            raise
        finally:
            latency = max((self._timer() - start) * 1e3, 0.0)
            self.record(provider, model, acc.usage(), latency, ttft, ok, error, base_url=base_url)

    def note_loaded(self, provider: str, models: Iterable[str]) -> None:
        """Reports the models ``provider`` has loaded now (e.g. Ollama
        ``/api/ps``), replacing the previous report for that provider."""
        p = normalize_provider(provider)
        names = tuple(dict.fromkeys(str(m) for m in models))
        with self._lock:
            self._loaded[p] = (self.monitor.now(), names)

    # ---- reading -----------------------------------------------------------

    def stats(self, window: str | float = "5m", by: Literal["model", "provider"] = "model") -> list[LlmStats]:
        """Figures per model (or provider) over ``window`` (up to ``"30d"``;
        minute buckets up to 24 h, hour buckets beyond), most requests
        first.  Only groups with requests in the window are listed."""
        if by not in ("model", "provider"):
            raise InvalidValueError(f"by={by!r} is not supported: expected 'model' or 'provider'")
        window_s = _window_seconds(window)
        now = self.monitor.now()
        with self._lock:
            per_key = self._store.window(window_s, now)
        groups: dict[tuple[str, str | None], Agg] = {}
        models: dict[tuple[str, str | None], list[str]] = {}
        for (provider, model), agg in per_key.items():
            group = (provider, model if by == "model" else None)
            groups.setdefault(group, Agg()).merge(agg)
            models.setdefault(group, []).append(model)
        all_requests = sum(a.requests for a in groups.values())
        all_tokens = sum(a.tokens for a in groups.values())
        out = [
            self._stats(p, m, a, models[(p, m)], window, window_s, all_requests, all_tokens)
            for (p, m), a in groups.items()
        ]
        out.sort(key=lambda s: (-s.requests, s.provider, s.model or ""))
        return out

    def _stats(
        self, provider: str, model: str | None, a: Agg, models: list[str], window: str | float,
        window_s: int, all_requests: int, all_tokens: int,
    ) -> LlmStats:
        name = self.service_name(provider, model)
        engine: _core.ServiceStats | None = None
        if len(models) == 1:  # a model, or a provider with one model in the window
            try:  # the service may also come from the engine's own storage
                engine = self.monitor.stats(self.service_name(provider, models[0]), window)
            except (InvalidWindowError, UnknownServiceError):
                engine = None
        return LlmStats(
            provider=provider, model=model, service=name, window_s=window_s,
            requests=a.requests, errors=a.errors,
            error_rate=a.errors / a.requests if a.requests else None,
            requests_usage_unknown=a.usage_unknown,
            input_uncached=a.input_uncached, cache_read=a.cache_read, cache_write=a.cache_write,
            output=a.output, reasoning=a.reasoning, total_tokens=a.tokens,
            cost_usd=a.cost_usd if a.unpriced == 0 else None,
            cost_known_usd=a.cost_usd if a.cost_known else None,
            cost_known_requests=a.cost_known,
            latency_p50_ms=engine.p50_ms if engine else None,
            latency_p95_ms=engine.p95_ms if engine else None,
            ttft_p50_ms=engine.processing_p50_ms if engine else None,
            ttft_p95_ms=engine.processing_p95_ms if engine else None,
            output_tokens_per_s=a.gen_tokens / a.gen_seconds if a.gen_seconds > 0 else None,
            share_of_requests=a.requests / all_requests if all_requests else None,
            share_of_tokens=a.tokens / all_tokens if all_tokens else None,
        )

    def active_models(self, window: str | float = "5m") -> list[ActiveModel]:
        """Models with requests in ``window`` plus those reported loaded
        (:meth:`note_loaded`) within it, sorted by provider and model."""
        window_s = _window_seconds(window)
        now = self.monitor.now()
        with self._lock:
            used = self._store.window(window_s, now)
            last = dict(self._last_at)
            loaded = {(p, m) for p, (at, names) in self._loaded.items() if at >= now - window_s for m in names}
        keys = sorted(set(used) | loaded)
        return [
            ActiveModel(p, m, used[(p, m)].requests if (p, m) in used else 0, last.get((p, m)), (p, m) in loaded)
            for p, m in keys
        ]

    def totals(self) -> dict[Key, Agg]:
        """Lifetime counters per (provider, model) recorded by this process
        (restored rows excluded), for monotonic Prometheus counters."""
        with self._lock:
            return {k: a.copy() for k, a in self._store.totals.items()}

    # ---- storage -----------------------------------------------------------

    def rows_since(self, at_s: float) -> list[Row]:
        """Buffered rows with ``at_s`` >= the given time, in recording order."""
        with self._lock:
            return [dict(r) for _, r in self._rows if r["at_s"] >= at_s]

    def rows_after(self, cursor: int = 0) -> tuple[list[Row], int]:
        """``(rows recorded after cursor, new cursor)``: each row exactly
        once however timestamps tie; start from 0 and pass the returned
        cursor next time (rows past ``max_rows`` unread are lost, see
        ``rows_dropped``)."""
        with self._lock:
            rows = [dict(r) for seq, r in self._rows if seq > cursor]
            return rows, self._seq

    def forget_through(self, cursor: int) -> None:
        """Drops buffered rows up to ``cursor`` (storage calls this once they
        are committed, so the buffer holds only unsaved rows)."""
        with self._lock:
            while self._rows and self._rows[0][0] <= cursor:
                self._rows.popleft()

    def restore(self, rows: Iterable[Mapping[str, Any] | Sequence[Any]]) -> dict[str, int]:
        """Rebuilds the buckets from stored rows (see :mod:`.rows`).  The
        engine's latency history is restored by its own storage, and restored
        rows are not buffered again nor counted in :meth:`totals`.  Returns
        ``{"restored", "rejected", "out_of_window"}``: malformed rows are
        counted, never trusted; rows older than 30 days are skipped."""
        report = {"restored": 0, "rejected": 0, "out_of_window": 0}
        now = self.monitor.now()
        checked: list[Row] = []
        for raw in rows:
            try:
                row = check_row(raw)
                row["provider"] = normalize_provider(row["provider"])
            except InvalidValueError:
                report["rejected"] += 1
                continue
            checked.append(row)
        with self._lock:
            for row in checked:
                report["restored" if self._add(row, now, lifetime=False)[1] else "out_of_window"] += 1
        return report

    # ---- export ------------------------------------------------------------

    def export(
        self, path: str | os.PathLike[str], format: Literal["csv", "json"] = "csv",
        window: str | float = "24h", *, by: Literal["model", "provider"] = "model",
    ) -> Path:
        """Writes :meth:`stats` (columns :data:`~.report.EXPORT_COLUMNS`) to
        ``path`` atomically (a temporary file renamed over it; ``ExportError``
        and nothing written on failure); returns the absolute path."""
        if format not in ("csv", "json"):
            raise InvalidValueError(f"format={format!r} is not supported: expected 'csv' or 'json'")
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidValueError(f"path={path!r} is not a file path: expected a str or os.PathLike")
        meta = {
            "window": window, "by": by,
            "prices_source": self.prices.source, "prices_retrieved": self.prices.retrieved,
        }
        return write_table(Path(path), format, self.stats(window, by), self.monitor.now(), meta)

    def __repr__(self) -> str:
        return f"LlmTracker({len(self._last_at)} models, {self.prices!r})"

