"""Typed interface of the Rust extension; the user documentation lives here."""

from collections.abc import Sequence
from typing import Any, final, TypeAlias

import numpy as np
import numpy.typing as npt
from typing import Self

__all__ = [
    "DEFAULT_COMPRESSION",
    "GAUGES",
    "GaugeStats",
    "MAX_DURATION_MS",
    "MAX_ERROR_TYPES",
    "MAX_NAME_CHARS",
    "MAX_SERVICES_LIMIT",
    "METRICS",
    "Monitor",
    "OCTAVE_UPPER_MS",
    "Service",
    "ServiceStats",
    "StoredBucket",
    "TDigest",
    "__version__",
    "parse_window",
    "record_each",
    "_stress_record_from_rust_threads",
]

__version__: str

#: A bucket read back from a file, to restore: (start epoch s, count,
#: errors, sum ms, min ms, max ms, blob).
_RestoreRow: TypeAlias = tuple[int, int, int, float, float, float, bytes | None]
#: Compression of ``TDigest()``: worst relative error ≤ 0.5 % at
#: p50…p99.9 on lognormal, bimodal, Pareto(1.5) and sorted data (1e6
#: values), ~2 KiB serialized.
DEFAULT_COMPRESSION: float
#: Gauge names ``Service.set_resource`` accepts.
GAUGES: list[str]
#: Metric names ``Monitor.series`` and ``Monitor.compare`` accept.
METRICS: list[str]
#: Upper edge in ms of each entry of ``Service.totals()``'s
#: ``latency_octaves``/``processing_octaves``: ``2**(j - 10)``.
OCTAVE_UPPER_MS: list[float]
#: Longest duration (latency, processing) a service accepts, in ms.
MAX_DURATION_MS: float
#: Longest service name, in characters.
MAX_NAME_CHARS: int
#: Most services ``max_services`` can allow.
MAX_SERVICES_LIMIT: int
#: Error types a service names; later new types count as ``"other"``.
MAX_ERROR_TYPES: int

def record_each(
    services: tuple[Service, ...], latency_ms: float, ok: bool = True, error: str | None = None
) -> None:
    """``Service.record`` into each of ``services`` with one call (a job's
    service, model and workflow series).  Everything is checked first: a
    bad value or handle records into none."""

def parse_window(window: str | float, max_s: int = ...) -> int:
    """Seconds of a window: ``"90s"``, ``"5m"``, ``"5min"``, ``"1h"``,
    ``"7d"`` or a number of seconds, from 1 to ``max_s`` (default 400
    days).  The one window grammar of the package: ``Monitor.stats`` and
    every other window argument use it.  ``InvalidWindowError`` names the
    value and what was expected."""

@final
class GaugeStats:
    """Readings of one resource gauge within a window."""

    @property
    def last(self) -> float | None:
        """Latest reading inside the window."""
    @property
    def avg(self) -> float: ...
    @property
    def min(self) -> float: ...
    @property
    def max(self) -> float: ...
    @property
    def samples(self) -> int: ...

