"""The collector workers: states, fault injection against real sockets,
backoff, blocking of remote hosts, shutdown, ``check_once`` and the
``Monitor`` hooks.

Every fault is real socket behaviour from ``loopback`` (refused ports,
servers that never answer, slow, cut-short or dropped replies).  After
each one the test checks the error type the engine recorded, that no
exception escaped a worker thread, and that the worker is still polling.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loopback import HangingServer, LoopbackServer, Reply, fixture, refused_url, wait_until  # noqa: E402

from movie_director_metrics import Monitor, _core  # noqa: E402
from movie_director_metrics.errors import ConfigError  # noqa: E402
from movie_director_metrics.collectors import BackendConfig, Capabilities  # noqa: E402
from movie_director_metrics.collectors import http as http_mod  # noqa: E402
from movie_director_metrics.collectors import scheduler  # noqa: E402
from movie_director_metrics.collectors.base import Backend  # noqa: E402
from movie_director_metrics.collectors.config import CONFIG_ENV  # noqa: E402
from movie_director_metrics.collectors.http_probe import HttpProbe  # noqa: E402
from movie_director_metrics.collectors.scheduler import (  # noqa: E402
    BackendStatus,
    Collectors,
    backoff_delay_s,
    check_once,
)

FAST: dict[str, Any] = {"interval_s": 0.05, "connect_timeout_s": 0.2, "read_timeout_s": 0.4}
REMOTE = "http://192.0.2.1:8188"  # TEST-NET-1: never routed


class View:
    """A loopback server of its own, as far as a backend can tell: a base
    URL with a unique path prefix on the module's shared server (each real
    server costs ~0.5 s to shut down, so tests share one)."""

    _ids = iter(range(1_000_000))

    def __init__(self, server: LoopbackServer, routes: dict[tuple[str, str], Any]) -> None:
        self.server = server
        self.prefix = f"/v{next(self._ids)}"
        self.url = server.url + self.prefix
        self.routes = self  # srv.routes[(method, path)] = reply, as on a LoopbackServer
        for key, reply in routes.items():
            self[key] = reply

    def __setitem__(self, key: tuple[str, str], reply: Any) -> None:
        self.server.routes[(key[0], self.prefix + key[1])] = reply

    def __enter__(self) -> View:
        return self

    def __exit__(self, *exc: object) -> None:
        for key in [k for k in self.server.routes if k[1].startswith(self.prefix + "/")]:
            del self.server.routes[key]


@pytest.fixture(scope="module")
def shared_server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as srv:
        yield srv


Server = Callable[[dict[tuple[str, str], Any]], View]


@pytest.fixture
def server(shared_server: LoopbackServer) -> Server:
    return lambda routes: View(shared_server, routes)


def worker_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"mdm-collector:{name}" and t.is_alive()]


@pytest.fixture(autouse=True)
def thread_errors(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Fails the test if any exception escapes a thread."""
    errors: list[Any] = []
    monkeypatch.setattr(threading, "excepthook", errors.append)
    yield errors
    assert not errors, [f"{e.exc_type.__name__}: {e.exc_value}" for e in errors]


@pytest.fixture
def monitor() -> Iterator[Monitor]:
    with Monitor() as m:
        yield m


def still_polling(monitor: Monitor, collectors: Collectors, name: str) -> None:
    """The worker is alive and its results keep coming."""
    assert worker_threads(name), f"worker {name} died"
    before = monitor.stats(name).health_checks
    wait_until(lambda: monitor.stats(name).health_checks > before, what=f"{name} to keep polling")
    assert collectors.status()[name].state in ("up", "down")


