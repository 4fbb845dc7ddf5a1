"""Per-model counters in time buckets: 1-minute buckets for 24 h, 1-hour
buckets for 30 days, and lifetime totals.

Every request is added to its minute bucket *and* its hour bucket, so a
window answered from hours is exact to the hour and nothing is re-folded
when minutes expire.  Memory is bounded: at most 1,440 + 720 buckets per
model (expired ones are dropped as time moves), each a fixed set of numbers.
Not thread-safe by itself: :class:`~.tracker.LlmTracker` holds a lock
around every call.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

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


class BucketStore:
    """Minute and hour buckets per (provider, model), plus lifetime totals."""

    def __init__(self) -> None:
        self.minutes: dict[Key, dict[int, Agg]] = {}
        self.hours: dict[Key, dict[int, Agg]] = {}
        self.totals: dict[Key, Agg] = {}
        self._pruned_minute = -1

    def add(self, key: Key, at_s: float, one: Agg, now: float, *, lifetime: bool) -> bool:
        """Adds one request's counters at ``at_s``; False (nothing added to
        the buckets) when it is older than the hour buckets keep."""
        if lifetime:
            self.totals.setdefault(key, Agg()).merge(one)
        if at_s < now - HOUR_RETENTION_S:
            return False
        if at_s >= now - MINUTE_RETENTION_S:
            m = int(at_s // MINUTE) * MINUTE
            self.minutes.setdefault(key, {}).setdefault(m, Agg()).merge(one)
        h = int(at_s // HOUR) * HOUR
        self.hours.setdefault(key, {}).setdefault(h, Agg()).merge(one)
        return True

    def prune(self, now: float) -> None:
        """Drops expired buckets; cheap unless the minute changed."""
        minute = int(now // MINUTE)
        if minute == self._pruned_minute:
            return
        self._pruned_minute = minute
        for store, keep_s in ((self.minutes, MINUTE_RETENTION_S), (self.hours, HOUR_RETENTION_S)):
            cutoff = now - keep_s
            for key in list(store):
                buckets = store[key]
                for start in [s for s in buckets if s < cutoff]:
                    del buckets[start]
                if not buckets:
                    del store[key]

    def window(self, window_s: float, now: float) -> dict[Key, Agg]:
        """Sums per key of the buckets starting within ``window_s`` of ``now``:
        minutes up to 24 h, hours beyond.  Whole buckets, so the covered
        span may start up to one bucket after ``now - window_s``."""
        store = self.minutes if window_s <= MINUTE_RETENTION_S else self.hours
        cutoff = now - window_s
        out: dict[Key, Agg] = {}
        for key, buckets in store.items():
            acc = Agg()
            for start, agg in buckets.items():
                if cutoff <= start <= now:
                    acc.merge(agg)
            if acc.requests:
                out[key] = acc
        return out
