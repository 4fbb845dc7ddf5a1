"""The LLM tracker's bucket store against a brute-force oracle.

The store keeps each model's minute and hour buckets in rings of array
rows that grow as buckets arrive (``llm/_buckets.py``).  Whatever the order
and spread of the requests -- bursts, gaps of days, requests stamped in the
past, many models -- a window's sums must equal the sums of every request
whose bucket starts inside it, computed here from a plain list.
"""

from __future__ import annotations

import math
from dataclasses import fields

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from movie_director_metrics.llm._buckets import HOUR, HOUR_RETENTION_S, MINUTE, MINUTE_RETENTION_S, Agg, BucketStore

T0 = 1_767_225_600  # 2026-01-01 00:00 UTC
WINDOWS = (60, 300, 3600, 6 * HOUR, MINUTE_RETENTION_S, 7 * 86_400, HOUR_RETENTION_S)
KEYS = (("openai", "gpt-4o"), ("anthropic", "claude"), ("ollama", "llama3"))


def one(requests: int, tokens: int, cost: float) -> Agg:
    return Agg(requests=requests, errors=requests // 3, input_uncached=tokens, output=tokens // 2, cost_usd=cost,
               cost_known=requests, gen_tokens=tokens // 2, gen_seconds=cost * 10)  # fmt: skip


def oracle(adds: list[tuple[tuple[str, str], float, Agg]], window_s: int, now: float) -> dict[tuple[str, str], Agg]:
    span = MINUTE if window_s <= MINUTE_RETENTION_S else HOUR
    out: dict[tuple[str, str], Agg] = {}
    for key, at_s, agg in adds:
        start = int(at_s // span) * span
        if now - window_s <= start <= now:
            out.setdefault(key, Agg()).merge(agg)
    return {k: a for k, a in out.items() if a.requests}


def assert_same(got: dict[tuple[str, str], Agg], want: dict[tuple[str, str], Agg], where: str) -> None:
    assert sorted(got) == sorted(want), where
    for key in want:
        for f in fields(Agg):
            g, w = getattr(got[key], f.name), getattr(want[key], f.name)
            if isinstance(w, float):
                assert math.isclose(g, w, rel_tol=1e-12, abs_tol=1e-12), (where, key, f.name, g, w)
            else:
                assert g == w and type(g) is int, (where, key, f.name, g, w)


step = st.tuples(
    st.integers(0, 3 * 86_400),                      # seconds the clock moves first
    st.sampled_from(KEYS),
    st.one_of(st.integers(0, 120), st.integers(0, 2 * 86_400), st.integers(0, 31 * 86_400)),  # age of the request
    st.integers(1, 5), st.integers(0, 10**6), st.floats(0, 1, allow_nan=False),
)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step, max_size=120))
def test_windows_equal_the_sums_of_their_requests(steps: list[tuple[int, tuple[str, str], int, int, int, float]]) -> None:
    store = BucketStore()
    adds: list[tuple[tuple[str, str], float, Agg]] = []
    now = float(T0)
    for move, key, age, n, tokens, cost in steps:
        now += move
        at_s = now - age
        store.prune(now)
        if store.add(key, at_s, one(n, tokens, cost), now, lifetime=True):
            adds.append((key, at_s, one(n, tokens, cost)))
        else:
            assert at_s < now - HOUR_RETENTION_S
    for w in WINDOWS:
        store.prune(now)
        assert_same(store.window(w, now), oracle(adds, w, now), f"window {w} s")


def test_a_busy_month_grows_each_ring_to_its_retention_and_no_further() -> None:
    """A request every minute for 31 days: the minute ring ends at 1,441
    rows and the hour ring at 721, and every window is still exact."""
    store = BucketStore()
    adds = []
    now = float(T0)
    for k in range(31 * 1440):
        now = T0 + 60.0 * k + 7
        agg = one(1, k % 1000, 0.001)
        store.prune(now)
        store.add(KEYS[0], now, agg, now, lifetime=True)
        adds.append((KEYS[0], now, agg))
    assert len(store.minutes[KEYS[0]].starts) == MINUTE_RETENTION_S // MINUTE + 1
    assert len(store.hours[KEYS[0]].starts) == HOUR_RETENTION_S // HOUR + 1
    # The 7 counters this model reports (no errors, cache or reasoning tokens).
    assert store.nbytes() == (1441 + 721) * (8 + 8 * 7)
    for w in WINDOWS:
        assert_same(store.window(w, now), oracle(adds, w, now), f"window {w} s")
    assert store.totals[KEYS[0]].requests == 31 * 1440


def test_a_counter_first_reported_late_gets_a_column_and_earlier_rows_keep_theirs() -> None:
    store = BucketStore()
    adds = []
    for k in range(300):
        at = T0 + 60.0 * k
        agg = one(1, 100, 0.01) if k < 200 else Agg(requests=1, errors=1, reasoning=7, cache_read=k)
        store.prune(at)
        store.add(KEYS[0], at, agg, at, lifetime=True)
        adds.append((KEYS[0], at, agg))
        if k == 199:
            assert len(store.minutes[KEYS[0]].cols) == 7
    assert len(store.minutes[KEYS[0]].cols) == 10
    now = T0 + 60.0 * 299
    for w in WINDOWS:
        assert_same(store.window(w, now), oracle(adds, w, now), f"window {w} s")


def test_a_model_idle_past_the_retention_is_dropped() -> None:
    store = BucketStore()
    store.add(KEYS[1], T0, one(1, 10, 0.1), T0, lifetime=True)
    assert KEYS[1] in store.minutes and KEYS[1] in store.hours
    store.prune(T0 + MINUTE_RETENTION_S + MINUTE)
    assert KEYS[1] not in store.minutes and KEYS[1] in store.hours
    store.prune(T0 + HOUR_RETENTION_S + HOUR)
    assert KEYS[1] not in store.hours
    assert store.totals[KEYS[1]].requests == 1  # lifetime totals stay


@pytest.mark.parametrize(("requests", "max_rows"), [(8, 64), (32, 256)])
def test_a_sparse_model_keeps_a_small_ring(requests: int, max_rows: int) -> None:
    """A model used every 3 hours holds a ring of tens of rows (a few KiB),
    not the 1,441 a busy one needs."""
    store = BucketStore()
    for k in range(requests):
        at = T0 + k * 3 * HOUR
        store.add(KEYS[2], at, one(1, 5, 0.0), at, lifetime=True)
    assert len(store.minutes[KEYS[2]].starts) <= max_rows
    assert store.nbytes() <= 2 * max_rows * (8 + 8 * len(fields(Agg)))
