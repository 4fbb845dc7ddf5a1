"""Every public call of Monitor/Service/ServiceStats, and every error path."""

from __future__ import annotations

import math

import numpy as np
import pytest

import movie_director_metrics as mdm
from movie_director_metrics import Monitor, errors

T0 = 1_700_000_000.0


@pytest.fixture
def mon() -> Monitor:
    return Monitor(manual_clock=True, start_time=T0)


def test_service_is_create_or_get(mon: Monitor) -> None:
    a = mon.service("comfyui")
    b = mon.service("comfyui")
    a.record(10.0)
    b.record(20.0)
    assert a.name == "comfyui"
    assert mon.services() == ["comfyui"]
    assert mon.stats("comfyui").count == 2
    assert repr(a) == 'Service("comfyui")'


@pytest.mark.parametrize(
    "bad, fragment",
    [("", "empty"), ("x" * 65, "65 characters"), ("a\nb", "not printable"), ("tab\t", "not printable")],
)
def test_bad_service_names_name_the_value(mon: Monitor, bad: str, fragment: str) -> None:
    with pytest.raises(errors.InvalidNameError) as ei:
        mon.service(bad)
    assert isinstance(ei.value, ValueError)
    assert repr(bad)[1:-1] in str(ei.value) or bad in str(ei.value)
    assert fragment in str(ei.value)


def test_unicode_and_64_char_names_are_fine(mon: Monitor) -> None:
    mon.service("é" * 64)
    mon.service("LM Studio @ 127.0.0.1:1234")


def test_service_limit_is_configurable() -> None:
    m = Monitor(manual_clock=True, max_services=3)
    for i in range(3):
        m.service(f"s{i}")
    with pytest.raises(errors.ServiceLimitError, match="maximum of 3"):
        m.service("one more")
    assert m.services() == ["s0", "s1", "s2"]
    assert Monitor().max_services == 64


def test_record_success_and_failures(mon: Monitor) -> None:
    s = mon.service("ollama")
    s.record(100.0)
    s.record(200.0, ok=True)
    s.record(5000.0, ok=False, error="timeout")
    s.record(50.0, ok=False)  # default error type
    st = mon.stats("ollama", "1m")
    assert (st.count, st.errors) == (4, 2)
    assert st.error_counts == {"timeout": 1, "error": 1}
    assert st.success_rate == pytest.approx(0.5)
    assert st.avg_ms == pytest.approx((100 + 200 + 5000 + 50) / 4)
    assert (st.min_ms, st.max_ms) == (50.0, 5000.0)
    assert st.last_error == "error"
    assert st.last_error_at == pytest.approx(T0, abs=1e-3)


def test_error_with_ok_true_is_rejected(mon: Monitor) -> None:
    s = mon.service("x")
    with pytest.raises(errors.InvalidValueError) as ei:
        s.record(1.5, ok=True, error="timeout")
    assert str(ei.value) == (
        "record(1.5, ok=True, error=\"timeout\") is contradictory: pass ok=False to record "
        "a failure of type \"timeout\"; nothing was recorded"
    )
    assert mon.stats("x").count == 0


def test_error_types_are_bounded_per_service(mon: Monitor) -> None:
    s = mon.service("flaky")
    for i in range(40):
        s.record(1.0, ok=False, error=f"e{i}")
    st = mon.stats("flaky")
    assert len(st.error_counts) == 33
    assert st.error_counts["other"] == 8
    assert sum(st.error_counts.values()) == 40


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -0.001, 1e9 + 1])
def test_bad_latency_records_nothing_and_names_the_range(mon: Monitor, bad: float) -> None:
    s = mon.service("x")
    s.record(5.0)
    with pytest.raises(errors.InvalidValueError) as ei:
        s.record(bad)
    assert "[0, 1e9]" in str(ei.value)
    assert isinstance(ei.value, ValueError) and isinstance(ei.value, errors.MetricsError)
    with pytest.raises(ValueError):
        s.record_processing(bad)
    with pytest.raises(ValueError):
        s.health(True, latency_ms=bad)
    st = mon.stats("x")
    assert (st.count, st.processing_count, st.health_checks) == (1, 0, 0)


