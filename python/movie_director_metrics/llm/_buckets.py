"""Per-model counters in time buckets: 1-minute buckets for 24 h, 1-hour
buckets for 30 days, and lifetime totals.

Every request is added to its minute bucket *and* its hour bucket, so a
window answered from hours is exact to the hour and nothing is re-folded
when minutes expire.

A model's buckets are rows of one float64 array per resolution, a ring
indexed by bucket start (``start // span % slots``), with each row's start
kept beside it: at most 104 bytes per bucket, where a Python object per
bucket with its numbers took ~450.  A ring holds only the columns its
model has used (a column is added, for every row, the first time a
request has a non-zero value in it): most models never report cache or
reasoning tokens, and errors are rare, so a typical row is 7 of the 12
counters.  A ring starts with 16 rows and grows fourfold
when two live buckets would share a row, up to the retention's whole span
(1,441 minutes, 721 hours: at most ~225 KiB for a model busy all month,
~135 KiB with 7 columns).  Counts
are whole numbers held exactly in float64 (up to 2**53).  Models with no
bucket left in a resolution's retention are dropped from it.

Not thread-safe by itself: :class:`~.tracker.LlmTracker` holds a lock
around every call.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

MINUTE = 60
HOUR = 3600
MINUTE_RETENTION_S = 24 * HOUR
HOUR_RETENTION_S = 30 * 24 * HOUR

Key = tuple[str, str]  # (provider, model)


@dataclass(slots=True)
class Agg:
    """Counters of a set of requests.  Token counts cover requests whose
    usage was known; ``cost_usd`` covers the ``cost_known`` priced ones."""

    requests: int = 0
    errors: int = 0
    usage_unknown: int = 0
    input_uncached: int = 0
    cache_read: int = 0
    cache_write: int = 0
    output: int = 0
    reasoning: int = 0
    cost_usd: float = 0.0
    cost_known: int = 0
    gen_tokens: int = 0  # output tokens of requests with a known generation rate
    gen_seconds: float = 0.0  # their generation time

    def merge(self, other: Agg) -> None:
        for name in _AGG_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def copy(self) -> Agg:
        out = Agg()
        out.merge(self)
        return out

    @property
    def unpriced(self) -> int:
        return self.requests - self.cost_known

    @property
    def tokens(self) -> int:
        return self.input_uncached + self.cache_read + self.cache_write + self.output


_AGG_FIELDS = tuple(f.name for f in fields(Agg))


_INT_FIELDS = frozenset(f.name for f in fields(Agg) if f.type in ("int", int))


def _vector(agg: Agg) -> tuple[npt.NDArray[np.float64], int]:
    """The counters as a row, and the bitmask of the non-zero ones."""
    values = [getattr(agg, name) for name in _AGG_FIELDS]
    nonzero = sum(1 << i for i, v in enumerate(values) if v)
    return np.array(values, dtype=np.float64), nonzero


def _agg(vector: npt.NDArray[np.float64]) -> Agg:
    out = Agg()
    for name, v in zip(_AGG_FIELDS, vector.tolist()):
        setattr(out, name, int(v) if name in _INT_FIELDS else v)
    return out


class _Ring:
    """One model's buckets at one resolution (see the module doc)."""

    __slots__ = ("span", "max_slots", "starts", "values", "cols", "used")

    #: Bit ``i`` of ``used``: column ``_AGG_FIELDS[i]`` is in ``values``.
    used: int

    def __init__(self, span: int, retention_s: int, slots: int = 16) -> None:
        self.span = span
        #: Enough rows for every bucket start in [now - retention, now].
        self.max_slots = retention_s // span + 1
        slots = min(slots, self.max_slots)
        self.starts = np.full(slots, -1, dtype=np.int64)  # -1: an empty row
        #: The columns (indices into ``_AGG_FIELDS``) ``values`` holds.
        self.cols = np.zeros(0, dtype=np.intp)
        self.used = 0
        self.values = np.zeros((slots, 0), dtype=np.float64)

    def _widen(self, used: int) -> None:
        """Adds the columns of bitmask ``used`` that the ring lacks."""
        cols = np.array([i for i in range(len(_AGG_FIELDS)) if used >> i & 1], dtype=np.intp)
        values = np.zeros((len(self.starts), len(cols)), dtype=np.float64)
        values[:, np.searchsorted(cols, self.cols)] = self.values
        self.used, self.cols, self.values = used, cols, values

    def add(self, start: int, full: npt.NDArray[np.float64], nonzero: int, cutoff: float) -> None:
        """Adds ``full`` (every counter; bitmask ``nonzero`` of its non-zero
        ones) to the bucket at ``start``; buckets starting before ``cutoff``
        have expired and their rows are free."""
        if nonzero & ~self.used:
            self._widen(self.used | nonzero)
        self._add(start, full.take(self.cols), cutoff)

    def _add(self, start: int, vector: npt.NDArray[np.float64], cutoff: float) -> None:
        i = (start // self.span) % len(self.starts)
        held = int(self.starts[i])
        if held == start:
            self.values[i] += vector
            return
        if held >= cutoff and len(self.starts) < self.max_slots:
            self._grow(cutoff)  # two live buckets for one row: more rows
            self._add(start, vector, cutoff)
            return
        # An empty or expired row is free.  At full size a live row's start
        # differs from ``start`` by the whole retention, so one of the two
        # is at its edge: the newer bucket is kept, an older one is as good
        # as expired.
        if held < start or held < cutoff:
            self.starts[i] = start
            self.values[i] = vector

    def _grow(self, cutoff: float) -> None:
        live = self.starts >= max(cutoff, 0)  # empty rows hold -1
        order = np.argsort(self.starts[live], kind="stable")
        starts, values = self.starts[live][order], self.values[live][order]
        slots = min(len(self.starts) * 4, self.max_slots)
        self.starts = np.full(slots, -1, dtype=np.int64)
        self.values = np.zeros((slots, len(self.cols)), dtype=np.float64)
        for start, vector in zip(starts.tolist(), values):
            self._add(start, vector, cutoff)

    def latest(self) -> int:
        return int(self.starts.max())

    def total(self, lo: float, hi: float) -> npt.NDArray[np.float64] | None:
        """Sum of the buckets starting in ``[lo, hi]``, None when none does."""
        mask = (self.starts >= lo) & (self.starts <= hi)
        if not mask.any():
            return None
        total = np.zeros(len(_AGG_FIELDS), dtype=np.float64)
        total[self.cols] = self.values[mask].sum(axis=0)
        return total

    def nbytes(self) -> int:
        return int(self.starts.nbytes + self.values.nbytes)


class BucketStore:
    """Minute and hour buckets per (provider, model), plus lifetime totals."""

    def __init__(self) -> None:
        self.minutes: dict[Key, _Ring] = {}
        self.hours: dict[Key, _Ring] = {}
        self.totals: dict[Key, Agg] = {}
        self._pruned_minute = -1

    def add(self, key: Key, at_s: float, one: Agg, now: float, *, lifetime: bool) -> bool:
        """Adds one request's counters at ``at_s``; False (nothing added to
        the buckets) when it is older than the hour buckets keep."""
        if lifetime:
            self.totals.setdefault(key, Agg()).merge(one)
        if at_s < now - HOUR_RETENTION_S:
            return False
        vector, nonzero = _vector(one)
        if at_s >= now - MINUTE_RETENTION_S:
            ring = self.minutes.get(key) or self.minutes.setdefault(key, _Ring(MINUTE, MINUTE_RETENTION_S))
            ring.add(int(at_s // MINUTE) * MINUTE, vector, nonzero, now - MINUTE_RETENTION_S)
        ring = self.hours.get(key) or self.hours.setdefault(key, _Ring(HOUR, HOUR_RETENTION_S))
        ring.add(int(at_s // HOUR) * HOUR, vector, nonzero, now - HOUR_RETENTION_S)
        return True

    def prune(self, now: float) -> None:
        """Drops the models with no bucket left in a retention; cheap unless
        the minute changed.  (Expired rows inside a ring are reused by
        :meth:`_Ring.add` and never summed.)"""
        minute = int(now // MINUTE)
        if minute == self._pruned_minute:
            return
        self._pruned_minute = minute
        for store, keep_s in ((self.minutes, MINUTE_RETENTION_S), (self.hours, HOUR_RETENTION_S)):
            cutoff = now - keep_s
            for key in [k for k, ring in store.items() if ring.latest() < cutoff]:
                del store[key]

    def window(self, window_s: float, now: float) -> dict[Key, Agg]:
        """Sums per key of the buckets starting within ``window_s`` of ``now``:
        minutes up to 24 h, hours beyond.  Whole buckets, so the covered
        span may start up to one bucket after ``now - window_s``."""
        store = self.minutes if window_s <= MINUTE_RETENTION_S else self.hours
        out: dict[Key, Agg] = {}
        for key, ring in store.items():
            total = ring.total(now - window_s, now)
            if total is not None:
                acc = _agg(total)
                if acc.requests:
                    out[key] = acc
        return out

    def nbytes(self) -> int:
        """Bytes the bucket arrays hold."""
        return sum(r.nbytes() for store in (self.minutes, self.hours) for r in store.values())
