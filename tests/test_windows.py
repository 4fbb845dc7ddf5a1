"""Time behaviour with a driven clock: window expiry, tier roll-off,
uptime arithmetic, series and compare."""

from __future__ import annotations

import math

import numpy as np
import pytest

from movie_director_metrics import Monitor

T0 = 1_700_000_040.0  # a whole UTC minute: buckets align to UTC


@pytest.fixture
def mon() -> Monitor:
    return Monitor(manual_clock=True, start_time=T0)


def test_window_expiry_follows_time_not_count(mon: Monitor) -> None:
    s = mon.service("a")
    s.record(10.0)
    mon.advance(59)
    s.record(20.0)
    assert mon.stats("a", "1m").count == 2
    mon.advance(1)
    assert mon.stats("a", "1m").count == 1, "the first record is 60 s old"
    mon.advance(299)
    assert mon.stats("a", "5m").count == 0
    assert mon.stats("a", "1h").count == 2
    mon.advance(3600)
    assert mon.stats("a", "1h").count == 0
    assert mon.stats("a", "24h").count == 2
    mon.advance(86_400)
    assert mon.stats("a", "24h").count == 0


def test_start_end_report_covered_span(mon: Monitor) -> None:
    s = mon.service("a")
    mon.advance(7200)
    s.record(1.0)
    st = mon.stats("a", "5m")
    assert st.end == pytest.approx(T0 + 7200)
    assert st.start == pytest.approx(T0 + 7200 + 1 - 300)
    st = mon.stats("a", "24h")
    assert st.start == pytest.approx(T0, abs=60), "the monitor is younger than the window"


def test_rpm_and_peak_minute(mon: Monitor) -> None:
    s = mon.service("a")
    mon.advance(60)  # start of a minute boundary: T0 + 60
    for n in [10, 40, 20]:
        for _ in range(n):
            s.record(5.0)
        mon.advance(60)
    st = mon.stats("a", "5m")
    assert st.count == 70
    assert st.peak_rpm == 40.0
    assert st.peak_rpm_at == T0 + 120
    assert st.rpm == pytest.approx(70 / ((st.end - st.start) / 60))


def test_uptime_time_weighted_with_unknown_gaps() -> None:
    m = Monitor(manual_clock=True, start_time=T0, health_ttl_s=30)
    s = m.service("a1111")
    # 0..600 s up (every 10 s), 600..900 down, then 600 s of silence, then up.
    for _ in range(60):
        s.health(True, latency_ms=4.0)
        m.advance(10)
    for _ in range(30):
        s.health(False)
        m.advance(10)
    m.advance(600)
    s.health(True)
    st = m.stats("a1111", "1h")
    # up: [0, 600) + the latest result's current second = 601;
    # down: [600, 890 + 30) = 320; the silence after that is unknown.
    assert st.uptime_known_s == 601 + 320
    assert st.uptime_pct == pytest.approx(100 * 601 / 921)
    assert st.up is True
    assert st.health_checks == 91
    assert st.health_latency_ms == pytest.approx(4.0)
    m.advance(31)
    assert m.stats("a1111", "1h").up is None, "a result older than the ttl vouches for nothing"


def test_uptime_none_without_health_results(mon: Monitor) -> None:
    mon.service("x").record(3.0)
    assert mon.stats("x").uptime_pct is None
    assert mon.stats("x").uptime_known_s == 0


def test_series_shapes_timestamps_and_nan(mon: Monitor) -> None:
    s = mon.service("a")
    for i in range(100):
        if i % 10 == 0:
            s.record(100.0 + i)
        mon.advance(1)
    t, v = mon.series("a", "avg_ms", "5m")
    assert t.dtype == np.float64 and v.dtype == np.float64
    assert len(t) == 300
    assert np.all(np.diff(t) == 1.0)
    assert t[-1] == pytest.approx(mon.now() // 1 * 1.0 - 0.0, abs=1.0)
    finite = v[~np.isnan(v)]
    assert list(finite) == [100.0 + i for i in range(0, 100, 10)]
    t2, c2 = mon.series("a", "count", "5m", points=30)
    assert len(t2) == 30 and np.all(np.diff(t2) == 10.0)
    assert np.nansum(c2) == 10
    t3, _ = mon.series("a", "p95_ms", "1h")
    assert len(t3) == 360 and np.all(np.diff(t3) == 10.0)
    t4, _ = mon.series("a", "count", "24h", points=48)
    assert len(t4) == 48 and np.all(np.diff(t4) == 1800.0)


def test_series_success_rate_and_uptime(mon: Monitor) -> None:
    s = mon.service("a")
    for i in range(20):
        s.record(1.0, ok=i % 4 != 0)
        s.health(i < 10)
        mon.advance(1)
    # now = T0 + 20: the 1 min window is [T0 - 39, T0 + 21) in two 30 s
    # spans; the first is before the monitor existed.
    t, sr = mon.series("a", "success_rate", "1m", points=2)
    assert list(t) == [T0 - 39, T0 - 9]
    assert math.isnan(sr[0]) and sr[1] == pytest.approx(0.75)
    _, up = mon.series("a", "uptime_pct", "1m")
    known = up[~np.isnan(up)]
    assert set(known) == {0.0, 100.0}
    assert np.count_nonzero(known == 100.0) == 10


def test_compare_ranks_best_first(mon: Monitor) -> None:
    for name, ms, fail in [("slow", 900.0, 0), ("fast", 90.0, 3), ("mid", 300.0, 1)]:
        h = mon.service(name)
        for i in range(10):
            h.record(ms, ok=i >= fail)
    mon.service("silent")
    assert [n for n, _ in mon.compare("p95_ms")] == ["fast", "mid", "slow", "silent"]
    assert [n for n, _ in mon.compare("success_rate")] == ["slow", "mid", "fast", "silent"]
    assert mon.compare("avg_ms")[-1] == ("silent", None)


def test_tier_rolloff_keeps_memory_flat(mon: Monitor) -> None:
    s = mon.service("a")
    for _ in range(90):
        s.record_many(np.full(50, 20.0))
        mon.advance(60)
    first = mon.memory_bytes()
    for _ in range(1440 + 60):
        s.record_many(np.full(50, 20.0))
        mon.advance(60)
    full = mon.memory_bytes()
    for _ in range(600):
        s.record_many(np.full(50, 20.0))
        mon.advance(60)
    later = mon.memory_bytes()
    assert full > first
    assert later <= full * 1.02, (full, later)
    # now sits on a minute boundary and the current minute is empty: the
    # 24 h window covers the 1439 whole minutes before it.
    assert mon.stats("a", "24h").count == 1439 * 50


def test_history_survives_a_long_pause(mon: Monitor) -> None:
    s = mon.service("a")
    s.record(1.0)
    mon.advance(10_000_000)
    s.record(2.0)
    st = mon.stats("a", "24h")
    assert st.count == 1 and st.max_ms == 2.0
    assert not math.isnan(st.start)
