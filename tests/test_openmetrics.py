"""OpenMetrics / Prometheus exposition and the /metrics server.

The strict OpenMetrics parser of prometheus_client is the format oracle; the
engine's own ``stats()`` and the counts recorded here are the value oracles.
"""

from __future__ import annotations

import math

import socket
import threading
import time
import urllib.request
from collections.abc import Iterable
from urllib.error import HTTPError, URLError

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from movie_director_metrics import Monitor, errors
from movie_director_metrics._core import ServiceStats, _stress_record_from_rust_threads
from movie_director_metrics.metrics_server import MetricsServer, negotiate, serve_metrics
from movie_director_metrics.openmetrics import CONTENT_TYPE_OPENMETRICS, CONTENT_TYPE_TEXT, render

T0 = 1_700_000_000.0
ODD = 'odd "name" \\ ünïcødé ✓'  # quote, backslash and unicode in one service name
ODD_ERROR = 'bad "input"\nsecond line \\'
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(families: Iterable[Metric]) -> Samples:
    """(sample name, sorted labels) -> value, from parsed families."""
    out: Samples = {}
    for family in families:
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def om(text: str) -> Samples:
    return samples(parse_openmetrics(text))


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (name, tuple(sorted(labels.items())))


@pytest.fixture
def mon() -> Monitor:
    m = Monitor(manual_clock=True, start_time=T0)
    comfy = m.service("comfyui")
    for ms in (120.0, 180.0, 240.0, 300.0, 900.0, 1500.0, 4000.0):
        comfy.record(ms)
    comfy.record(30_000.0, ok=False, error="timeout")
    comfy.record(29_000.0, ok=False, error="timeout")
    comfy.record(50.0, ok=False, error="oom")
    comfy.set_queue(running=2, pending=3)
    comfy.set_resource(
        vram_used_bytes=6.1e9, vram_total_bytes=24e9, gpu_temp_c=64, cpu_pct=42.5, gpu_util_pct=90
    )
    comfy.record_processing(1500.0)
    comfy.record_processing(2500.0)
    comfy.health(True)
    m.advance(45)
    comfy.health(False)

    odd = m.service(ODD)
    for ms in (10.0, 20.0, 30.0):
        odd.record(ms)
    odd.record(40.0, ok=False, error=ODD_ERROR)
    odd.health(True)

    m.service("idle")  # exists, never reported anything
    m.advance(1)
    return m


def stats(m: Monitor, name: str, window: str = "5m") -> ServiceStats:
    return m.stats(name, window)


# --- Format ----------------------------------------------------------------


def test_strict_openmetrics_families_types_and_units(mon: Monitor) -> None:
    text = render(mon)
    assert text.endswith("\n# EOF\n")
    families = {f.name: (f.type, f.unit) for f in parse_openmetrics(text)}
    assert families == {
        "mdm_requests": ("counter", ""),
        "mdm_request_errors": ("counter", ""),
        "mdm_request_latency_seconds": ("histogram", "seconds"),
        "mdm_request_latency_quantile_seconds": ("gauge", "seconds"),
        "mdm_health_up": ("gauge", ""),
        "mdm_health_checks": ("counter", ""),
        "mdm_uptime_ratio": ("gauge", "ratio"),
        "mdm_queue_depth": ("gauge", ""),
        "mdm_processing_seconds": ("histogram", "seconds"),
        "mdm_processing_quantile_seconds": ("gauge", "seconds"),
        "mdm_vram_used_bytes": ("gauge", "bytes"),
        "mdm_vram_total_bytes": ("gauge", "bytes"),
        "mdm_cpu_usage_ratio": ("gauge", "ratio"),
        "mdm_gpu_utilization_ratio": ("gauge", "ratio"),
        "mdm_gpu_temp_celsius": ("gauge", "celsius"),
        "mdm_quantile_window_seconds": ("gauge", "seconds"),
    }
    assert "NaN" not in text
    # The only infinity is the histograms' last bucket bound.
    assert {line.split("{")[0] for line in text.splitlines() if "Inf" in line} == {
        "mdm_request_latency_seconds_bucket", "mdm_processing_seconds_bucket"
    }
    assert all('le="+Inf"' in line for line in text.splitlines() if "Inf" in line)


def test_prometheus_text_format_has_same_values(mon: Monitor) -> None:
    text = render(mon, openmetrics=False)
    assert "# EOF" not in text and "# UNIT" not in text
    # 0.0.4 names the counter family by its sample name.
    assert "# TYPE mdm_requests_total counter" in text
    assert "# TYPE mdm_request_latency_seconds histogram" in text
    assert samples(parse_text(text)) == om(render(mon))