@final
class ServiceStats:
    """Statistics of one service over one window (frozen).

    Fields with no data in the window are ``None``, never a zero that looks
    real.  Percentiles come from merged t-digests of exact log-linear bins
    (bin error ≤ 0.39 %); count, errors, avg, min and max are exact.

    The window covers whole buckets of the tier that answers it, so it may
    start a little after ``end - window_s``: exactly for windows up to
    5 min, within 10 s up to 1 h, within 1 min beyond.  ``start``/``end``
    are the UTC epoch seconds actually covered.
    """

    @property
    def service(self) -> str: ...
    @property
    def window_s(self) -> int:
        """The window asked for, in seconds."""
    @property
    def start(self) -> float:
        """UTC epoch seconds where the covered data starts."""
    @property
    def end(self) -> float:
        """UTC epoch seconds of the query (now)."""
    @property
    def count(self) -> int:
        """Requests recorded (successes and failures)."""
    @property
    def errors(self) -> int:
        """Failed requests."""
    @property
    def success_rate(self) -> float | None:
        """Successful / all requests, from 0 to 1."""
    @property
    def rpm(self) -> float:
        """Requests per minute over the covered span."""
    @property
    def peak_rpm(self) -> float | None:
        """Most requests in one aligned UTC minute of the window."""
    @property
    def peak_rpm_at(self) -> float | None:
        """Start (UTC epoch seconds) of that minute."""
    @property
    def avg_ms(self) -> float | None: ...
    @property
    def min_ms(self) -> float | None: ...
    @property
    def max_ms(self) -> float | None: ...
    @property
    def p50_ms(self) -> float | None: ...
    @property
    def p90_ms(self) -> float | None: ...
    @property
    def p95_ms(self) -> float | None: ...
    @property
    def p99_ms(self) -> float | None: ...
    @property
    def error_counts(self) -> dict[str, int]:
        """Failures per error type, most frequent first.  32 distinct types
        are kept per service; later new types count under ``"other"``."""
    @property
    def last_error(self) -> str | None:
        """Type of the latest failure inside the window."""
    @property
    def last_error_at(self) -> float | None: ...
    @property
    def uptime_pct(self) -> float | None:
        """Time-weighted uptime from health results: 100·up/(up+down).

        A result vouches for its state until the next result or for
        ``health_ttl_s`` seconds, whichever is first; time no result vouches
        for is unknown and counts neither way.  ``None`` when nothing is known.
        """
    @property
    def uptime_known_s(self) -> int:
        """Seconds of the window some health result vouched for."""
    @property
    def health_checks(self) -> int: ...
    @property
    def up(self) -> bool | None:
        """Latest health state, ``None`` if no result vouches for now."""
    @property
    def last_health_at(self) -> float | None: ...
    @property
    def health_latency_ms(self) -> float | None:
        """Mean latency of health probes in the window."""
    @property
    def queue_running(self) -> int | None:
        """Latest reported running jobs inside the window."""
    @property
    def queue_pending(self) -> int | None: ...
    @property
    def queue_depth_avg(self) -> float | None:
        """Mean of running+pending over the reports in the window."""
    @property
    def queue_depth_max(self) -> int | None: ...
    @property
    def processing_count(self) -> int: ...
    @property
    def processing_avg_ms(self) -> float | None: ...
    @property
    def processing_p50_ms(self) -> float | None: ...
    @property
    def processing_p95_ms(self) -> float | None: ...
    @property
    def resources(self) -> dict[str, GaugeStats]:
        """Gauges reported in the window, e.g. ``"vram_used_bytes"``."""
    def as_dict(self) -> dict[str, object]:
        """All fields as plain Python values, in a stable order."""

@final
class StoredBucket:
    """A sealed bucket of one tier, as ``Service.stored_buckets`` gives it
    and ``Service.restore_buckets`` takes it back (frozen)."""

    @property
    def start_s(self) -> int:
        """UTC epoch seconds the bucket starts at."""
    @property
    def count(self) -> int: ...
    @property
    def errors(self) -> int: ...
    @property
    def sum_ms(self) -> float: ...
    @property
    def min_ms(self) -> float:
        """Meaningless (0) when ``count`` is 0."""
    @property
    def max_ms(self) -> float: ...
    @property
    def blob(self) -> bytes | None:
        """The engine's compact bytes (digests, queue, gauges, health)."""
    @property
    def partial(self) -> bool:
        """The bucket still being built (``include_building``)."""
    @property
    def error_counts(self) -> list[tuple[int, int]]:
        """``(error id, count)`` pairs, in the ids storage asked for."""