def test_record_many_and_its_errors(mon: Monitor) -> None:
    s = mon.service("batch")
    x = np.array([1.0, 2.0, 3.0, 4.0])
    s.record_many(x)
    s.record_many(x, ok=np.array([True, False, True, False]), error="oom")
    s.record_many(np.arange(10.0)[::2])  # strided view is accepted
    st = mon.stats("batch")
    assert (st.count, st.errors) == (13, 2)
    assert st.error_counts == {"oom": 2}
    bad = np.array([1.0, 2.0, np.nan, 4.0])
    with pytest.raises(errors.InvalidValueError, match="index 2"):
        s.record_many(bad)
    with pytest.raises(errors.InvalidValueError, match="length"):
        s.record_many(x, ok=np.array([True]))
    with pytest.raises(TypeError):
        s.record_many([1.0, 2.0])  # type: ignore[arg-type]
    assert mon.stats("batch").count == 13, "a rejected batch records nothing"


def test_queue_processing_resources(mon: Monitor) -> None:
    s = mon.service("comfyui")
    s.set_queue(running=1, pending=3)
    s.set_queue(1, 0)
    s.record_processing(1500.0)
    s.record_processing(2500.0)
    s.set_resource(vram_used_bytes=6e9, vram_total_bytes=24e9, gpu_temp_c=61)
    st = mon.stats("comfyui")
    assert (st.queue_running, st.queue_pending) == (1, 0)
    assert (st.queue_depth_avg, st.queue_depth_max) == (2.5, 4)
    assert st.processing_count == 2
    assert st.processing_avg_ms == 2000.0
    assert st.processing_p50_ms == pytest.approx(2000.0, rel=0.02)
    g = st.resources["vram_used_bytes"]
    assert (g.last, g.avg, g.min, g.max, g.samples) == (6e9, 6e9, 6e9, 6e9, 1)
    assert set(st.resources) == {"vram_used_bytes", "vram_total_bytes", "gpu_temp_c"}
    assert repr(g) == "GaugeStats(last=6000000000, avg=6000000000, min=6000000000, max=6000000000, samples=1)"


def test_bad_resource_and_queue_input(mon: Monitor) -> None:
    s = mon.service("x")
    with pytest.raises(errors.InvalidMetricError, match="vram_used_bytes"):
        s.set_resource(vram=1.0)
    with pytest.raises(errors.InvalidValueError, match="cpu_pct"):
        s.set_resource(gpu_temp_c=50.0, cpu_pct=math.nan)
    with pytest.raises(errors.InvalidValueError):
        s.set_resource(cpu_pct="high")  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidValueError, match="queue running -1"):
        s.set_queue(running=-1)
    with pytest.raises(errors.InvalidValueError, match="queue pending"):
        s.set_queue(pending=2**33)
    assert mon.stats("x").resources == {}, "a rejected call keeps none of its readings"


def test_empty_window_is_none_not_zero(mon: Monitor) -> None:
    mon.service("idle")
    st = mon.stats("idle")
    assert (st.count, st.errors, st.health_checks, st.processing_count) == (0, 0, 0, 0)
    for f in ("success_rate", "avg_ms", "min_ms", "max_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms",
              "uptime_pct", "up", "queue_running", "queue_depth_avg", "processing_p95_ms", "peak_rpm",
              "last_error", "health_latency_ms"):
        assert getattr(st, f) is None, f
    assert st.rpm == 0.0
    assert st.error_counts == {} and st.resources == {}


def test_stats_fields_and_as_dict(mon: Monitor) -> None:
    s = mon.service("svc")
    s.record(10.0)
    st = s.stats("5m")
    d = st.as_dict()
    assert list(d)[:4] == ["service", "window_s", "start", "end"]
    assert d["count"] == 1 and d["service"] == "svc" and d["window_s"] == 300
    assert d["error_counts"] == {} and d["resources"] == {}
    assert "ServiceStats(service=\"svc\"" in repr(st)
    with pytest.raises(AttributeError):
        st.count = 5  # type: ignore[misc]


@pytest.mark.parametrize("window, seconds", [("1m", 60), ("5m", 300), ("15m", 900), ("1h", 3600),
                                             ("6h", 21600), ("24h", 86400), ("90s", 90), (120, 120), (30.0, 30)])
def test_windows_parse(mon: Monitor, window: str | float, seconds: int) -> None:
    mon.service("s")
    assert mon.stats("s", window).window_s == seconds


@pytest.mark.parametrize("bad", ["", "5x", "0", "-1m", "48h", "7d", 0, -5, 10**9, math.nan, True, None.__class__])
def test_bad_windows_list_the_valid_ones(mon: Monitor, bad: object) -> None:
    mon.service("s")
    with pytest.raises(errors.InvalidWindowError) as ei:
        mon.stats("s", bad)  # type: ignore[arg-type]
    assert "1m, 5m, 15m, 1h, 6h, 24h" in str(ei.value)
    assert isinstance(ei.value, ValueError)