def test_empty_monitor_renders_valid_output() -> None:
    m = Monitor(manual_clock=True, start_time=T0)
    assert render(m) == "# EOF\n"
    assert list(parse_openmetrics(render(m))) == []
    assert render(m, openmetrics=False) == ""
    assert list(parse_text(render(m, openmetrics=False))) == []


def test_invalid_quantile_window_raises(mon: Monitor) -> None:
    with pytest.raises(errors.InvalidWindowError):
        render(mon, quantile_window="fortnight")


# --- Values ----------------------------------------------------------------


def test_counters_equal_recorded_counts(mon: Monitor) -> None:
    got = om(render(mon))
    expected = {
        ("comfyui", "success"): 7, ("comfyui", "error"): 3,
        (ODD, "success"): 3, (ODD, "error"): 1,
        ("idle", "success"): 0, ("idle", "error"): 0,
    }
    for (service, outcome), n in expected.items():
        assert got[key("mdm_requests_total", service=service, outcome=outcome)] == n
    assert got[key("mdm_request_errors_total", service="comfyui", error_type="timeout")] == 2
    assert got[key("mdm_request_errors_total", service="comfyui", error_type="oom")] == 1
    assert got[key("mdm_request_errors_total", service=ODD, error_type=ODD_ERROR)] == 1
    assert got[key("mdm_health_checks_total", service="comfyui", result="up")] == 1
    assert got[key("mdm_health_checks_total", service="comfyui", result="down")] == 1
    assert got[key("mdm_health_checks_total", service=ODD, result="up")] == 1
    assert got[key("mdm_health_checks_total", service=ODD, result="down")] == 0
    # Services that never ran a health check or a job publish no such series.
    optional = ("mdm_health", "mdm_processing")
    assert not [k for k in got if k[0].startswith(optional) and ("service", "idle") in k[1]]


def test_latency_quantile_gauges_are_stats_in_seconds(mon: Monitor) -> None:
    got = om(render(mon))
    for name in ("comfyui", ODD):
        s = stats(mon, name)
        for q, ms in (("0.5", s.p50_ms), ("0.9", s.p90_ms), ("0.95", s.p95_ms), ("0.99", s.p99_ms)):
            assert ms is not None
            assert got[key("mdm_request_latency_quantile_seconds", service=name, quantile=q)] == ms / 1e3
    assert got[key("mdm_request_latency_seconds_count", service="comfyui")] == 10
    assert got[key("mdm_request_latency_seconds_sum", service="comfyui")] == pytest.approx(
        (120 + 180 + 240 + 300 + 900 + 1500 + 4000 + 30_000 + 29_000 + 50) / 1e3
    )
    # No data, no quantile: the idle service has only its zero count and sum.
    assert key("mdm_request_latency_quantile_seconds", service="idle", quantile="0.5") not in got
    assert got[key("mdm_request_latency_seconds_count", service="idle")] == 0


def test_latency_histogram_buckets_count_the_recorded_values(mon: Monitor) -> None:
    from movie_director_metrics.openmetrics import HISTOGRAM_LE_MS

    got = om(render(mon))
    recorded = [120, 180, 240, 300, 900, 1500, 4000, 30_000, 29_000, 50]
    for le_ms in HISTOGRAM_LE_MS:
        # Buckets are the engine's half-open powers of two: a value exactly
        # on a bound counts in the next bucket (none of these is on one).
        want = sum(v < le_ms for v in recorded)
        assert got[key("mdm_request_latency_seconds_bucket", service="comfyui", le=repr(le_ms / 1e3))] == want
    assert got[key("mdm_request_latency_seconds_bucket", service="comfyui", le="+Inf")] == 10
    buckets = [v for k, v in got.items() if k[0] == "mdm_request_latency_seconds_bucket" and ("service", "idle") in k[1]]
    assert len(buckets) == len(HISTOGRAM_LE_MS) + 1 and set(buckets) == {0}


def test_quantiles_follow_the_quantile_window(mon: Monitor) -> None:
    mon.advance(120)
    mon.service("comfyui").record(7.0)
    got = om(render(mon, quantile_window="1m"))
    assert got[key("mdm_request_latency_quantile_seconds", service="comfyui", quantile="0.99")] == 7.0 / 1e3
    assert got[key("mdm_quantile_window_seconds", window="1m")] == 60
    assert got[key("mdm_request_latency_seconds_count", service="comfyui")] == 11  # lifetime


