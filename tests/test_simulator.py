"""The demo backends: real servers on loopback speaking ComfyUI's and an
OpenAI-compatible (llama.cpp) server's shapes, and the collectors reading
them end to end."""

from __future__ import annotations

import json
import socket
import statistics
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from movie_director_metrics import Monitor
from movie_director_metrics.collectors.http import HttpClient, ProbeError
from movie_director_metrics.simulator import Simulator


@pytest.fixture(autouse=True)
def _private_paths(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOVIE_DIRECTOR_METRICS_DB", str(tmp_path / "metrics.sqlite3"))
    monkeypatch.setenv("MOVIE_DIRECTOR_METRICS_CONFIG", str(tmp_path / "backends.toml"))


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


@pytest.fixture
def steady() -> Any:
    """No latency, no errors, jobs so long nothing moves during a test."""
    with Simulator(latency_ms=0, error_rate=0, queue=4, job_s=600, seed=3) as sim:
        yield sim


def test_comfyui_prompt_and_queue_agree(steady: Simulator) -> None:
    url = steady.comfyui.url
    for prefix in ("", "/api"):
        remaining = get(f"{url}{prefix}/prompt")["exec_info"]["queue_remaining"]
        queue = get(f"{url}{prefix}/queue")
        assert set(queue) == {"queue_running", "queue_pending"}
        assert remaining == len(queue["queue_running"]) + len(queue["queue_pending"])
        assert len(queue["queue_running"]) == 1 and 1 <= len(queue["queue_pending"]) <= 4
        for item in queue["queue_running"] + queue["queue_pending"]:
            number, prompt_id, prompt, extra, outputs = item
            assert isinstance(number, int) and isinstance(prompt_id, str)
            assert prompt["1"]["class_type"] == "EmptyImage"
            assert extra["create_time"] > 1e12  # epoch ms
            assert outputs == ["3"]


def test_comfyui_history_has_ms_timestamps_newest_last(steady: Simulator) -> None:
    history = get(f"{steady.comfyui.url}/history")
    assert len(history) == 5  # finished before the server started
    ends = []
    for entry in history.values():
        status = entry["status"]
        assert status["status_str"] == "success" and status["completed"] is True
        events = {name: data for name, data in status["messages"]}
        start, end = events["execution_start"]["timestamp"], events["execution_success"]["timestamp"]
        assert 1e12 < start < end <= time.time() * 1e3
        ends.append(end)
    assert ends == sorted(ends)
    two = get(f"{steady.comfyui.url}/api/history?max_items=2")
    assert list(two) == list(history)[-2:]
    one_id = list(history)[0]
    assert list(get(f"{steady.comfyui.url}/history/{one_id}")) == [one_id]
    assert get(f"{steady.comfyui.url}/history/unknown") == {}


def test_comfyui_prompts_complete_over_time() -> None:
    with Simulator(latency_ms=0, error_rate=0, queue=3, job_s=0.1, seed=5) as sim:
        first = get(f"{sim.comfyui.url}/history")
        time.sleep(0.6)
        later = get(f"{sim.comfyui.url}/history")
    assert len(later) > len(first)
    new = [later[k] for k in later if k not in first]
    starts = [dict(e["status"]["messages"])["execution_start"]["timestamp"] for e in new]
    assert starts == sorted(starts) and starts[0] >= max(
        dict(e["status"]["messages"])["execution_start"]["timestamp"] for e in first.values()
    )


def test_comfyui_post_prompt_enqueues(steady: Simulator) -> None:
    body = json.dumps({"prompt": {"1": {"class_type": "EmptyImage", "inputs": {}}}}).encode()
    req = urllib.request.Request(f"{steady.comfyui.url}/prompt", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        reply = json.loads(r.read())
    assert set(reply) == {"prompt_id", "number", "node_errors"}
    pending = get(f"{steady.comfyui.url}/queue")["queue_pending"]
    assert pending[-1][1] == reply["prompt_id"]
    bad = urllib.request.Request(f"{steady.comfyui.url}/prompt", data=b"{}", headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(bad, timeout=5)
    assert e.value.code == 400 and json.loads(e.value.read())["error"]["type"] == "no_prompt"


def test_comfyui_system_stats(steady: Simulator) -> None:
    stats = get(f"{steady.comfyui.url}/api/system_stats")
    dev = stats["devices"][0]
    assert 0 < dev["vram_free"] < dev["vram_total"] == 24 * 1024**3
    assert 0 < stats["system"]["ram_free"] < stats["system"]["ram_total"]
    assert stats["system"]["comfyui_version"] == "0.3.64"


def test_errors_hit_work_routes_not_liveness() -> None:
    with Simulator(latency_ms=0, error_rate=1.0, job_s=0.05, seed=1) as sim:
        assert status_of(f"{sim.comfyui.url}/prompt") == 200
        assert status_of(f"{sim.llm.url}/health") == 200
        codes = {status_of(f"{sim.comfyui.url}/queue") for _ in range(12)}
        assert codes == {500, 503}
        # Prompts fail too, as ComfyUI reports them.
        time.sleep(0.2)
        history = sim.comfyui.history
        assert history and all(e["status"]["status_str"] == "error" for e in history.values())
        events = [m[0] for e in history.values() for m in e["status"]["messages"]]
        assert "execution_error" in events and "execution_success" not in events


def test_latency_is_around_latency_ms() -> None:
    with Simulator(latency_ms=30, error_rate=0, seed=2) as sim:
        client = HttpClient(sim.llm.url)
        ms = [client.get("/health").latency_ms for _ in range(12)]
    assert 12 < statistics.median(ms) < 90, ms
    assert max(ms) < 30 * 8 + 50  # capped


def test_down_and_flap() -> None:
    with Simulator(latency_ms=0, error_rate=0, seed=4) as sim:
        client = HttpClient(sim.comfyui.url)
        assert client.get("/prompt").status == 200
        sim.set_down(True)
        with pytest.raises(ProbeError) as e:
            client.get("/prompt")
        assert e.value.error_type == "connection_reset"
        sim.set_down(False)
        assert client.get("/prompt").status == 200
    with Simulator(latency_ms=0, flap=True, flap_period_s=10, flap_down_s=4) as sim:
        t0 = sim.comfyui.started
        assert [sim.comfyui.is_down(t0 + dt) for dt in (0.0, 5.9, 6.1, 9.9, 10.1)] == [False, False, True, True, False]


def test_llm_models_metrics_and_chat(steady: Simulator) -> None:
    url = steady.llm.url
    models = get(f"{url}/v1/models")
    assert models["object"] == "list" and models["data"][0]["object"] == "model"
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
        text = r.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("llamacpp:requests_processing", "llamacpp:requests_deferred"):
        assert families[name].type == "gauge"
        assert families[name].samples[0].value >= 0
    assert families["llamacpp:tokens_predicted"].type == "counter"
    body = json.dumps({"model": "x", "messages": [{"role": "user", "content": "a shot list for a lighthouse"}]}).encode()
    req = urllib.request.Request(f"{url}/v1/chat/completions", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        reply = json.loads(r.read())
    usage = reply["usage"]
    assert usage["prompt_tokens"] > 0 and usage["prompt_tokens"] + usage["completion_tokens"] == usage["total_tokens"]
    assert reply["choices"][0]["message"]["role"] == "assistant"
    assert reply["timings"]["predicted_n"] == usage["completion_tokens"]


def test_configs_and_collectors_end_to_end() -> None:
    with Simulator(latency_ms=5, error_rate=0, seed=6) as sim, Monitor() as monitor:
        configs = sim.configs()
        assert [(c.name, c.kind) for c in configs] == [("comfyui-demo", "comfyui"), ("llm-demo", "openai")]
        assert all(c.url.startswith("http://127.0.0.1:") for c in configs)
        collectors = monitor.start_collectors(configs)
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            comfy, llm = monitor.stats("comfyui-demo"), monitor.stats("llm-demo")
            if comfy.processing_count and comfy.resources and comfy.queue_pending is not None and llm.queue_running is not None:
                break
            time.sleep(0.1)
        status = collectors.status()
    assert status["comfyui-demo"].state == "up" and status["llm-demo"].state == "up"
    assert comfy.processing_count >= 5 and comfy.processing_p95_ms is not None and comfy.processing_p95_ms > 100
    assert comfy.resources["vram_total_bytes"].last == 24 * 1024**3
    assert comfy.queue_running == 1
    assert llm.queue_running is not None and 0 <= llm.queue_running <= 2
    assert comfy.count > 0 and comfy.errors == 0 and comfy.up is True


def test_close_frees_ports_and_validates() -> None:
    sim = Simulator(latency_ms=0)
    ports = [b.port for b in sim.backends]
    sim.close()
    sim.close()  # idempotent
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    with pytest.raises(ValueError, match="error_rate=2"):
        Simulator(error_rate=2)
    with pytest.raises(ValueError, match="queue"):
        Simulator(queue=-1)