@final
class Service:
    """Recording handle of one service.  Thread-safe and lock-free: call it
    from any thread; it never waits for a reader."""

    @property
    def name(self) -> str: ...
    def record(self, latency_ms: float, ok: bool = True, error: str | None = None) -> None:
        """Records one request.

        ``ok=False`` marks a failure of type ``error`` (default ``"error"``).
        Raises ``InvalidValueError`` (a ``ValueError``) for NaN, ±inf,
        negative or > 1e9 ms latencies, recording nothing.
        """
    def record_many(
        self,
        latencies_ms: npt.NDArray[np.float64],
        ok: npt.NDArray[np.bool_] | None = None,
        error: str = "error",
    ) -> None:
        """Records a batch at the current time, zero-copy, with the GIL
        released.  A bad element rejects the whole batch; the error names
        its index."""
    def set_queue(self, running: int = 0, pending: int = 0) -> None:
        """Current queue: jobs running and waiting."""
    def record_processing(self, ms: float) -> None:
        """Time a job spent executing (separate from request latency)."""
    def set_resource(self, **gauges: float) -> None:
        """Resource readings, e.g. ``vram_used_bytes=6.1e9, gpu_temp_c=64``.

        Gauges: vram_used_bytes, vram_total_bytes, ram_used_bytes,
        ram_total_bytes, cpu_pct, gpu_util_pct, gpu_temp_c, gpu_power_w.
        """
    def health(self, up: bool, latency_ms: float | None = None) -> None:
        """A health-check result, with the probe's latency if measured."""
    def stats(self, window: str | float | None = None) -> ServiceStats:
        """Same as ``Monitor.stats(self.name, window)``."""
    def totals(self) -> dict[str, Any]:
        """Lifetime counts since the service was created, for monotonic
        counters: ``count``, ``errors``, ``sum_ms``, ``error_counts``
        (``[(type, n)]``, most frequent first), ``processing_count``,
        ``processing_sum_ms``, ``health_up``, ``health_down``, and
        ``latency_octaves``/``processing_octaves``: counts per power of two
        (entry ``j`` ends at ``OCTAVE_UPPER_MS[j]``), exact sums of the
        engine's bins, for histograms."""
    def error_types(self) -> list[str]:
        """Error-type names in id order (the ids stored buckets use)."""
    def stored_buckets(
        self,
        resolution_s: int,
        since: int = 0,
        include_building: bool = False,
        error_ids: Sequence[int] | None = None,
    ) -> list[StoredBucket]:
        """Storage hook: sealed buckets of the tier with ``resolution_s``
        starting at or after ``since`` (UTC epoch seconds), oldest first, as
        ``StoredBucket`` objects.  A bucket whose span has ended is included;
        with ``include_building`` so is the one still being built
        (``partial=True``), after sealing the second still open.
        ``error_ids[live id]`` renumbers error types to the ids storage
        knows them by (ids past the list become "other").
        ``InvalidValueError`` for a resolution the monitor has no tier of."""
    def restore_buckets(
        self, resolution_s: int, rows: Sequence[StoredBucket | _RestoreRow], error_types: Sequence[str]
    ) -> dict[str, int]:
        """Storage hook: puts stored buckets back: ``StoredBucket`` objects
        as ``stored_buckets`` gave them, or rows read back from a file
        ``(start, count, errors, sum_ms, min_ms, max_ms, blob)``.
        ``error_types`` are the writer's names in id order; ids are
        renumbered if this service numbers them differently.  Buckets are
        checked first: malformed ones are counted as ``rejected``, ones
        outside the tier's window as ``out_of_window``, never trusted."""
    def stored_health(self, since: int = 0) -> list[tuple[int, int, bool]]:
        """Storage hook: health runs ``(first, last, up)`` (UTC epoch
        seconds) that still vouch for time at or after ``since``."""
    def restore_health(self, runs: Sequence[tuple[int, int, bool]]) -> int:
        """Storage hook: puts stored health runs back before newer results;
        returns how many were kept (overlapping runs are skipped)."""