def test_processing_histogram_and_quantiles(mon: Monitor) -> None:
    got = om(render(mon))
    s = stats(mon, "comfyui")
    assert s.processing_p50_ms is not None and s.processing_p95_ms is not None
    q = "mdm_processing_quantile_seconds"
    assert got[key(q, service="comfyui", quantile="0.5")] == s.processing_p50_ms / 1e3
    assert got[key(q, service="comfyui", quantile="0.95")] == s.processing_p95_ms / 1e3
    assert got[key("mdm_processing_seconds_count", service="comfyui")] == 2
    assert got[key("mdm_processing_seconds_sum", service="comfyui")] == 4.0
    assert got[key("mdm_processing_seconds_bucket", service="comfyui", le="+Inf")] == 2


def _histogram_quantile(q: float, buckets: dict[float, float]) -> float:
    """Prometheus's histogram_quantile over cumulative buckets (le -> count):
    the rank's bucket, linear interpolation inside it (the first bucket
    starts at 0)."""
    bounds = sorted(buckets)
    total = buckets[math.inf]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le in bounds:
        if buckets[le] >= rank:
            if le == math.inf:
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_count) / (buckets[le] - prev_count)
        prev_le, prev_count = le, buckets[le]
    raise AssertionError("unreachable")


def test_histogram_quantile_over_two_monitors_matches_the_merged_data() -> None:
    """The point of histograms: Prometheus can add two instances' buckets
    and take a quantile of the sum, within the bucket the true one is in."""
    import numpy as np

    rng = np.random.default_rng(11)
    a_values = rng.lognormal(np.log(200.0), 0.5, 3000)
    b_values = rng.lognormal(np.log(900.0), 0.3, 2000)
    merged: dict[float, float] = {}
    for values in (a_values, b_values):
        m = Monitor(manual_clock=True, start_time=T0)
        try:
            m.service("comfyui").record_many(values)
            m.advance(2)
            for k, v in om(render(m)).items():
                if k[0] == "mdm_request_latency_seconds_bucket":
                    le = dict(k[1])["le"]
                    bound = math.inf if le == "+Inf" else float(le)
                    merged[bound] = merged.get(bound, 0.0) + v
        finally:
            m.close()
    everything = np.concatenate([a_values, b_values]) / 1e3
    for q in (0.5, 0.95, 0.99):
        got = _histogram_quantile(q, merged)
        true = float(np.quantile(everything, q))
        # Same power-of-two bucket: [2^k, 2^(k+1)) s*1e-3.
        lo = max(b for b in merged if b <= true) if any(b <= true for b in merged) else 0.0
        hi = min(b for b in merged if b > true)
        assert lo <= got <= hi, (q, got, true, lo, hi)
        assert hi / max(lo, 1e-9) <= 2.0, "a bucket is at most a factor of two wide"


def test_every_engine_gauge_has_its_own_family() -> None:
    """Units stay per family: no catch-all family mixing bytes and ratios."""
    from movie_director_metrics import GAUGES
    from movie_director_metrics.openmetrics import RESOURCE_FAMILIES

    assert set(RESOURCE_FAMILIES) == set(GAUGES)
    units = {name: unit for name, unit, _, _ in RESOURCE_FAMILIES.values()}
    assert all(name.endswith(unit) or (unit == "ratio" and name.endswith("_ratio")) for name, unit in units.items())


def test_uptime_ratio_equals_stats_and_skips_uncovered_windows(mon: Monitor) -> None:
    got = om(render(mon))
    for name in ("comfyui", ODD):
        for window in ("1h", "24h"):
            pct = stats(mon, name, window).uptime_pct
            assert pct is not None
            assert got[key("mdm_uptime_ratio", service=name, window=window)] == pct / 100
    assert {labels for (n, labels) in got if n == "mdm_uptime_ratio" and ("window", "7d") in labels} == set()
    assert not [k for k in got if k[0] == "mdm_uptime_ratio" and ("service", "idle") in k[1]]


def test_long_tiers_publish_long_uptime_windows() -> None:
    m = Monitor(manual_clock=True, start_time=T0, tiers=[(1, 300), (10, 360), (60, 1440), (3600, 720)])
    m.service("a").health(True)
    m.advance(10)
    got = om(render(m))
    for window in ("1h", "24h", "7d", "30d"):
        assert got[key("mdm_uptime_ratio", service="a", window=window)] == 1.0


def test_health_up_is_absent_when_unknown(mon: Monitor) -> None:
    got = om(render(mon))
    assert got[key("mdm_health_up", service="comfyui")] == 0
    assert got[key("mdm_health_up", service=ODD)] == 1
    assert key("mdm_health_up", service="idle") not in got
    mon.advance(mon.health_ttl_s + 5)  # no result vouches for now any more
    assert not [k for k in om(render(mon)) if k[0] == "mdm_health_up"]