# ---- fault injection ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "error_type"),
    [
        (Reply(500, {"error": "boom"}), "http_5xx"),
        (Reply(503, {"error": "busy"}), "server_busy"),
        (Reply(429, {"error": "slow down"}), "server_busy"),
        (Reply(404), "http_4xx"),
        (Reply(204), "unexpected_status"),
        (Reply(200, b"ok", delay_s=1.0), "timeout"),  # slower than the 0.4 s read timeout
        (Reply(drop=True), "connection_reset"),
    ],
    ids=["500", "503", "429", "404", "204", "slow", "drop"],
)
def test_http_faults_recorded_with_their_error_type(
    monitor: Monitor, reply: Reply, error_type: str, server: Server,
) -> None:
    with server({("GET", "/health"): reply}) as srv:
        cfg = BackendConfig("svc", "http", srv.url, path="/health", **FAST)
        with Collectors(monitor, [cfg]) as collectors:
            wait_until(lambda: monitor.stats("svc").error_counts.get(error_type, 0) >= 1, what=error_type)
            st = collectors.status()["svc"]
            assert st.state == "down"
            assert st.last_error_type == error_type
            assert st.failures >= 1
            assert set(monitor.stats("svc").error_counts) == {error_type}
            assert monitor.stats("svc").up is False
            still_polling(monitor, collectors, "svc")


def test_slow_but_in_time_response_is_up_with_its_latency(monitor: Monitor, server: Server) -> None:
    with server({("GET", "/"): Reply(200, b"ok", delay_s=0.15)}) as srv:
        cfg = BackendConfig("svc", "http", srv.url, **FAST)
        with Collectors(monitor, [cfg]) as collectors:
            wait_until(lambda: collectors.status()["svc"].state == "up", what="up")
            st = collectors.status()["svc"]
            assert st.last_latency_ms is not None and st.last_latency_ms >= 150
            assert monitor.stats("svc").min_ms >= 150  # type: ignore[operator]
            assert monitor.stats("svc").errors == 0


def test_refused_connection(monitor: Monitor) -> None:
    cfg = BackendConfig("svc", "comfyui", refused_url(), **FAST)
    with Collectors(monitor, [cfg]) as collectors:
        wait_until(lambda: collectors.status()["svc"].state == "down", what="down")
        st = collectors.status()["svc"]
        assert st.last_error_type == "connection_refused"
        assert st.capabilities == {s: None for s in ("health", "queue", "processing", "resources", "models")}
        assert set(monitor.stats("svc").error_counts) == {"connection_refused"}
        still_polling(monitor, collectors, "svc")


def test_hanging_server_times_out_within_connect_plus_read(monitor: Monitor) -> None:
    with HangingServer() as hang:
        cfg = BackendConfig("svc", "comfyui", hang.url, **FAST)
        t0 = time.monotonic()
        with Collectors(monitor, [cfg]) as collectors:
            wait_until(lambda: collectors.status()["svc"].state == "down", what="down")
            elapsed = time.monotonic() - t0
            st = collectors.status()["svc"]
            assert st.last_error_type == "timeout"
            assert 0.4 <= elapsed < 0.2 + 0.4 + 0.5
            s = monitor.stats("svc")
            assert s.error_counts == {"timeout": 1}
            assert 400 <= s.max_ms < 600  # type: ignore[operator]
            assert worker_threads("svc")


@pytest.mark.parametrize(
    ("reply", "error_type"),
    [
        (Reply(200, b"{\"exec_info\": {\"queue_rem"), "bad_json"),
        # Fewer bytes than the Content-Length promised: a cut connection.
        (Reply(200, '{"exec_info": {"queue_remaining": 0}}', truncate_to=20), "connection_reset"),
    ],
    ids=["malformed", "truncated"],
)
def test_malformed_and_truncated_json(monitor: Monitor, reply: Reply, error_type: str, server: Server) -> None:
    with server({("GET", "/api/prompt"): reply}) as srv:
        cfg = BackendConfig("comfy", "comfyui", srv.url, **FAST)
        with Collectors(monitor, [cfg]) as collectors:
            wait_until(lambda: collectors.status()["comfy"].last_error_type == error_type, what=error_type)
            assert collectors.status()["comfy"].state == "down"
            assert set(monitor.stats("comfy").error_counts) == {error_type}
            still_polling(monitor, collectors, "comfy")


def test_flapping_backend(monitor: Monitor, server: Server) -> None:
    calls = {"n": 0}
    lock = threading.Lock()

    def flap(handler: Any) -> Reply:
        with lock:
            calls["n"] += 1
            n = calls["n"]
        return Reply(200, b"ok") if n % 2 else Reply(503)

    with server({("GET", "/"): flap}) as srv:
        cfg = BackendConfig("svc", "http", srv.url, **FAST)
        with Collectors(monitor, [cfg]) as collectors:
            states: set[str] = set()

            def seen_both() -> bool:
                states.add(collectors.status()["svc"].state)
                return {"up", "down"} <= states and calls["n"] >= 8

            wait_until(seen_both, what="both states")
            s = monitor.stats("svc")
            assert s.error_counts == {"server_busy": s.errors}
            assert 0 < s.errors < s.count
            # Success resets the backoff: failures never pile up.
            assert collectors.status()["svc"].failures <= 1
            still_polling(monitor, collectors, "svc")


