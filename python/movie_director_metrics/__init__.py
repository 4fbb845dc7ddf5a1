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

from . import _core, errors
from ._core import (
    DEFAULT_COMPRESSION,
    GaugeStats,
    Service,
    ServiceStats,
    TDigest,
    __version__,
)
from .errors import (
    ClockError,
    ConfigError,
    DecodeError,
    ExportError,
    InvalidConfigError,
    InvalidMetricError,
    InvalidNameError,
    InvalidValueError,
    InvalidWindowError,
    MetricsError,
    MonitorClosedError,
    ServiceLimitError,
    StorageError,
    StorageLockedError,
    StorageWarning,
    UnknownServiceError,
)
from .alerts import AlertManager, AlertRule, Notifier, NotifyTarget
from .incidents import CellState, Incident
from .jobs import Job, JobRow, JobStats, VramFit
from .monitor import Monitor
from .shared import SharedHandle, shared
from .storage import Retention
from .timing import timed

#: Windows with a name; any number of seconds up to the longest tier works too.
WINDOWS: tuple[str, ...] = ("1m", "5m", "15m", "1h", "6h", "24h")

#: Longer windows, available when the monitor has storage (30 days of hours).
LONG_WINDOWS: tuple[str, ...] = ("7d", "30d")

#: Gauges accepted by ``Service.set_resource`` (from the engine).
GAUGES: tuple[str, ...] = tuple(_core.GAUGES)

#: Metrics accepted by ``Monitor.series`` and ``Monitor.compare`` (from the engine).
METRICS: tuple[str, ...] = tuple(_core.METRICS)

__all__ = [
    "AlertManager",
    "AlertRule",
    "CellState",
    "DEFAULT_COMPRESSION",
    "GAUGES",
    "METRICS",
    "WINDOWS",
    "ClockError",
    "ConfigError",
    "DecodeError",
    "ExportError",
    "GaugeStats",
    "Incident",
    "InvalidConfigError",
    "InvalidMetricError",
    "InvalidNameError",
    "InvalidValueError",
    "InvalidWindowError",
    "Job",
    "JobRow",
    "JobStats",
    "LONG_WINDOWS",
    "MetricsError",
    "Monitor",
    "Notifier",
    "NotifyTarget",
    "MonitorClosedError",
    "Retention",
    "Service",
    "ServiceLimitError",
    "ServiceStats",
    "SharedHandle",
    "StorageError",
    "StorageLockedError",
    "StorageWarning",
    "TDigest",
    "UnknownServiceError",
    "VramFit",
    "__version__",
    "errors",
    "shared",
    "timed",
]