def test_queue_and_resources_in_base_units(mon: Monitor) -> None:
    got = om(render(mon))
    assert got[key("mdm_queue_depth", service="comfyui", state="running")] == 2
    assert got[key("mdm_queue_depth", service="comfyui", state="pending")] == 3
    assert got[key("mdm_vram_used_bytes", service="comfyui")] == 6.1e9
    assert got[key("mdm_vram_total_bytes", service="comfyui")] == 24e9
    assert got[key("mdm_gpu_temp_celsius", service="comfyui")] == 64
    assert got[key("mdm_cpu_usage_ratio", service="comfyui")] == 0.425
    assert got[key("mdm_gpu_utilization_ratio", service="comfyui")] == 0.9
    assert key("mdm_queue_depth", service=ODD, state="running") not in got


def test_label_escaping_round_trips(mon: Monitor) -> None:
    for parse in (parse_openmetrics, parse_text):
        text = render(mon, openmetrics=parse is parse_openmetrics)
        services = {s.labels["service"] for f in parse(text) for s in f.samples if "service" in s.labels}
        assert services == {"comfyui", ODD, "idle"}
        error_types = {s.labels["error_type"] for f in parse(text) for s in f.samples if "error_type" in s.labels}
        assert error_types == {"timeout", "oom", ODD_ERROR}
    assert '\\"name\\" \\\\ ünïcødé' in render(mon)  # escaped in the text itself, UTF-8 kept


def _assert_counters_grow_until(m: Monitor, done: threading.Event) -> int:
    """Scrapes until ``done``; every counter, _count and _sum must never
    drop between scrapes.  Returns the number of scrapes."""
    previous: Samples = {}
    scrapes = 0
    while not done.is_set() or scrapes < 3:
        scraped = om(render(m)).items()
        current = {k: v for k, v in scraped if k[0].endswith(("_total", "_count", "_sum"))}
        for k, v in previous.items():
            assert current.get(k, 0) >= v, k
        previous, scrapes = current, scrapes + 1
    return scrapes


def test_counters_never_decrease_while_recording() -> None:
    # Real clock: the background sealer moves seconds into the totals while
    # we scrape, the race a monotonic counter must survive.
    with Monitor() as m:
        svc = m.service("busy")
        done = threading.Event()
        recorded = [0]

        def record() -> None:
            deadline = time.monotonic() + 1.5
            try:
                while time.monotonic() < deadline:
                    i = recorded[0]
                    if i % 3:
                        svc.record(1.0 + i % 7)
                    else:
                        svc.record(1.0 + i % 7, ok=False, error=("timeout", "oom")[i % 2])
                    if i % 5 == 0:
                        svc.health(i % 2 == 0)
                    recorded[0] = i + 1
            finally:
                done.set()

        thread = threading.Thread(target=record)
        thread.start()
        try:
            _assert_counters_grow_until(m, done)
        finally:
            thread.join()
        final = om(render(m))
        n = recorded[0]
        errors_n = (n + 2) // 3  # i % 3 == 0 for i in range(n)
        assert n > 1000  # the recorder really ran alongside the scrapes
        assert final[key("mdm_requests_total", service="busy", outcome="error")] == errors_n
        assert final[key("mdm_requests_total", service="busy", outcome="success")] == n - errors_n
        assert final[key("mdm_request_latency_seconds_count", service="busy")] == n
        assert final[key("mdm_health_checks_total", service="busy", result="up")] + final[
            key("mdm_health_checks_total", service="busy", result="down")
        ] == (n + 4) // 5


def test_counters_never_decrease_under_parallel_rust_writers() -> None:
    # Eight Rust threads record without the GIL while Python scrapes.
    with Monitor() as m:
        svc = m.service("rust")
        done = threading.Event()
        failures: list[BaseException] = []

        def stress() -> None:
            try:
                _stress_record_from_rust_threads(svc, 8, 200_000, error_every=100)
            except BaseException as exc:
                failures.append(exc)
            finally:
                done.set()

        thread = threading.Thread(target=stress)
        thread.start()
        try:
            scrapes = _assert_counters_grow_until(m, done)
        finally:
            thread.join()
        assert not failures and scrapes >= 3
        final = om(render(m))
        assert final[key("mdm_requests_total", service="rust", outcome="error")] == 16_000
        assert final[key("mdm_requests_total", service="rust", outcome="success")] == 1_584_000
        assert final[key("mdm_request_errors_total", service="rust", error_type="stress")] == 16_000