def test_unknown_service_lists_known(mon: Monitor) -> None:
    mon.service("a")
    with pytest.raises(errors.UnknownServiceError) as ei:
        mon.stats("b")
    assert "\"b\"" in str(ei.value) and "\"a\"" in str(ei.value)
    assert isinstance(ei.value, LookupError)
    with pytest.raises(errors.UnknownServiceError):
        mon.series("b", "avg_ms")


def test_unknown_metric_lists_valid(mon: Monitor) -> None:
    mon.service("a")
    with pytest.raises(errors.InvalidMetricError) as ei:
        mon.compare("p95")
    for name in mdm.METRICS:
        assert name in str(ei.value)
    with pytest.raises(errors.InvalidMetricError):
        mon.series("a", "latency")
    with pytest.raises(errors.InvalidValueError, match="points"):
        mon.series("a", "avg_ms", points=0)


def test_metric_names_constant_matches_engine(mon: Monitor) -> None:
    mon.service("a").record(1.0)
    for name in mdm.METRICS:
        t, v = mon.series("a", name, "1m")
        assert t.shape == v.shape == (60,)
    assert set(mdm.GAUGES) <= set(mdm.METRICS)
    assert len(mdm.METRICS) == 27 and len(mdm.GAUGES) == 8
    assert {"p95_ms", "uptime_pct", "vram_used_bytes"} <= set(mdm.METRICS)


def test_snapshot_is_every_service_in_order(mon: Monitor) -> None:
    for n in ("c", "a", "b"):
        mon.service(n).record(1.0)
    snap = mon.snapshot("5m")
    assert list(snap) == ["c", "a", "b"]
    assert all(isinstance(v, mdm.ServiceStats) for v in snap.values())
    assert mon.snapshot() .keys() == snap.keys()


def test_monitor_config_validation() -> None:
    with pytest.raises(errors.InvalidConfigError, match="multiple"):
        Monitor(tiers=[(10, 30), (15, 100)])
    with pytest.raises(errors.InvalidConfigError, match="must be longer"):
        Monitor(tiers=[(1, 300), (10, 20)])
    with pytest.raises(errors.InvalidConfigError, match="max_services 0"):
        Monitor(max_services=0)
    with pytest.raises(errors.InvalidConfigError, match="start_time needs manual_clock"):
        Monitor(start_time=5.0)
    with pytest.raises(errors.InvalidConfigError, match="compression"):
        Monitor(query_compression=1.0)
    m = Monitor(tiers=[(1, 60), (5, 720)], manual_clock=True)
    assert m.tiers == [(1, 60), (5, 720)]
    with pytest.raises(errors.InvalidWindowError):
        m.stats("x", "2h")


def test_clock_api() -> None:
    m = Monitor(manual_clock=True, start_time=T0)
    assert m.manual_clock and m.now() == T0
    m.advance(2.5)
    assert m.now() == pytest.approx(T0 + 2.5)
    with pytest.raises(errors.ClockError):
        m.advance(-1)
    real = Monitor()
    with pytest.raises(errors.ClockError, match="manual clock"):
        real.advance(1)
    real.close()
    real.close()  # idempotent


def test_context_manager_closes() -> None:
    with Monitor() as m:
        m.service("s").record(1.0)
        assert m.stats("s").count == 1
    assert m.stats("s").count == 1, "reads still work after close"


def test_memory_bytes_grows_with_services(mon: Monitor) -> None:
    base = mon.memory_bytes()
    mon.service("a").record(1.0)
    one = mon.memory_bytes()
    mon.service("b").record(1.0)
    assert base < one < mon.memory_bytes()


def test_timed_helper_records_success_and_exception(mon: Monitor) -> None:
    s = mon.service("t")
    with mdm.timed(s):
        pass
    with pytest.raises(KeyError):
        with mdm.timed(s):
            raise KeyError("boom")
    st = mon.stats("t")
    assert (st.count, st.errors) == (2, 1)
    assert st.error_counts == {"KeyError": 1}


def test_exception_hierarchy_is_rooted() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        # Warnings (issued, never raised) are the one other root.
        assert issubclass(cls, errors.MetricsError) or issubclass(cls, UserWarning)
        assert getattr(mdm, name) is cls
    for cls in (errors.InvalidValueError, errors.InvalidNameError, errors.InvalidWindowError,
                errors.InvalidMetricError, errors.InvalidConfigError, errors.DecodeError):
        assert issubclass(cls, ValueError)
