"""The ComfyUI collector against real loopback servers serving the
responses recorded from a real ComfyUI 0.3.64 (shared/fixtures/comfyui).

Exact oracles come from the recordings themselves: processing times are
the fixtures' ``execution_success/error/interrupted - execution_start``
timestamps, queue depth their item counts, memory their byte counts.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loopback  # noqa: E402
from loopback import LoopbackServer, Reply, fixture, wait_until  # noqa: E402

from movie_director_metrics import Monitor  # noqa: E402
from movie_director_metrics.collectors import BackendConfig, ProbeError  # noqa: E402
from movie_director_metrics.collectors import comfyui  # noqa: E402
from movie_director_metrics.collectors.comfyui import HISTORY_ITEMS, ComfyUI  # noqa: E402
from movie_director_metrics.collectors.scheduler import Collectors  # noqa: E402


def load(name: str) -> Any:
    return json.loads(fixture("comfyui", name))


SYSTEM_STATS = load("system_stats.json")
SUMMARY = load("load_summary_n4.json")
RECORDED = load("history_prompt_id.json")  # one finished prompt, as ComfyUI stored it
ERRORED = load("history_execution_error.json")
INTERRUPTED = load("history_execution_interrupted.json")


def timestamps(entry: dict[str, Any]) -> dict[str, int]:
    return {name: data["timestamp"] for name, data in entry["status"]["messages"] if "timestamp" in data}


def run_ms(entry: dict[str, Any]) -> int:
    ts = timestamps(entry)
    end = next(ts[e] for e in ("execution_success", "execution_error", "execution_interrupted") if e in ts)
    return end - ts["execution_start"]


def history_of_load_run() -> list[tuple[str, dict[str, Any]]]:
    """The four prompts of the recorded load run as /history entries: the
    first is the recorded entry itself, the others are that entry with the
    ids and timestamps the same run recorded for them (load_summary_n4)."""
    (first_id, template), = RECORDED.items()
    out = []
    for p in SUMMARY["prompts"]:
        if p["prompt_id"] == first_id:
            out.append((first_id, template))
            continue
        e = copy.deepcopy(template)
        e["prompt"][0], e["prompt"][1] = p["number"], p["prompt_id"]
        stamps = {"execution_start": p["execution_start_ms"], "execution_cached": p["execution_cached_ms"],
                  "execution_success": p["end_ms"]}
        for name, data in e["status"]["messages"]:
            data["prompt_id"], data["timestamp"] = p["prompt_id"], stamps[name]
        out.append((p["prompt_id"], e))
    return out


LOAD_RUN = history_of_load_run()


class FakeComfy:
    """ComfyUI's routes answered with recorded payloads; its history, queue
    and stats can be changed while it runs.

    With ``shared`` it lives under a unique path on that server (the base
    URL carries the path, as a reverse proxy's would), because each real
    server costs ~0.5 s to shut down; without, it runs its own server.
    """

    _ids = iter(range(1_000_000))

    def __init__(self, shared: LoopbackServer | None = None, *, prefix: str = "/api", jobs: bool = False) -> None:
        self.history: dict[str, Any] = {}
        self.queue_remaining = 0
        self.queue: Any = load("queue_idle.json")
        self.stats: Any = copy.deepcopy(SYSTEM_STATS)
        self.base = "" if shared is None else f"/c{next(self._ids)}"
        routes: dict[tuple[str, str], Any] = {
            ("GET", f"{prefix}/prompt"): lambda h: Reply(200, {"exec_info": {"queue_remaining": self.queue_remaining}}),
            ("GET", f"{prefix}/queue"): lambda h: Reply(200, self.queue),
            ("GET", f"{prefix}/history"): self._history,
            ("GET", f"{prefix}/system_stats"): lambda h: Reply(200, self.stats),
        }
        if jobs:
            routes[("GET", "/api/jobs")] = self._jobs
        self.owned = shared is None
        self.server = LoopbackServer() if shared is None else shared
        for (method, path), reply in routes.items():
            self.server.routes[(method, self.base + path)] = reply
        self.url = self.server.url + self.base

    def route(self, path: str, reply: Any) -> None:
        self.server.routes[("GET", self.base + path)] = reply

    def _history(self, handler: BaseHTTPRequestHandler) -> Reply:
        # Like ComfyUI's get_history: the newest max_items, oldest first.
        q = parse_qs(urlsplit(handler.path).query)
        items = list(self.history.items())
        if "max_items" in q:
            items = items[-int(q["max_items"][0]):]
        return Reply(200, dict(items))

    def _jobs(self, handler: BaseHTTPRequestHandler) -> Reply:
        # Like comfy_execution/jobs.py normalize_history_item, newest first.
        q = parse_qs(urlsplit(handler.path).query)
        jobs = []
        for pid, e in reversed(self.history.items()):
            ts = timestamps(e)
            ended = [k for k in ("execution_success", "execution_error", "execution_interrupted") if k in ts]
            status = {"execution_success": "completed", "execution_error": "failed",
                      "execution_interrupted": "cancelled"}[ended[0]]
            jobs.append({"id": pid, "status": status, "priority": e["prompt"][0],
                         "execution_start_time": ts["execution_start"], "execution_end_time": ts[ended[0]],
                         "outputs_count": 0})
        limit = int(q.get("limit", ["1000"])[0])
        return Reply(200, {"jobs": jobs[:limit], "pagination": {"offset": 0, "limit": limit, "total": len(jobs),
                                                              "has_more": len(jobs) > limit}})

    def paths(self) -> list[str]:
        """Paths this ComfyUI was asked for, with their query strings."""
        with self.server._lock:
            hits = list(self.server.hits)
        n = len(self.base)
        return [p[n:] for _, p in hits if p.startswith(self.base + "/")]

    def hits(self, path: str) -> int:
        return sum(1 for p in self.paths() if p.split("?")[0] == path)

    def close(self) -> None:
        if self.owned:
            self.server.close()
        else:
            for key in [k for k in self.server.routes if k[1].startswith(self.base + "/")]:
                del self.server.routes[key]


@pytest.fixture
def monitor() -> Iterator[Monitor]:
    with Monitor() as m:
        yield m


@pytest.fixture(scope="module")
def shared() -> Iterator[LoopbackServer]:
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture
def comfy(shared: LoopbackServer) -> Iterator[FakeComfy]:
    fake = FakeComfy(shared)
    yield fake
    fake.close()


def backend(fake: FakeComfy, monitor: Monitor, name: str = "comfyui") -> ComfyUI:
    cfg = BackendConfig(name, "comfyui", fake.url, connect_timeout_s=0.5, read_timeout_s=1.0)
    return ComfyUI(cfg, monitor.service(name))


def poll(b: ComfyUI) -> None:
    """One worker cycle, by hand: probe, detect once, collect."""
    b.probe()
    if not b.detected:
        b.detect()
        b.detected = True
    b.collect()


# ---- the fixtures themselves ---------------------------------------------------


def test_recorded_history_agrees_with_the_recorded_load_summary() -> None:
    # The oracle below rests on this: the real /history entry and the load
    # run's ground truth give the same processing time for the same prompt.
    (pid, entry), = RECORDED.items()
    first = next(p for p in SUMMARY["prompts"] if p["prompt_id"] == pid)
    assert run_ms(entry) == first["run_ms"] == 1718
    assert [run_ms(e) for _, e in LOAD_RUN] == [p["run_ms"] for p in SUMMARY["prompts"]] == [1718, 1635, 1683, 1698]


# ---- queue -------------------------------------------------------------------------


def test_queue_depth_from_prompt_and_queue(comfy: FakeComfy, monitor: Monitor) -> None:
    b = backend(comfy, monitor)
    busy = load("queue_busy.json")
    comfy.queue_remaining = len(busy["queue_running"]) + len(busy["queue_pending"])  # 4, as recorded
    comfy.queue = busy
    poll(b)
    s = monitor.stats("comfyui")
    assert (s.queue_running, s.queue_pending) == (1, 3)
    assert comfy.hits("/api/queue") == 1

    # The same count: the split read then still holds, and /queue (whose
    # items carry whole prompt graphs) is not read again.
    poll(b)
    poll(b)
    assert comfy.hits("/api/queue") == 1
    assert (monitor.stats("comfyui").queue_running, monitor.stats("comfyui").queue_pending) == (1, 3)

    # Busy by /prompt but drained by the time /queue answers: queue_idle.
    comfy.queue_remaining = 2
    comfy.queue = load("queue_idle.json")
    poll(b)
    s = monitor.stats("comfyui")
    assert (s.queue_running, s.queue_pending) == (0, 0)
    assert s.queue_depth_max == 4
    # That reply did not match its count: the next cycle reads /queue again.
    poll(b)
    assert comfy.hits("/api/queue") == 3

    # Idle by /prompt: no /queue call at all.
    queue_calls = comfy.hits("/api/queue")
    comfy.queue_remaining = 0
    poll(b)
    assert comfy.hits("/api/queue") == queue_calls
    assert (monitor.stats("comfyui").queue_running, monitor.stats("comfyui").queue_pending) == (0, 0)


def test_malformed_queue_reply_is_one_bad_json_and_read_again(comfy: FakeComfy, monitor: Monitor) -> None:
    b = backend(comfy, monitor)
    poll(b)
    comfy.queue_remaining = 1
    comfy.queue = {"queue_running": "one"}
    b.probe()
    with pytest.raises(ProbeError) as e:
        b.collect()
    assert e.value.error_type == "bad_json"
    assert monitor.stats("comfyui").error_counts == {"bad_json": 1}
    comfy.queue = load("queue_busy.json")
    comfy.queue_remaining = 4
    poll(b)
    assert (monitor.stats("comfyui").queue_running, monitor.stats("comfyui").queue_pending) == (1, 3)


# ---- processing time -----------------------------------------------------------------


def finish(comfy: FakeComfy, *entries: tuple[str, dict[str, Any]]) -> None:
    """Prompts finish as on a real ComfyUI: they land in history and leave
    the queue (its count falls by as many)."""
    comfy.history.update(entries)
    comfy.queue_remaining -= len(entries)


def test_each_prompt_counted_once_while_history_grows(comfy: FakeComfy, monitor: Monitor) -> None:
    b = backend(comfy, monitor)
    svc = monitor.service("comfyui")
    # First poll: one prompt already finished before monitoring began.
    comfy.history = dict(LOAD_RUN[:1])
    comfy.queue_remaining = 5  # the other five are queued
    poll(b)
    assert svc.totals()["processing_count"] == 1
    poll(b)
    poll(b)  # nothing new: nothing recorded
    assert svc.totals()["processing_count"] == 1
    finish(comfy, *LOAD_RUN[1:3])
    poll(b)
    finish(comfy, *LOAD_RUN[3:])
    poll(b)
    poll(b)
    finish(comfy, *ERRORED.items(), *INTERRUPTED.items())
    assert comfy.queue_remaining == 0
    poll(b)
    poll(b)

    expected = [run_ms(e) for _, e in LOAD_RUN] + [run_ms(e) for e in (*ERRORED.values(), *INTERRUPTED.values())]
    assert expected == [1718, 1635, 1683, 1698, 46, 1003]
    totals = svc.totals()
    assert totals["processing_count"] == len(expected)
    assert totals["processing_sum_ms"] == pytest.approx(sum(expected), abs=1e-9)
    s = monitor.stats("comfyui")
    assert s.processing_count == 6
    assert s.processing_avg_ms == pytest.approx(sum(expected) / 6)
    assert b.executions == {"success": 4, "execution_error": 1, "interrupted": 1}
    # Execution failures are outcomes of jobs, not failed requests: every
    # HTTP call succeeded.
    assert s.errors == 0
    # History is read at the first poll and when prompts finished, each
    # time for what finished plus one entry already seen; never all of it.
    reads = [p for p in comfy.paths() if p.startswith("/api/history")]
    assert reads == [f"/api/history?max_items={HISTORY_ITEMS}", "/api/history?max_items=3",
                     "/api/history?max_items=2", "/api/history?max_items=3"]


def test_idle_polls_do_not_read_history(
    comfy: FakeComfy, monitor: Monitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A full history of an idle server: after the first read, a poll costs
    # /prompt and /system_stats whatever the history holds, plus one entry
    # every HISTORY_SWEEP_S.
    for i in range(HISTORY_ITEMS):
        pid, e = LOAD_RUN[0]
        comfy.history[f"p{i}"] = e
    b = backend(comfy, monitor)
    poll(b)
    first = len(comfy.paths())
    for _ in range(5):
        poll(b)
    assert comfy.paths()[first:] == ["/api/prompt", "/api/system_stats"] * 5
    assert monitor.service("comfyui").totals()["processing_count"] == HISTORY_ITEMS

    monkeypatch.setattr(comfyui, "HISTORY_SWEEP_S", 0.0)
    poll(b)
    assert comfy.paths()[-2:] == ["/api/history?max_items=1", "/api/system_stats"]
    assert monitor.service("comfyui").totals()["processing_count"] == HISTORY_ITEMS


def test_prompts_the_queue_count_never_showed_are_found_by_the_sweep(
    comfy: FakeComfy, monitor: Monitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = backend(comfy, monitor)
    svc = monitor.service("comfyui")
    poll(b)
    # Submitted and finished between two polls (a cached re-run takes
    # milliseconds): the count reads 0 before and after.
    comfy.history.update(LOAD_RUN[:1])
    poll(b)
    assert svc.totals()["processing_count"] == 0  # not yet: nothing said a prompt finished
    monkeypatch.setattr(comfyui, "HISTORY_SWEEP_S", 0.0)
    poll(b)
    assert svc.totals()["processing_count"] == 1
    monkeypatch.setattr(comfyui, "HISTORY_SWEEP_S", 3600.0)

    # A finish hidden by a submission in the same interval: the count stays
    # at 1, the running prompt changed.
    comfy.queue_remaining = 1
    poll(b)
    comfy.history.update(LOAD_RUN[1:2])
    poll(b)
    assert svc.totals()["processing_count"] == 1

    # Five finished while the count fell by one: the read doubles until it
    # reaches an entry it had seen.
    comfy.history.update(LOAD_RUN[2:])
    comfy.history.update(ERRORED)
    comfy.history.update(INTERRUPTED)
    comfy.queue_remaining = 0
    poll(b)
    assert svc.totals()["processing_count"] == 7 - 1  # LOAD_RUN (4), ERRORED, INTERRUPTED
    reads = [p for p in comfy.paths() if p.startswith("/api/history")]
    assert reads[-3:] == ["/api/history?max_items=2", "/api/history?max_items=4", "/api/history?max_items=8"]
    assert svc.totals()["processing_sum_ms"] == pytest.approx(1718 + 1635 + 1683 + 1698 + 46 + 1003)


def test_a_cleared_history_is_read_again_from_its_newest(
    comfy: FakeComfy, monitor: Monitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # POST /history {"clear": true} (or a restart) empties it: what
    # finishes afterwards is all new, and found.
    comfy.history = dict(LOAD_RUN[:2])
    b = backend(comfy, monitor)
    poll(b)
    comfy.history = {}
    comfy.queue_remaining = 2
    poll(b)
    finish(comfy, *LOAD_RUN[2:])
    poll(b)
    assert monitor.service("comfyui").totals()["processing_count"] == 4


def test_only_the_newest_history_items_are_read(comfy: FakeComfy, monitor: Monitor) -> None:
    b = backend(comfy, monitor)
    for i in range(HISTORY_ITEMS + 10):
        pid, e = LOAD_RUN[0]
        e = copy.deepcopy(e)
        e["status"]["messages"][-1][1]["timestamp"] = timestamps(e)["execution_start"] + i
        comfy.history[f"p{i}"] = e
    poll(b)
    totals = monitor.service("comfyui").totals()
    assert totals["processing_count"] == HISTORY_ITEMS
    # The newest HISTORY_ITEMS: durations 10 .. HISTORY_ITEMS + 9 ms.
    assert totals["processing_sum_ms"] == sum(range(10, HISTORY_ITEMS + 10))


def test_processing_from_api_jobs_when_the_build_has_it(monitor: Monitor, shared: LoopbackServer) -> None:
    fake = FakeComfy(shared, jobs=True)
    try:
        b = backend(fake, monitor)
        fake.history = dict(LOAD_RUN[:2])
        fake.queue_remaining = 1
        poll(b)
        assert "/api/jobs" in (b.capabilities.available["processing"])
        # Three finish while the count falls by one (two more were queued
        # and ran between polls): pagination.total says three are new.
        fake.history.update(LOAD_RUN[2:])
        fake.history.update(ERRORED)
        fake.queue_remaining = 0
        poll(b)
        poll(b)
        totals = monitor.service("comfyui").totals()
        assert totals["processing_count"] == 5
        assert totals["processing_sum_ms"] == 1718 + 1635 + 1683 + 1698 + 46
        assert b.executions == {"success": 4, "execution_error": 1, "interrupted": 0}
        assert fake.hits("/api/history") == 0
        reads = [p.rsplit("limit=", 1)[1] for p in fake.paths() if p.startswith("/api/jobs?status=")]
        assert reads == [str(HISTORY_ITEMS), "2", "4"]
    finally:
        fake.close()


def test_history_fallback_when_api_jobs_is_missing(comfy: FakeComfy, monitor: Monitor) -> None:
    b = backend(comfy, monitor)
    poll(b)
    assert comfy.hits("/api/jobs") == 1  # asked once, at detect; 404
    assert "/history" in b.capabilities.available["processing"]
    poll(b)
    assert comfy.hits("/api/jobs") == 1
    assert monitor.stats("comfyui").errors == 0  # the 404 of a discovery call is not a failure


# ---- resources, version, capabilities ------------------------------------------------


def test_memory_and_version_from_system_stats(comfy: FakeComfy, monitor: Monitor) -> None:
    b = backend(comfy, monitor)
    poll(b)
    r = monitor.stats("comfyui").resources
    dev, system = SYSTEM_STATS["devices"][0], SYSTEM_STATS["system"]
    assert r["vram_used_bytes"].last == dev["vram_total"] - dev["vram_free"] == 1_305_669_632
    assert r["vram_total_bytes"].last == dev["vram_total"]
    assert r["ram_used_bytes"].last == system["ram_total"] - system["ram_free"]
    assert r["ram_total_bytes"].last == system["ram_total"]
    assert "gpu_util_pct" not in r
    assert b.version == "0.3.64"

    caps = b.capabilities
    assert set(caps.available) == {"health", "queue", "processing", "resources"}
    assert caps.missing["gpu_util"] == "ComfyUI reports memory only"
    assert "models" in caps.missing and caps.as_dict()["models"] is None


def test_older_build_without_api_prefix(monitor: Monitor, shared: LoopbackServer) -> None:
    fake = FakeComfy(shared, prefix="")
    try:
        fake.history = dict(LOAD_RUN[:1])
        b = backend(fake, monitor)
        poll(b)
        poll(b)
        assert b.capabilities.available["health"] == "GET /prompt"
        assert fake.hits("/api/prompt") == 1  # tried once before detection, 404
        assert fake.hits("/prompt") == 2
        assert monitor.service("comfyui").totals()["processing_count"] == 1
        assert b.version == "0.3.64"
        assert monitor.stats("comfyui").errors == 0
    finally:
        fake.close()


# ---- malformed replies ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        Reply(200, b"<html>not json</html>"),
        Reply(200, [1, 2, 3]),
        Reply(200, {"exec_info": {}}),
        Reply(200, {"exec_info": {"queue_remaining": "four"}}),
    ],
    ids=["html", "list", "no-count", "text-count"],
)
def test_malformed_prompt_reply_is_one_bad_json_request(comfy: FakeComfy, monitor: Monitor, reply: Reply) -> None:
    b = backend(comfy, monitor)
    poll(b)
    comfy.route("/api/prompt", reply)
    with pytest.raises(ProbeError) as e:
        b.probe()
    assert e.value.error_type == "bad_json"
    s = monitor.stats("comfyui")
    assert s.error_counts == {"bad_json": 1}
    assert s.errors == 1


def test_truncated_prompt_reply_is_one_connection_reset(comfy: FakeComfy, monitor: Monitor) -> None:
    # Fewer bytes than the Content-Length promised: the connection was cut.
    b = backend(comfy, monitor)
    poll(b)
    comfy.route("/api/prompt", Reply(200, json.dumps({"exec_info": {"queue_remaining": 4}}), truncate_to=12))
    with pytest.raises(ProbeError) as e:
        b.probe()
    assert e.value.error_type == "connection_reset"
    assert "truncated body (12 of" in str(e.value)
    assert monitor.stats("comfyui").error_counts == {"connection_reset": 1}


def test_one_failing_signal_does_not_stop_the_others(comfy: FakeComfy, monitor: Monitor) -> None:
    b = backend(comfy, monitor)
    poll(b)
    comfy.queue_remaining = 4
    poll(b)
    comfy.route("/api/history", Reply(500, {"error": "boom"}))
    finish(comfy, *LOAD_RUN)
    stats_calls = comfy.hits("/api/system_stats")
    b.probe()
    with pytest.raises(ProbeError) as e:
        b.collect()
    assert e.value.error_type == "http_5xx"
    assert comfy.hits("/api/system_stats") == stats_calls + 1  # resources still read
    assert monitor.stats("comfyui").error_counts == {"http_5xx": 1}
    # The failed read is tried again next cycle: nothing that finished is lost.
    comfy.route("/api/history", comfy._history)
    poll(b)
    assert monitor.service("comfyui").totals()["processing_count"] == 4


# ---- through the worker: transitions, uptime, re-detection -------------------------------


@pytest.fixture
def fixed_port(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Makes the next LoopbackServer bind a chosen port (a restarted server)."""

    def use(port: int) -> None:
        class FixedPortServer(ThreadingHTTPServer):
            def __init__(self, addr: tuple[str, int], handler: Any) -> None:
                super().__init__((addr[0], port), handler)

        monkeypatch.setattr(loopback, "ThreadingHTTPServer", FixedPortServer)

    return use


def test_down_up_transitions_uptime_and_redetect_after_restart(
    monitor: Monitor, fixed_port: Callable[[int], None]
) -> None:
    first = FakeComfy()
    first.history = dict(LOAD_RUN[:2])
    cfg = BackendConfig("comfyui", "comfyui", first.url, interval_s=0.05, connect_timeout_s=0.2, read_timeout_s=0.5)
    with Collectors(monitor, [cfg]) as collectors:
        wait_until(lambda: collectors.status()["comfyui"].state == "up", what="up")
        wait_until(lambda: monitor.service("comfyui").totals()["processing_count"] == 2, what="2 prompts")
        assert collectors.status()["comfyui"].version == "0.3.64"
        time.sleep(1.1)  # uptime is time-weighted in whole seconds

        port = first.server.port
        first.close()  # the server goes away (a request caught mid-close is reset): refused
        wait_until(lambda: collectors.status()["comfyui"].last_error_type == "connection_refused", what="refused")
        assert collectors.status()["comfyui"].state == "down"
        assert monitor.stats("comfyui").up is False
        time.sleep(1.1)

        fixed_port(port)  # restarted on the same port, upgraded
        second = FakeComfy()
        try:
            assert second.server.port == port
            second.stats["system"]["comfyui_version"] = "0.3.70"
            second.history = dict(LOAD_RUN)  # a fresh server; ids already counted stay counted
            wait_until(lambda: collectors.status()["comfyui"].version == "0.3.70", what="re-detect")
            st = collectors.status()["comfyui"]
            assert st.state == "up" and st.failures == 0
            wait_until(lambda: monitor.service("comfyui").totals()["processing_count"] == 4, what="4 prompts")
            s = monitor.stats("comfyui")
            assert s.up is True
            assert s.uptime_pct is not None and 0 < s.uptime_pct < 100
            assert s.error_counts.get("connection_refused", 0) >= 1
            time.sleep(0.3)
            assert monitor.service("comfyui").totals()["processing_count"] == 4
        finally:
            second.close()


def test_server_dropping_connections_is_connection_reset(comfy: FakeComfy, monitor: Monitor) -> None:
    cfg = BackendConfig("comfyui", "comfyui", comfy.url, interval_s=0.05, connect_timeout_s=0.2, read_timeout_s=0.5)
    with Collectors(monitor, [cfg]) as collectors:
        wait_until(lambda: collectors.status()["comfyui"].state == "up", what="up")
        comfy.route("/api/prompt", Reply(drop=True))
        wait_until(lambda: collectors.status()["comfyui"].state == "down", what="down")
        assert collectors.status()["comfyui"].last_error_type == "connection_reset"
        assert monitor.stats("comfyui").error_counts.get("connection_reset", 0) >= 1
        calls = len(comfy.paths())
        comfy.route("/api/prompt", Reply(200, {"exec_info": {"queue_remaining": 0}}))
        wait_until(lambda: collectors.status()["comfyui"].state == "up", what="up again")
        assert len(comfy.paths()) > calls



def test_resources_off_keeps_memory_unread(comfy: FakeComfy, monitor: Monitor) -> None:
    cfg = BackendConfig("comfyui", "comfyui", comfy.url, interval_s=0.05, connect_timeout_s=0.2, read_timeout_s=0.5)
    with Collectors(monitor, [cfg], resources=False) as collectors:
        wait_until(lambda: monitor.stats("comfyui").health_checks >= 3, what="3 polls")
        st = collectors.status()["comfyui"]
        assert st.capabilities["resources"] is None
        assert "resources=False" in st.missing["resources"]
        assert st.version == "0.3.64"  # read once, at detect
        assert comfy.hits("/api/system_stats") == 1
        assert monitor.stats("comfyui").resources == {}