class _Broken(HttpProbe):
    """An http probe whose collect() has a bug."""

    collects = 0

    def collect(self) -> None:
        type(self).collects += 1
        raise KeyError("vram_total")


def test_unexpected_collect_exception_is_collector_error(
    monitor: Monitor, monkeypatch: pytest.MonkeyPatch, server: Server,
) -> None:
    monkeypatch.setattr(scheduler, "backend_class", lambda kind: _Broken)
    _Broken.collects = 0
    with server({("GET", "/"): Reply(200, b"ok")}) as srv:
        cfg = BackendConfig("svc", "http", srv.url, **FAST)
        with Collectors(monitor, [cfg]) as collectors:
            # The count is bumped before the failure is recorded: wait for
            # the third recorded failure, not only the third call.
            wait_until(lambda: _Broken.collects >= 3
                       and monitor.stats("svc").error_counts.get("collector_error", 0) >= 3,
                       what="three recorded collect failures")
            st = collectors.status()["svc"]
            assert st.state == "up"  # the probe answered; only collecting broke
            assert st.last_error_type == "collector_error"
            assert st.last_error is not None and "KeyError" in st.last_error and "Traceback" in st.last_error
            assert monitor.stats("svc").error_counts["collector_error"] >= 3
            still_polling(monitor, collectors, "svc")


class _Detects(HttpProbe):
    """Counts detections and reports a version that changes."""

    detections = 0

    def detect(self) -> Capabilities:
        type(self).detections += 1
        self.version = f"v{type(self).detections}"
        return super().detect()


def test_detect_again_after_the_backend_was_down(
    monitor: Monitor, monkeypatch: pytest.MonkeyPatch, server: Server,
) -> None:
    monkeypatch.setattr(scheduler, "backend_class", lambda kind: _Detects)
    _Detects.detections = 0
    with server({("GET", "/"): Reply(200, b"ok")}) as srv:
        cfg = BackendConfig("svc", "http", srv.url, **FAST)
        with Collectors(monitor, [cfg]) as collectors:
            wait_until(lambda: collectors.status()["svc"].version == "v1", what="first detect")
            time.sleep(0.2)
            assert _Detects.detections == 1  # once while it stays up
            srv.routes[("GET", "/")] = Reply(503)
            wait_until(lambda: collectors.status()["svc"].state == "down", what="down")
            srv.routes[("GET", "/")] = Reply(200, b"ok")
            wait_until(lambda: collectors.status()["svc"].version == "v2", what="re-detect")
            assert _Detects.detections == 2


def test_kind_that_fails_to_load_leaves_the_others_running(
    monitor: Monitor, monkeypatch: pytest.MonkeyPatch, server: Server,
) -> None:
    from movie_director_metrics.collectors.kinds import backend_class as real

    def backend_class(kind: str) -> type[Backend]:
        if kind == "ollama":
            raise ImportError("ollama collector is broken")
        return real(kind)

    monkeypatch.setattr(scheduler, "backend_class", backend_class)
    with server({("GET", "/"): Reply(200, b"ok")}) as srv:
        configs = [BackendConfig("llm", "ollama", refused_url(), **FAST), BackendConfig("svc", "http", srv.url, **FAST)]
        with Collectors(monitor, configs) as collectors:
            wait_until(lambda: collectors.status()["svc"].state == "up", what="up")
            st = collectors.status()["llm"]
            assert st.state == "unknown"
            assert st.last_error_type == "collector_error"
            assert st.last_error is not None and "ollama collector is broken" in st.last_error
            assert not worker_threads("llm")


# ---- backoff ------------------------------------------------------------------------------


