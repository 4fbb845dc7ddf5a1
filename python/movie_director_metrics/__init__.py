"""movie_director_metrics: lock-free latency, error, queue, resource and
health metrics for AI generation backends, with a Rust core.

Quick use::

    from movie_director_metrics import Monitor
    monitor = Monitor()
    comfy = monitor.service("comfyui")
    comfy.record(182.5)                       # a successful request, in ms
    comfy.record(30_000, ok=False, error="timeout")
    print(monitor.stats("comfyui", "5m").p95_ms)
"""

from __future__ import annotations

from . import errors
from ._core import (
    DEFAULT_COMPRESSION,
    GaugeStats,
    Monitor,
    Service,
    ServiceStats,
    TDigest,
    __version__,
)
from .errors import (
    ClockError,
    DecodeError,
    InvalidConfigError,
    InvalidMetricError,
    InvalidNameError,
    InvalidValueError,
    InvalidWindowError,
    MetricsError,
    MonitorClosedError,
    ServiceLimitError,
    UnknownServiceError,
)
from .timing import timed

#: Windows with a name; any number of seconds up to the longest tier works too.
WINDOWS: tuple[str, ...] = ("1m", "5m", "15m", "1h", "6h", "24h")

#: Gauges accepted by ``Service.set_resource``.
GAUGES: tuple[str, ...] = (
    "vram_used_bytes",
    "vram_total_bytes",
    "ram_used_bytes",
    "ram_total_bytes",
    "cpu_pct",
    "gpu_util_pct",
    "gpu_temp_c",
    "gpu_power_w",
)

#: Metrics accepted by ``Monitor.series`` and ``Monitor.compare``.
METRICS: tuple[str, ...] = (
    "count",
    "errors",
    "rpm",
    "success_rate",
    "error_rate",
    "avg_ms",
    "min_ms",
    "max_ms",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "uptime_pct",
    "queue_depth_avg",
    "queue_depth_max",
    "processing_avg_ms",
    "processing_p50_ms",
    "processing_p95_ms",
    "health_latency_ms",
    *GAUGES,
)

__all__ = [
    "DEFAULT_COMPRESSION",
    "GAUGES",
    "METRICS",
    "WINDOWS",
    "ClockError",
    "DecodeError",
    "GaugeStats",
    "InvalidConfigError",
    "InvalidMetricError",
    "InvalidNameError",
    "InvalidValueError",
    "InvalidWindowError",
    "MetricsError",
    "Monitor",
    "MonitorClosedError",
    "Service",
    "ServiceLimitError",
    "ServiceStats",
    "TDigest",
    "UnknownServiceError",
    "__version__",
    "errors",
    "timed",
]