# --- Content negotiation ---------------------------------------------------


@pytest.mark.parametrize(
    "accept, use_openmetrics",
    [
        (None, False),
        ("", False),
        ("*/*", False),
        ("text/plain", False),
        ("text/html,application/xhtml+xml,*/*;q=0.8", False),
        ("application/openmetrics-text", True),
        ("application/openmetrics-text; version=1.0.0; charset=utf-8", True),
        # Prometheus 2.x and 3.x scrape headers.
        ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
         "text/plain;version=0.0.4;q=0.5,*/*;q=0.1", True),
        ("application/openmetrics-text; version=0.0.1,text/plain;version=0.0.4;q=0.5,*/*;q=0.1", True),
        ("application/openmetrics-text;q=0.2,text/plain;q=0.5", False),
        ("application/openmetrics-text;version=2.0.0", False),
        ("application/openmetrics-text;q=0", False),
        ("application/openmetrics-text;q=junk,text/plain", False),
    ],
)
def test_negotiate(accept: str | None, use_openmetrics: bool) -> None:
    expected = CONTENT_TYPE_OPENMETRICS if use_openmetrics else CONTENT_TYPE_TEXT
    assert negotiate(accept) == (use_openmetrics, expected)


# --- Server ----------------------------------------------------------------


def fetch(url: str, accept: str | None = None, method: str = "GET") -> tuple[int, str, str]:
    request = urllib.request.Request(url, method=method, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, response.headers["Content-Type"], response.read().decode()


def test_server_scrapes_both_formats(mon: Monitor) -> None:
    with serve_metrics(mon, port=0) as server:
        assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}/metrics"
        status, content_type, body = fetch(server.url, "application/openmetrics-text; version=1.0.0")
        assert (status, content_type) == (200, CONTENT_TYPE_OPENMETRICS)
        assert om(body) == om(render(mon))
        status, content_type, body = fetch(server.url)
        assert (status, content_type) == (200, CONTENT_TYPE_TEXT)
        assert samples(parse_text(body)) == om(render(mon))
        status, _, body = fetch(server.url + "?x=1", method="HEAD")
        assert (status, body) == (200, "")


def test_server_404_elsewhere(mon: Monitor) -> None:
    with MetricsServer(mon, port=0) as server:
        for path in ("/", "/metric", "/metrics/extra"):
            with pytest.raises(HTTPError) as ei:
                fetch(f"http://127.0.0.1:{server.port}{path}")
            assert ei.value.code == 404


def test_render_error_answers_500_and_server_keeps_serving(mon: Monitor) -> None:
    with MetricsServer(mon, port=0, quantile_window="fortnight") as broken:
        for _ in range(2):
            with pytest.raises(HTTPError) as ei:
                fetch(broken.url)
            assert ei.value.code == 500
            assert b"InvalidWindowError" in ei.value.read()


class _ClosableMonitor:
    """A real engine behind the closed check a wrapper makes (the engine
    itself keeps answering reads after ``close()``)."""

    def __init__(self, engine: Monitor) -> None:
        self.engine, self.closed = engine, False

    def _check(self) -> None:
        if self.closed:
            raise errors.MonitorClosedError("monitor is closed")

    def services(self) -> list[str]:
        self._check()
        return self.engine.services()

    def service(self, name: str) -> object:
        self._check()
        return self.engine.service(name)

    def snapshot(self, window: str) -> dict[str, ServiceStats]:
        self._check()
        return self.engine.snapshot(window)


def test_closed_monitor_answers_503(mon: Monitor) -> None:
    wrapped = _ClosableMonitor(mon)
    with MetricsServer(wrapped, port=0) as server:  # type: ignore[arg-type]
        assert fetch(server.url)[0] == 200
        wrapped.closed = True
        with pytest.raises(HTTPError) as ei:
            fetch(server.url)
        assert ei.value.code == 503


def test_close_frees_the_port_and_joins(mon: Monitor) -> None:
    server = serve_metrics(mon, port=0)
    port, url = server.port, server.url
    assert fetch(url)[0] == 200
    server.close()
    server.close()  # idempotent
    assert not [t for t in threading.enumerate() if t.name == f"mdm-metrics-{port}"]
    with pytest.raises(URLError):
        fetch(url)
    with MetricsServer(mon, port=port) as again:  # the same port binds again
        assert fetch(again.url)[0] == 200


def test_server_binds_loopback_by_default(mon: Monitor) -> None:
    with MetricsServer(mon, port=0) as server:
        assert server.host == "127.0.0.1"
        probe = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        probe.close()