def test_backoff_delay_formula() -> None:
    assert backoff_delay_s(1.0, 0) == 1.0
    assert [backoff_delay_s(0.05, k) for k in range(1, 6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])
    assert backoff_delay_s(1.0, 4) == 16.0
    assert backoff_delay_s(1.0, 5) == 30.0  # capped
    assert backoff_delay_s(1.0, 10_000) == 30.0
    assert backoff_delay_s(300.0, 3) == 300.0  # a slow interval is never shortened by the cap


def test_backoff_grows_caps_and_resets(monitor: Monitor, monkeypatch: pytest.MonkeyPatch, server: Server) -> None:
    monkeypatch.setattr(scheduler, "BACKOFF_CAP_S", 0.3)  # reach the cap in well under a second
    hits: list[float] = []
    ok = threading.Event()

    def route(handler: Any) -> Reply:
        hits.append(time.monotonic())
        return Reply(200, b"ok") if ok.is_set() else Reply(503)

    with server({("GET", "/"): route}) as srv:
        cfg = BackendConfig("svc", "http", srv.url, **FAST)
        with Collectors(monitor, [cfg]) as collectors:
            polls: dict[int, float] = {}

            def failures_reach(n: int) -> bool:
                st = collectors.status()["svc"]
                if st.failures and st.next_poll_s is not None:
                    polls.setdefault(st.failures, st.next_poll_s)
                return st.failures >= n

            wait_until(lambda: failures_reach(6), what="6 failures")
            for failures, next_poll_s in polls.items():
                assert next_poll_s <= backoff_delay_s(0.05, failures) + 1e-6
            # Probe k+1 came about interval * 2^k after probe k failed, up to the cap.
            gaps = [b - a for a, b in zip(hits, hits[1:])][:5]
            # Never early; late by at most a scheduling hiccup.
            assert 0.1 - 0.01 <= gaps[0] < 0.1 + 0.1
            assert 0.2 - 0.01 <= gaps[1] < 0.2 + 0.1
            assert all(0.3 - 0.01 <= g < 0.3 + 0.1 for g in gaps[2:])

            ok.set()
            wait_until(lambda: collectors.status()["svc"].failures == 0, what="reset")
            st = collectors.status()["svc"]
            assert st.state == "up"
            assert st.next_poll_s is not None and st.next_poll_s <= 0.05 + 1e-6
            n = len(hits)
            wait_until(lambda: len(hits) >= n + 4, timeout_s=1.0, what="the normal interval again")


# ---- remote hosts -------------------------------------------------------------------------


