"""Prometheus / OpenMetrics exposition of a monitor.

``render(monitor)`` turns the engine's figures into exposition text:
OpenMetrics 1.0 by default, Prometheus text 0.0.4 with ``openmetrics=False``.
:mod:`.metrics_server` serves it over HTTP for a Prometheus scraper.

Where the numbers come from, and why:

* Counters and histograms use ``Service.totals()``, the lifetime totals,
  because Prometheus needs monotonic counters to compute ``rate()``;
  windowed counts would drop as the window slides.
* Request latency, processing time and LLM time to first token are
  **histograms** with buckets at powers of two (:data:`HISTOGRAM_LE_MS`):
  the engine keeps lifetime counts per power of two, and every one of its
  fine bins lies inside one, so each bucket count is exact, and Prometheus
  can aggregate them across instances (``sum by (le)``) and window them
  (``rate``) before ``histogram_quantile``, which interpolates inside a
  bucket (at most a factor of two wide).
* The engine's own windowed percentiles (bin error ≤ 0.39 %) are published
  too, as gauges with a ``quantile`` label (``..._quantile_seconds``) over
  ``quantile_window`` (``mdm_quantile_window_seconds``); they cannot be
  aggregated across instances.  Gauges (queue, health, resources) and the
  uptime ratios come from ``monitor.snapshot(window)``.
* Everything is in base units (seconds, bytes, ratios 0..1).  Missing data
  omits the sample rather than emitting NaN or a zero that looks real, and
  optional features a service never reported (health checks, processing)
  omit its series.  Families without samples are left out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import _core
from .errors import InvalidWindowError

__all__ = [
    "CONTENT_TYPE_OPENMETRICS",
    "CONTENT_TYPE_TEXT",
    "HISTOGRAM_LE_MS",
    "RESOURCE_FAMILIES",
    "MonitorLike",
    "render",
]

#: Content type of OpenMetrics 1.0 output.
CONTENT_TYPE_OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
#: Content type of Prometheus text 0.0.4 output.  Hard-coded because
#: ``prometheus_client.CONTENT_TYPE_LATEST`` moved to 1.0.0 in 0.26.
CONTENT_TYPE_TEXT = "text/plain; version=0.0.4; charset=utf-8"



# --- What the exporter reads ----------------------------------------------
# Protocols rather than the ``_core`` classes, so a Python wrapper with the
# same methods (and ``Service.totals()``) renders too.


class _GaugeReading(Protocol):
    @property
    def last(self) -> float | None: ...


class _WindowStats(Protocol):
    @property
    def service(self) -> str: ...
    @property
    def window_s(self) -> int: ...
    @property
    def p50_ms(self) -> float | None: ...
    @property
    def p90_ms(self) -> float | None: ...
    @property
    def p95_ms(self) -> float | None: ...
    @property
    def p99_ms(self) -> float | None: ...
    @property
    def up(self) -> bool | None: ...
    @property
    def uptime_pct(self) -> float | None: ...
    @property
    def queue_running(self) -> int | None: ...
    @property
    def queue_pending(self) -> int | None: ...
    @property
    def processing_p50_ms(self) -> float | None: ...
    @property
    def processing_p95_ms(self) -> float | None: ...
    @property
    def resources(self) -> Mapping[str, _GaugeReading]: ...


class _ServiceTotals(Protocol):
    def totals(self) -> Mapping[str, Any]: ...


class MonitorLike(Protocol):
    """What ``render`` needs of a monitor: ``_core.Monitor`` or a wrapper."""

    def services(self) -> list[str]: ...
    def service(self, name: str, /) -> _ServiceTotals: ...
    def snapshot(
        self, window: str, /
    ) -> Mapping[str, _WindowStats] | Sequence[_WindowStats]: ...


# --- Families ---------------------------------------------------------------

_Labels = tuple[tuple[str, str], ...]

# Engine gauge -> (family, unit, divisor to the base unit, help).  Percentages
# become ratios because Prometheus conventions keep 0..1 in base units.
RESOURCE_FAMILIES: dict[str, tuple[str, str, float, str]] = {
    "vram_used_bytes": ("mdm_vram_used_bytes", "bytes", 1.0, "GPU memory in use."),
    "vram_total_bytes": ("mdm_vram_total_bytes", "bytes", 1.0, "GPU memory installed."),
    "ram_used_bytes": ("mdm_ram_used_bytes", "bytes", 1.0, "System memory in use."),
    "ram_total_bytes": ("mdm_ram_total_bytes", "bytes", 1.0, "System memory installed."),
    "cpu_pct": ("mdm_cpu_usage_ratio", "ratio", 100.0, "CPU busy fraction, 0 to 1."),
    "gpu_util_pct": ("mdm_gpu_utilization_ratio", "ratio", 100.0, "GPU busy fraction, 0 to 1."),
    "gpu_temp_c": ("mdm_gpu_temp_celsius", "celsius", 1.0, "GPU temperature."),
    "gpu_power_w": ("mdm_gpu_power_watts", "watts", 1.0, "GPU power draw."),
}

_LATENCY_QUANTILES = (("0.5", "p50_ms"), ("0.9", "p90_ms"), ("0.95", "p95_ms"), ("0.99", "p99_ms"))

#: Upper bounds (``le``) of the duration histograms' buckets, in ms: every
#: power of two from 1/8 ms to 2^24 ms (4.7 h), then ``+Inf``.  Durations
#: below 1/8 ms fall in the first bucket; 28 buckets a series.
HISTOGRAM_LE_MS: tuple[float, ...] = tuple(2.0**k for k in range(-3, 25))

#: Upper edge in ms of each entry of ``totals()["latency_octaves"]``.
_OCTAVE_UPPER_MS: tuple[float, ...] = tuple(_core.OCTAVE_UPPER_MS)

#: Services whose processing time is an LLM's time to first token.
_LLM_PREFIX = "llm:"
_PROCESSING_QUANTILES = (("0.5", "processing_p50_ms"), ("0.95", "processing_p95_ms"))


@dataclass
class _Family:
    """One metric family; ``name`` is without the counter ``_total`` suffix."""

    name: str
    kind: str  # "counter" | "gauge" | "summary" | "histogram"
    help: str
    unit: str = ""
    samples: list[tuple[str, _Labels, float]] = field(default_factory=list)

    def add(self, value: float | None, suffix: str = "", **labels: str) -> None:
        # None and non-finite values are missing data: omit, never NaN.
        if value is None or not math.isfinite(value):
            return
        self.samples.append((suffix, tuple(labels.items()), value))

    def add_histogram(self, octaves: Sequence[int], count: int, sum_ms: float, **labels: str) -> None:
        """A histogram of lifetime durations: cumulative buckets at
        :data:`HISTOGRAM_LE_MS` from the engine's counts per power of two
        (``totals()`` ``*_octaves``; entry ``j`` ends at ``OCTAVE_UPPER_MS[j]``),
        then ``+Inf``, ``_count`` and ``_sum`` (seconds)."""
        cumulative, j = 0, 0
        for le in HISTOGRAM_LE_MS:
            while j < len(octaves) and _OCTAVE_UPPER_MS[j] <= le:
                cumulative += int(octaves[j])
                j += 1
            self.samples.append(("_bucket", (*labels.items(), ("le", repr(le / 1e3))), cumulative))
        self.samples.append(("_bucket", (*labels.items(), ("le", "+Inf")), count))
        self.samples.append(("_count", tuple(labels.items()), count))
        self.samples.append(("_sum", tuple(labels.items()), sum_ms / 1e3))

    def expose(self, openmetrics: bool) -> Iterable[str]:
        # OpenMetrics names a counter family without `_total`; 0.0.4 tools
        # expect the TYPE line to carry the full sample name.
        is_counter = self.kind == "counter"
        head = self.name if openmetrics or not is_counter else self.name + "_total"
        yield f"# HELP {head} {self.help}"
        yield f"# TYPE {head} {self.kind}"
        if openmetrics and self.unit:
            yield f"# UNIT {head} {self.unit}"
        for suffix, labels, value in self.samples:
            name = self.name + ("_total" if is_counter else suffix)
            yield f"{name}{_labels(labels)} {_number(value)}"


def _escape(value: str) -> str:
    # The only three escapes both formats define for label values.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: _Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


def _number(value: float) -> str:
    # Integers stay integers (exact counts); floats use repr, which round-trips.
    if isinstance(value, int) or value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / 1e3


def _by_service(result: Mapping[str, _WindowStats] | Sequence[_WindowStats]) -> dict[str, _WindowStats]:
    # The engine answers a dict keyed by service; accept a list of stats too.
    if isinstance(result, Mapping):
        return dict(result)
    return {s.service: s for s in result}


def render(
    monitor: MonitorLike,
    *,
    openmetrics: bool = True,
    quantile_window: str = "5m",
    uptime_windows: Iterable[str] = ("1h", "24h", "7d", "30d"),
) -> str:
    """Exposition text of every service of ``monitor``.

    OpenMetrics 1.0 (ending in ``# EOF``) or, with ``openmetrics=False``,
    Prometheus text 0.0.4.  Quantiles cover ``quantile_window``; an invalid
    one raises ``InvalidWindowError``.  Uptime windows the monitor's tiers
    do not cover (``"7d"`` without long tiers) are skipped.
    """
    now = _by_service(monitor.snapshot(quantile_window))
    uptime: dict[str, dict[str, _WindowStats]] = {}
    for window in dict.fromkeys(uptime_windows):  # dedupe, keep order
        try:
            uptime[window] = now if window == quantile_window else _by_service(monitor.snapshot(window))
        except InvalidWindowError:
            continue

    requests = _Family("mdm_requests", "counter", "Requests handled, by outcome.")
    errors = _Family("mdm_request_errors", "counter", "Failed requests, by error type.")
    latency = _Family(
        "mdm_request_latency_seconds", "histogram",
        "Request latency, lifetime; buckets at powers of two.", "seconds",
    )
    latency_q = _Family(
        "mdm_request_latency_quantile_seconds", "gauge",
        "Request latency percentiles over the quantile window (the engine's digests).", "seconds",
    )
    up = _Family("mdm_health_up", "gauge", "Latest health check: 1 up, 0 down; absent when unknown.")
    checks = _Family("mdm_health_checks", "counter", "Health check results, by result.")
    uptime_ratio = _Family(
        "mdm_uptime_ratio", "gauge", "Time-weighted uptime over the window, 0 to 1.", "ratio"
    )
    queue = _Family("mdm_queue_depth", "gauge", "Latest reported jobs in the queue, by state.")
    processing = _Family(
        "mdm_processing_seconds", "histogram",
        "Time jobs spent executing, lifetime; buckets at powers of two.", "seconds",
    )
    processing_q = _Family(
        "mdm_processing_quantile_seconds", "gauge",
        "Processing time percentiles over the quantile window.", "seconds",
    )
    ttft = _Family(
        "mdm_llm_ttft_seconds", "histogram",
        "LLM time to first token, lifetime, per llm: service; buckets at powers of two.", "seconds",
    )
    ttft_q = _Family(
        "mdm_llm_ttft_quantile_seconds", "gauge",
        "LLM time to first token percentiles over the quantile window.", "seconds",
    )
    resources = {
        gauge: _Family(name, "gauge", help_, unit) for gauge, (name, unit, _, help_) in RESOURCE_FAMILIES.items()
    }
    window_info = _Family(
        "mdm_quantile_window_seconds", "gauge", "Window the quantile gauges cover.", "seconds"
    )

    for name in monitor.services():
        totals = monitor.service(name).totals()
        count, failed = int(totals["count"]), int(totals["errors"])
        requests.add(count - failed, service=name, outcome="success")
        requests.add(failed, service=name, outcome="error")
        for error_type, n in totals["error_counts"]:
            errors.add(int(n), service=name, error_type=str(error_type))

        stats = now.get(name)  # None if the service appeared after the snapshot
        for q, attr in _LATENCY_QUANTILES:
            latency_q.add(_seconds(getattr(stats, attr, None)), service=name, quantile=q)
        latency.add_histogram(totals["latency_octaves"], count, float(totals["sum_ms"]), service=name)

        health_up, health_down = int(totals["health_up"]), int(totals["health_down"])
        if health_up + health_down:
            checks.add(health_up, service=name, result="up")
            checks.add(health_down, service=name, result="down")
        for window, by_service in uptime.items():
            pct = getattr(by_service.get(name), "uptime_pct", None)
            uptime_ratio.add(None if pct is None else pct / 100, service=name, window=window)

        processed = int(totals["processing_count"])
        if processed:
            hist, quantiles = (ttft, ttft_q) if name.startswith(_LLM_PREFIX) else (processing, processing_q)
            for q, attr in _PROCESSING_QUANTILES:
                quantiles.add(_seconds(getattr(stats, attr, None)), service=name, quantile=q)
            hist.add_histogram(totals["processing_octaves"], processed, float(totals["processing_sum_ms"]), service=name)

        if stats is None:
            continue
        if stats.up is not None:
            up.add(1 if stats.up else 0, service=name)
        queue.add(stats.queue_running, service=name, state="running")
        queue.add(stats.queue_pending, service=name, state="pending")
        for gauge, reading in stats.resources.items():
            family = resources.get(gauge)
            if family is not None:  # every engine gauge has one (tests/test_openmetrics.py)
                family.add(None if reading.last is None else reading.last / RESOURCE_FAMILIES[gauge][2], service=name)

    if now:
        window_info.add(next(iter(now.values())).window_s, window=quantile_window)

    families = [
        requests, errors, latency, latency_q, up, checks, uptime_ratio, queue, processing, processing_q,
        ttft, ttft_q, *resources.values(), window_info,
    ]
    families.extend(_llm_families(getattr(monitor, "llm", None), quantile_window))
    existing_jobs = getattr(monitor, "existing_jobs", None)
    families.extend(_job_families(existing_jobs() if callable(existing_jobs) else None, quantile_window))
    lines = [line for f in families if f.samples for line in f.expose(openmetrics)]
    if openmetrics:
        lines.append("# EOF")
    return "\n".join(lines) + "\n" if lines else ""


# --- LLM families ------------------------------------------------------------
# Rendered when the monitor has an ``llm`` attribute that is an LlmTracker.
# Counters are the tracker's lifetime totals (this process; restored history
# excluded), so they only grow.  Latency and TTFT of LLM requests are the
# engine services ``llm:<provider>/<model>`` above: their
# mdm_processing_seconds is the time to first token.

_LLM_TOKEN_KINDS = ("input_uncached", "cache_read", "cache_write", "output", "reasoning")


def _llm_families(llm: object, window: str) -> list[_Family]:
    if llm is None:
        return []
    from .llm.tracker import LlmTracker

    if not isinstance(llm, LlmTracker):
        return []
    requests = _Family("mdm_llm_requests", "counter", "LLM requests, by outcome.")
    unknown = _Family(
        "mdm_llm_usage_unknown_requests", "counter",
        "LLM requests whose token usage was not reported; they add no tokens.",
    )
    tokens = _Family(
        "mdm_llm_tokens", "counter",
        "LLM tokens of requests with known usage, by kind; reasoning is part of output.",
    )
    cost = _Family(
        "mdm_llm_cost_usd", "counter",
        "Estimated USD of LLM requests with a known price (see mdm_llm_unpriced_requests_total).",
    )
    unpriced = _Family(
        "mdm_llm_unpriced_requests", "counter",
        "LLM requests without a price (unknown model or usage); not in mdm_llm_cost_usd_total.",
    )
    active = _Family(
        "mdm_llm_active_models", "gauge",
        "Models with requests in the quantile window or reported loaded, by provider.",
    )
    for (provider, model), t in sorted(llm.totals().items()):
        requests.add(t.requests - t.errors, provider=provider, model=model, outcome="success")
        requests.add(t.errors, provider=provider, model=model, outcome="error")
        unknown.add(t.usage_unknown, provider=provider, model=model)
        for kind in _LLM_TOKEN_KINDS:
            tokens.add(getattr(t, kind), provider=provider, model=model, kind=kind)
        if t.cost_known:
            cost.add(t.cost_usd, provider=provider, model=model)
        unpriced.add(t.unpriced, provider=provider, model=model)
    per_provider: dict[str, int] = {}
    for m in llm.active_models(window):
        per_provider[m.provider] = per_provider.get(m.provider, 0) + 1
    for provider, n in sorted(per_provider.items()):
        active.add(n, provider=provider)
    return [requests, unknown, tokens, cost, unpriced, active]


# --- Job families ----------------------------------------------------------------
# Rendered once a monitor has recorded jobs (``Monitor.jobs`` exists).  One
# set per label kind, each with its own label name, so every family has one
# label set: ``mdm_jobs`` (service), ``mdm_model_jobs`` (service, model),
# ``mdm_workflow_jobs`` (service, workflow).  Labels are bounded by the
# tracker (64 models and 64 workflows per service, then "other").  Counts
# and sums are lifetime totals of this process; quantiles cover the
# quantile window.  A queue-wait sample exists only for jobs whose start was
# seen (an unknown wait is never a 0).

_JOB_PREFIX = {"service": "mdm_job", "model": "mdm_model_job", "workflow": "mdm_workflow_job"}
_JOB_QUANTILES = (("0.5", "p50_ms"), ("0.95", "p95_ms"), ("0.99", "p99_ms"))


def _job_families(jobs: Any, window: str) -> list[_Family]:
    if jobs is None:
        return []
    from .jobs import BY, JobTracker

    if not isinstance(jobs, JobTracker):
        return []
    out: list[_Family] = []
    windowed = {(s.service, s.by, s.label): s for by in BY for s in jobs.stats(window, by=by)}
    totals = jobs.series_totals()
    for by in BY:
        prefix = _JOB_PREFIX[by]
        what = "" if by == "service" else f" per {by}"
        count = _Family(f"{prefix}s", "counter", f"Finished jobs{what}, by outcome.")
        processing = _Family(
            f"{prefix}_processing_seconds", "summary",
            f"Job processing time (start to result){what}; quantiles over the quantile window, "
            "count and sum lifetime.", "seconds",
        )
        wait = _Family(
            f"{prefix}_queue_wait_seconds", "summary",
            f"Job queue wait (submission to start){what}, of jobs whose start was seen; quantiles "
            "over the quantile window, count and sum lifetime.", "seconds",
        )
        for key, run, waited in totals:
            if key.by != by:
                continue
            labels = {"service": key.service} if by == "service" else {"service": key.service, by: key.label}
            n, failed = int(run["count"]), int(run["errors"])
            count.add(n - failed, **labels, outcome="success")
            count.add(failed, **labels, outcome="error")
            st = windowed.get((key.service, key.by, key.label))
            for q, attr in _JOB_QUANTILES:
                processing.add(_seconds(getattr(st, f"processing_{attr}", None)), **labels, quantile=q)
            processing.add(float(run["sum_ms"]) / 1e3, "_sum", **labels)
            processing.add(n, "_count", **labels)
            if waited is not None and int(waited["count"]):
                for q, attr in _JOB_QUANTILES:
                    wait.add(_seconds(getattr(st, f"queue_wait_{attr}", None)), **labels, quantile=q)
                wait.add(float(waited["sum_ms"]) / 1e3, "_sum", **labels)
                wait.add(int(waited["count"]), "_count", **labels)
        out.extend((count, processing, wait))
    return out