@final
class Monitor:
    """Registry of services with tiered retention and dashboard reads.

    Default tiers: 300 × 1 s (5 min), 360 × 10 s (1 h), 1440 × 1 min (24 h);
    ``tiers`` takes ``[(resolution_s, slots), ...]`` from fine to coarse,
    each resolution a multiple of the previous one and each window longer.

    With ``manual_clock=True`` time only moves by ``advance()``: for tests
    and simulations.  Otherwise a background thread folds ended seconds into
    the tiers every 250 ms; ``close()`` (or ``with Monitor() as m:``) stops it.

    Windows are ``"1m"``, ``"5m"``, ``"15m"``, ``"1h"``, ``"6h"``, ``"24h"``,
    any ``"<n>s|m|h|d"``, or a number of seconds; default ``"5m"``.
    """

    def __new__(
        cls,
        *,
        tiers: Sequence[tuple[int, int]] | None = None,
        max_services: int = 64,
        health_ttl_s: int = 60,
        manual_clock: bool = False,
        start_time: float | None = None,
        bucket_compression: float | None = None,
        archive_compression: float | None = None,
        query_compression: float | None = None,
    ) -> Self: ...
    @property
    def tiers(self) -> list[tuple[int, int]]: ...
    @property
    def max_services(self) -> int: ...
    @property
    def health_ttl_s(self) -> int: ...
    @property
    def manual_clock(self) -> bool: ...
    def service(self, name: str) -> Service:
        """The handle of ``name`` (1–64 printable characters), created on
        first use.  ``InvalidNameError`` for any other name (a lone surrogate
        included: it is not UTF-8); ``ServiceLimitError`` past
        ``max_services``."""
    def services(self) -> list[str]:
        """Service names in creation order."""
    def stats(self, service: str, window: str | float | None = None) -> ServiceStats:
        """Statistics of one service over the window ending now."""
    def snapshot(self, window: str | float | None = None) -> dict[str, ServiceStats]:
        """Every service's statistics in one call, in creation order."""
    def series(
        self,
        service: str,
        metric: str,
        window: str | float | None = None,
        points: int | None = None,
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """A chart of ``metric``: (UTC epoch seconds of each span's start,
        values), NaN where a span has no data.  One span per bucket of the
        finest tier covering the window, or ``points`` equal spans."""
    def series_stats(
        self,
        service: str,
        window: str | float | None = None,
        points: int | None = None,
        resolution_s: int | None = None,
    ) -> list[ServiceStats]:
        """Full statistics per span of the window: one per bucket of the
        finest tier covering it (or of the tier with ``resolution_s``), or
        ``points`` equal spans."""
    def compare(self, metric: str, window: str | float | None = None) -> list[tuple[str, float | None]]:
        """Services ranked best first by ``metric`` (lower latency, higher
        success rate/uptime/rpm); services without data last."""
    def memory_bytes(self) -> int:
        """Bytes the engine holds for all services."""
    def now(self) -> float:
        """UTC epoch seconds on this monitor's clock."""
    def advance(self, seconds: float) -> None:
        """Manual clock only: move time forward and seal what ended."""
    def close(self) -> None:
        """Stops the background sealer after a last seal (idempotent)."""
    def __enter__(self) -> Monitor: ...
    def __exit__(self, *exc: object) -> bool: ...

@final
class TDigest:
    """Merging t-digest (Dunning & Ertl), k2 scale, exact min/max.

    Measured worst relative error at p50…p99.9 on 1e6 values of lognormal,
    bimodal, Pareto(1.5) and sorted lognormal data (see the README table):
    compression 100: 1.97 %, 200: 0.45 %, 300: 0.15 %, 500 (default): 0.27 %
    worst case, 0.08 % at p50…p99.  Not thread-safe: one owner at a time.
    """

    def __new__(cls, compression: float = ...) -> Self:
        """``compression`` in [10, 10000]; more is more accurate and larger."""
    def update(self, value: float) -> None:
        """Adds one finite value (``InvalidValueError`` otherwise)."""
    def update_many(self, values: npt.NDArray[np.float64]) -> None:
        """Adds an array, zero-copy with the GIL released; all or nothing."""
    def quantile(self, q: float) -> float | None:
        """Value at quantile ``q`` in [0, 1]; ``None`` when empty."""
    def cdf(self, x: float) -> float | None:
        """Fraction of values ≤ ``x`` (interpolated); ``None`` when empty."""
    def merge(self, other: TDigest) -> None:
        """Adds ``other``'s values into this digest."""
    @property
    def count(self) -> int: ...
    @property
    def min(self) -> float | None: ...
    @property
    def max(self) -> float | None: ...
    @property
    def sum(self) -> float: ...
    @property
    def compression(self) -> float: ...
    @property
    def centroid_count(self) -> int: ...
    @property
    def nbytes(self) -> int:
        """Bytes of memory the digest holds (``len(to_bytes())`` is its
        serialized size)."""
    def to_bytes(self) -> bytes:
        """Versioned compact serialization."""
    @classmethod
    def from_bytes(cls, data: bytes) -> TDigest:
        """Inverse of ``to_bytes``; ``DecodeError`` on invalid input."""
    def __reduce__(self) -> tuple[object, tuple[bytes]]: ...
    def __len__(self) -> int: ...

def _stress_record_from_rust_threads(
    service: Service, threads: int, per_thread: int, error_every: int = 0
) -> None: ...