@pytest.fixture
def contacted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every host an HttpClient sends a request to."""
    hosts: list[str] = []
    real = http_mod.HttpClient.request

    def spy(self: http_mod.HttpClient, *args: Any, **kwargs: Any) -> Any:
        hosts.append(self.host)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(http_mod.HttpClient, "request", spy)
    return hosts


def test_remote_host_is_blocked_and_never_contacted(monitor: Monitor, contacted: list[str], server: Server) -> None:
    with server({("GET", "/"): Reply(200, b"ok")}) as srv:
        configs = [
            BackendConfig("cloud", "comfyui", REMOTE, **FAST),
            BackendConfig("named", "http", "http://example.invalid:9000", **FAST),
            BackendConfig("local", "http", srv.url, **FAST),
        ]
        with Collectors(monitor, configs) as collectors:
            wait_until(lambda: monitor.stats("local").health_checks >= 3, what="local polls")
            status = collectors.status()
            for name in ("cloud", "named"):
                assert status[name].state == "blocked"
                assert status[name].next_poll_s is None
                assert all(v is None for v in status[name].capabilities.values())
                assert "online access is off" in status[name].missing["health"]
                assert not worker_threads(name)
                assert monitor.stats(name).count == 0 and monitor.stats(name).health_checks == 0
            assert set(contacted) == {"127.0.0.1"}
        assert [s.state for s in check_once(configs, monitor=monitor)] == ["blocked", "blocked", "up"]
        assert set(contacted) == {"127.0.0.1"}


def test_allow_remote_contacts_remote_hosts(monitor: Monitor, contacted: list[str]) -> None:
    cfg = BackendConfig("cloud", "http", REMOTE, interval_s=0.05, connect_timeout_s=0.05, read_timeout_s=0.05)
    with Collectors(monitor, [cfg], allow_remote=True) as collectors:
        wait_until(lambda: collectors.status()["cloud"].state == "down", what="an attempt")
        assert "192.0.2.1" in contacted


def test_disabled_backend_gets_no_worker(monitor: Monitor) -> None:
    cfg = BackendConfig("off", "http", refused_url(), enabled=False, **FAST)
    with Collectors(monitor, [cfg]) as collectors:
        time.sleep(0.1)
        assert collectors.status()["off"].state == "disabled"
        assert not worker_threads("off")
        assert not collectors.running
    assert check_once([cfg])[0].state == "disabled"


# ---- lifecycle -------------------------------------------------------------------------------


def test_stop_joins_quickly_while_a_request_hangs(monitor: Monitor) -> None:
    with HangingServer() as hang:
        cfg = BackendConfig("svc", "http", hang.url, interval_s=0.05, connect_timeout_s=0.2, read_timeout_s=0.5)
        collectors = Collectors(monitor, [cfg]).start()
        wait_until(lambda: bool(hang._held), what="a request in flight")
        t0 = time.monotonic()
        collectors.stop(timeout_s=3.0)
        elapsed = time.monotonic() - t0
        assert elapsed < 0.5 + 0.3  # bounded by the read timeout, not by stop's 3 s
        assert not worker_threads("svc")
        assert not collectors.running
        collectors.stop()  # idempotent


def test_stop_is_immediate_between_polls(monitor: Monitor, server: Server) -> None:
    with server({("GET", "/"): Reply(200, b"ok")}) as srv:
        cfg = BackendConfig("svc", "http", srv.url, interval_s=60.0)
        collectors = Collectors(monitor, [cfg]).start()
        wait_until(lambda: collectors.status()["svc"].state == "up", what="up")
        assert collectors.status()["svc"].next_poll_s == pytest.approx(60.0, abs=1.0)
        t0 = time.monotonic()
        collectors.stop()
        assert time.monotonic() - t0 < 0.2
        assert collectors.status()["svc"].next_poll_s is None


def test_start_is_idempotent_and_restartable(monitor: Monitor, server: Server) -> None:
    with server({("GET", "/"): Reply(200, b"ok")}) as srv:
        collectors = Collectors(monitor, [BackendConfig("svc", "http", srv.url, **FAST)])
        collectors.start()
        collectors.start()
        assert len(worker_threads("svc")) == 1
        collectors.stop()
        assert not worker_threads("svc")
        checks = monitor.stats("svc").health_checks
        with collectors:
            wait_until(lambda: monitor.stats("svc").health_checks > checks, what="polling again")
            assert len(worker_threads("svc")) == 1
        assert not worker_threads("svc")


def test_duplicate_names_are_rejected(monitor: Monitor) -> None:
    cfg = BackendConfig("svc", "http", refused_url())
    with pytest.raises(ValueError, match="'svc' is used twice"):
        Collectors(monitor, [cfg, cfg])


def test_works_on_the_engine_monitor_and_status_is_thread_safe(server: Server) -> None:
    with _core.Monitor() as engine, server({("GET", "/"): Reply(200, b"ok")}) as srv:
        configs = [BackendConfig(f"svc{i}", "http", srv.url, **FAST) for i in range(4)]
        with Collectors(engine, configs) as collectors:
            stop = threading.Event()
            snapshots: list[dict[str, BackendStatus]] = []

            def read() -> None:
                while not stop.is_set():
                    snapshots.append(collectors.status())

            readers = [threading.Thread(target=read) for _ in range(4)]
            for t in readers:
                t.start()
            wait_until(lambda: all(engine.stats(c.name).health_checks >= 3 for c in configs), what="polls")
            stop.set()
            for t in readers:
                t.join()
            assert snapshots and list(snapshots[-1]) == [c.name for c in configs]
            assert all(s.state == "up" for s in snapshots[-1].values())


# ---- check_once --------------------------------------------------------------------------------


def test_check_once_verdicts_in_config_order(server: Server) -> None:
    comfy_routes = {
        ("GET", "/api/prompt"): Reply(200, fixture("comfyui", "prompt_get.json")),
        ("GET", "/api/system_stats"): Reply(200, fixture("comfyui", "system_stats.json")),
    }
    with server(comfy_routes) as comfy, HangingServer() as hang, server({("GET", "/h"): Reply(503)}) as busy:
        t: dict[str, Any] = {"connect_timeout_s": 0.2, "read_timeout_s": 0.5}
        configs = [
            BackendConfig("hung", "comfyui", hang.url, **t),
            BackendConfig("comfy", "comfyui", comfy.url, **t),
            BackendConfig("gone", "comfyui", refused_url(), **t),
            BackendConfig("cloud", "openai", "https://api.example.com", **t),
            BackendConfig("busy", "http", busy.url, path="/h", **t),
            BackendConfig("off", "http", comfy.url, enabled=False, **t),
        ]
        t0 = time.monotonic()
        result = check_once(configs)
        elapsed = time.monotonic() - t0
    assert elapsed < 0.2 + 0.5 + scheduler.CHECK_GRACE_S
    assert [s.name for s in result] == [c.name for c in configs]
    by = {s.name: s for s in result}
    assert {n: s.state for n, s in by.items()} == {
        "hung": "down", "comfy": "up", "gone": "down", "cloud": "blocked", "busy": "down", "off": "disabled",
    }
    assert by["hung"].last_error_type == "timeout"
    assert by["gone"].last_error_type == "connection_refused"
    assert by["busy"].last_error_type == "server_busy"
    assert by["comfy"].version == "0.3.64"
    assert by["comfy"].capabilities["queue"] is not None
    assert by["comfy"].next_poll_s is None


def test_check_once_records_on_the_given_monitor(monitor: Monitor, server: Server) -> None:
    with server({("GET", "/"): Reply(200, b"ok")}) as srv:
        (st,) = check_once([BackendConfig("svc", "http", srv.url)], monitor=monitor)
    assert st.state == "up"
    s = monitor.stats("svc")
    assert (s.count, s.health_checks, s.up) == (1, 1, True)


# ---- Monitor hooks ----------------------------------------------------------------------------


def test_monitor_start_collectors_from_a_list_then_replaced_then_closed(server: Server) -> None:
    with server({("GET", "/"): Reply(200, b"ok")}) as srv:
        m = Monitor()
        assert m.collectors is None
        first = m.start_collectors([BackendConfig("a", "http", srv.url, **FAST)])
        assert m.collectors is first and first.running
        wait_until(lambda: m.stats("a").health_checks >= 1, what="a polled")
        second = m.start_collectors([BackendConfig("b", "http", srv.url, **FAST)])
        assert m.collectors is second
        assert not first.running and not worker_threads("a")
        wait_until(lambda: m.stats("b").health_checks >= 1, what="b polled")
        m.close()
        assert m.collectors is None
        assert not second.running and not worker_threads("b")


def test_monitor_start_collectors_from_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: Server) -> None:
    with server({("GET", "/ok"): Reply(200, b"ok")}) as srv:
        toml = tmp_path / "backends.toml"
        toml.write_text(
            f'[defaults]\ninterval_s = 0.1\n\n[[backend]]\nname = "farm"\nkind = "http"\n'
            f'url = "{srv.url}"\npath = "/ok"\n',
            encoding="utf-8",
        )
        with Monitor() as m:
            c = m.start_collectors(toml)
            assert [cfg.name for cfg in c.configs] == ["farm"]
            wait_until(lambda: c.status()["farm"].state == "up", what="farm up")

        monkeypatch.setenv(CONFIG_ENV, str(toml))  # the default location
        with Monitor() as m:
            c = m.start_collectors()
            wait_until(lambda: c.status()["farm"].state == "up", what="farm up")
        assert not worker_threads("farm")


def test_monitor_start_collectors_defaults_are_local_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))  # no file: the built-in defaults
    monkeypatch.setenv("HOME", str(tmp_path))
    with Monitor() as m:
        c = m.start_collectors()
        names = [cfg.name for cfg in c.configs]
        assert names == ["comfyui", "a1111", "ollama", "lmstudio"]
        assert all(cfg.host == "127.0.0.1" for cfg in c.configs)
        assert set(c.status()) == set(names)


def test_status_carries_models_and_detail(monitor: Monitor, server: Server) -> None:
    base = Path(__file__).parent / "fixtures" / "backends" / "ollama"
    routes = {
        ("GET", "/api/version"): Reply(200, (base / "api_version.json").read_bytes()),
        ("GET", "/api/ps"): Reply(200, (base / "api_ps.json").read_bytes()),
    }
    with server(routes) as srv:
        cfg = BackendConfig("ollama", "ollama", srv.url, **FAST)
        with Collectors(monitor, [cfg]) as collectors:
            wait_until(lambda: collectors.status()["ollama"].models != (), what="models")
            st = collectors.status()["ollama"]
            names = [m["name"] for m in json.loads((base / "api_ps.json").read_text())["models"]]
            assert st.models == tuple(names)
            assert st.version is not None


def test_ollama_loaded_models_become_llm_active_models(server: Server) -> None:
    base = Path(__file__).parent / "fixtures" / "backends" / "ollama"
    routes = {
        ("GET", "/api/version"): Reply(200, (base / "api_version.json").read_bytes()),
        ("GET", "/api/ps"): Reply(200, (base / "api_ps.json").read_bytes()),
    }
    names = [m["name"] for m in json.loads((base / "api_ps.json").read_text())["models"]]
    with server(routes) as srv, Monitor() as m:
        with Collectors(m, [BackendConfig("ollama", "ollama", srv.url, **FAST)]):
            wait_until(lambda: bool(m.llm.active_models("5m")), what="active models")
        active = m.llm.active_models("5m")
        assert [(a.provider, a.model, a.loaded, a.requests) for a in active] == [("ollama", n, True, 0) for n in sorted(names)]


# ---- update(): only the backends that changed restart ---------------------------------------


def test_update_keeps_unchanged_workers_and_their_schedule(monitor: Monitor, server: Server) -> None:
    """An edit of one backend restarts that backend's worker only: the
    others keep their thread and schedule, so a backend probed every 60 s
    is not probed again because another one changed (the Blender add-on
    applies every preference edit this way)."""
    with server({("GET", "/"): Reply(200, "ok")}) as slow, server({("GET", "/"): Reply(200, "ok")}) as fast:
        slow_cfg = BackendConfig("slow", "http", slow.url + "/", interval_s=60.0)
        fast_cfg = BackendConfig("fast", "http", fast.url + "/", **FAST)

        def probes(view: View) -> int:
            return sum(1 for _, path in view.server.hits if path.startswith(view.prefix + "/"))

        with Collectors(monitor, [slow_cfg, fast_cfg]) as col:
            wait_until(lambda: probes(slow) == 1 and probes(fast) >= 2, what="first probes")
            (slow_thread,) = worker_threads("slow")
            (fast_thread,) = worker_threads("fast")
            changed = BackendConfig("fast", "http", fast.url + "/", interval_s=0.1, connect_timeout_s=0.2, read_timeout_s=0.4)
            added = BackendConfig("added", "http", fast.url + "/", **FAST)
            assert col.update([slow_cfg, changed, added]) is col
            assert worker_threads("slow") == [slow_thread], "an unchanged backend keeps its worker"
            assert not fast_thread.is_alive() and worker_threads("fast") != [fast_thread], "a changed one restarts"
            wait_until(lambda: col.status()["added"].state == "up", what="the added backend")
            time.sleep(0.5)
            assert probes(slow) == 1, "the 60 s backend was not probed again"
            assert col.status()["slow"].state == "up" and col.configs == (slow_cfg, changed, added)
            # removed: its worker stops, its status goes
            col.update([slow_cfg, added])
            assert not worker_threads("fast") and list(col.status()) == ["slow", "added"]
            assert worker_threads("slow") == [slow_thread]
            # Online access turned on: every worker is replaced (blocked ones may now run)
            col.update([slow_cfg, added], allow_remote=True)
            assert worker_threads("slow") != [slow_thread] and col.allow_remote is True
            with pytest.raises(ConfigError, match="used twice"):
                col.update([slow_cfg, slow_cfg])
            assert list(col.status()) == ["slow", "added"], "a refused update changes nothing"
        assert not worker_threads("slow") and not worker_threads("added")


def test_update_before_start_only_replaces_the_list(monitor: Monitor) -> None:
    col = Collectors(monitor, [BackendConfig("a", "http", refused_url(), **FAST)])
    col.update([BackendConfig("b", "http", refused_url(), **FAST)])
    assert list(col.status()) == ["b"] and not col.running and not worker_threads("b")
    with col:
        wait_until(lambda: col.status()["b"].state == "down", what="b probed after start")
