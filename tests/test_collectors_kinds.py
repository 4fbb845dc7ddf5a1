"""The a1111, ollama and openai backend kinds against real loopback HTTP
servers serving the payloads in ``tests/fixtures/backends`` (see its
README for where each shape comes from).

probe/detect/collect are driven directly, the way the scheduler's worker
calls them, on engine services; what they recorded is read back with
``monitor.stats(name, "5m")``.
"""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from loopback import HangingServer, LoopbackServer, Reply, refused_url
from movie_director_metrics._core import Monitor
from movie_director_metrics.collectors import BackendConfig, ProbeError
from movie_director_metrics.collectors.a1111 import A1111, MAX_OOM_EVENTS_PER_READ
from movie_director_metrics.collectors.a1111 import PROCESSING_NA as A1111_PROCESSING_NA
from movie_director_metrics.collectors.base import Backend
from movie_director_metrics.collectors.kinds import backend_class
from movie_director_metrics.collectors.ollama import QUEUE_NA, Ollama
from movie_director_metrics.collectors.openai import OpenAICompatible, parse_prometheus
from movie_director_metrics.errors import InvalidValueError

FIX = Path(__file__).resolve().parent / "fixtures" / "backends"
T0 = 1_700_000_000.0
NAME = "svc"
KEY_ENV = "MDM_TEST_API_KEY"
SECRET = "sk-test-9f8e7d6c5b4a39281706fedcba0123456789abcdef"


def fx(path: str) -> bytes:
    return FIX.joinpath(path).read_bytes()


def jfx(path: str) -> Any:
    return json.loads(fx(path))


def ok(path: str) -> Reply:
    return Reply(200, fx(path))


def text(path: str) -> Reply:
    return Reply(200, fx(path), headers={"Content-Type": "text/plain; version=0.0.4"})


@pytest.fixture
def mon() -> Iterator[Monitor]:
    m = Monitor(manual_clock=True, start_time=T0)
    yield m
    m.close()


def make(cls: type[Backend], url: str, mon: Monitor, **cfg: Any) -> Any:
    config = BackendConfig(NAME, cls.kind, url, connect_timeout_s=0.5, read_timeout_s=1.0, **cfg)
    return cls(config, mon.service(NAME))


def errors(mon: Monitor) -> dict[str, int]:
    return mon.stats(NAME, "5m").error_counts


def test_registry_resolves_the_three_kinds() -> None:
    assert backend_class("a1111") is A1111
    assert backend_class("ollama") is Ollama
    assert backend_class("openai") is OpenAICompatible


# ---- AUTOMATIC1111 / Forge -----------------------------------------------------------


def a1111_routes(busy: bool = False) -> dict[tuple[str, str], Any]:
    state = "busy" if busy else "idle"
    return {
        ("GET", "/internal/ping"): ok("a1111/internal_ping.json"),
        ("GET", "/internal/pending-tasks"): ok(f"a1111/internal_pending-tasks_{state}.json"),
        ("GET", "/sdapi/v1/progress"): ok(f"a1111/sdapi_v1_progress_{state}.json"),
        ("GET", "/sdapi/v1/memory"): ok("a1111/sdapi_v1_memory.json"),
        ("GET", "/sdapi/v1/options"): ok("a1111/sdapi_v1_options.json"),
    }


def test_a1111_idle(mon: Monitor) -> None:
    with LoopbackServer(a1111_routes()) as srv:
        b = make(A1111, srv.url, mon)
        assert b.probe() > 0
        caps = b.detect()
        assert b.detected
        assert caps.available["health"] == "GET /internal/ping"
        assert caps.available["queue"].startswith("GET /internal/pending-tasks (size: waiting) + GET /sdapi/v1/progress")
        assert caps.available["resources"] == (
            "GET /sdapi/v1/memory (ram_total_bytes, ram_used_bytes, vram_total_bytes, vram_used_bytes)"
        )
        assert caps.available["models"] == "GET /sdapi/v1/options (sd_model_checkpoint)"
        assert caps.missing == {"processing": A1111_PROCESSING_NA}
        assert "track()" in caps.missing["processing"]
        b.collect()
        assert ("GET", "/sdapi/v1/progress?skip_current_image=true") in srv.hits
    st = mon.stats(NAME, "5m")
    assert (st.queue_running, st.queue_pending) == (0, 0)
    mem = jfx("a1111/sdapi_v1_memory.json")
    assert st.resources["vram_used_bytes"].last == mem["cuda"]["system"]["used"]
    assert st.resources["vram_total_bytes"].last == mem["cuda"]["system"]["total"]
    assert st.resources["ram_used_bytes"].last == mem["ram"]["used"]
    assert st.resources["ram_total_bytes"].last == mem["ram"]["total"]
    assert b.models == ["v1-5-pruned-emaonly.safetensors [6ce0161689]"]
    assert b.detail == {}
    assert st.errors == 0 and st.count == 1 + 4 + 3  # probe, detect, collect (options not re-read)
    assert st.processing_count == 0


def test_a1111_busy_queue_and_progress_detail(mon: Monitor) -> None:
    with LoopbackServer(a1111_routes(busy=True)) as srv:
        b = make(A1111, srv.url, mon)
        b.probe()
        b.detect()
        b.collect()
    st = mon.stats(NAME, "5m")
    # pending-tasks lists the waiting jobs; the running one comes from progress.
    assert (st.queue_running, st.queue_pending) == (1, 2)
    assert b.detail == {"progress": "45%", "eta_s": "3.2", "step": "9/20", "job": "1/1"}
    assert st.processing_count == 0  # progress is a status detail, not a processing time


def test_a1111_oom_events_each_counted_once(mon: Monitor) -> None:
    memory = jfx("a1111/sdapi_v1_memory.json")
    # Lifetime counter as the webui reports it: 5 before we watch, then 5, 6,
    # 6, 8, a restart (back to 1), 1.
    sequence = iter([5, 5, 6, 6, 8, 1, 1])

    def reply(_: BaseHTTPRequestHandler) -> Reply:
        memory["cuda"]["events"]["oom"] = next(sequence)
        return Reply(200, memory)

    routes = a1111_routes()
    routes[("GET", "/sdapi/v1/memory")] = reply
    with LoopbackServer(routes) as srv:
        b = make(A1111, srv.url, mon)
        b.probe()
        b.detect()  # baseline: the 5 earlier events are history
        expected_after = [0, 1, 1, 3, 4, 4]
        for want in expected_after:
            b.collect()
            assert errors(mon).get("oom", 0) == want
    st = mon.stats(NAME, "5m")
    assert st.error_counts == {"oom": 4}
    assert st.last_error == "oom"
    assert b.detail["oom_events"] == "1 CUDA OOM event(s) since the webui started"


def test_a1111_oom_counter_jumps_are_capped(mon: Monitor) -> None:
    memory = jfx("a1111/sdapi_v1_memory.json")
    sequence = iter([0, 1_000_000, -3])

    def reply(_: BaseHTTPRequestHandler) -> Reply:
        memory["cuda"]["events"]["oom"] = next(sequence)
        return Reply(200, memory)

    routes = a1111_routes()
    routes[("GET", "/sdapi/v1/memory")] = reply
    with LoopbackServer(routes) as srv:
        b = make(A1111, srv.url, mon)
        b.detect()
        b.collect()  # a broken counter must not stall the worker
        assert errors(mon) == {"oom": MAX_OOM_EVENTS_PER_READ}
        b.collect()  # a negative count is ignored
    assert errors(mon) == {"oom": MAX_OOM_EVENTS_PER_READ}


def test_a1111_passing_failure_at_detection_is_retried(mon: Monitor) -> None:
    with LoopbackServer(a1111_routes()) as srv:
        srv.routes[("GET", "/sdapi/v1/memory")] = Reply(500, {"error": "RuntimeError"})
        b = make(A1111, srv.url, mon, interval_s=0.1)
        caps = b.detect()
        assert caps.missing["resources"] == "GET /sdapi/v1/memory: HTTP 500 (detection will retry)"
        srv.routes[("GET", "/sdapi/v1/memory")] = ok("a1111/sdapi_v1_memory.json")
        time.sleep(0.06)  # re-detection waits half an interval
        b.collect()
    assert caps.has("resources") and "will retry" not in str(caps.missing)
    assert mon.stats(NAME, "5m").resources["vram_used_bytes"].last == 10_724_311_040


def test_a1111_cuda_half_is_an_error(mon: Monitor) -> None:
    routes = a1111_routes()
    routes[("GET", "/sdapi/v1/memory")] = ok("a1111/sdapi_v1_memory_cuda_error.json")
    with LoopbackServer(routes) as srv:
        b = make(A1111, srv.url, mon)
        caps = b.detect()
        assert caps.available["resources"] == (
            "GET /sdapi/v1/memory (ram_total_bytes, ram_used_bytes); vram n/a: the webui reported 'unavailable'"
        )
        b.collect()
    st = mon.stats(NAME, "5m")
    assert set(st.resources) == {"ram_used_bytes", "ram_total_bytes"}  # no vram zeros
    assert b.detail["memory"] == "vram n/a: the webui reported 'unavailable'"


def test_a1111_both_halves_errors_make_resources_na(mon: Monitor) -> None:
    routes = a1111_routes()
    routes[("GET", "/sdapi/v1/memory")] = ok("a1111/sdapi_v1_memory_both_error.json")
    with LoopbackServer(routes) as srv:
        b = make(A1111, srv.url, mon)
        caps = b.detect()
        b.collect()
    assert caps.missing["resources"] == (
        "GET /sdapi/v1/memory: ram n/a: the webui reported \"No module named 'psutil'\"; "
        "vram n/a: the webui reported 'unavailable'"
    )
    assert mon.stats(NAME, "5m").resources == {}


def api_auth_routes(user_pass: str) -> dict[tuple[str, str], Any]:
    """--api-auth: /sdapi/* needs HTTP Basic; /internal/* does not."""
    expected = "Basic " + base64.b64encode(user_pass.encode()).decode()
    routes = a1111_routes()
    for key, good in list(routes.items()):
        if key[1].startswith("/sdapi/"):

            def guarded(h: BaseHTTPRequestHandler, good: Reply = good) -> Reply:
                if h.headers.get("Authorization") == expected:
                    return good
                return Reply(401, fx("a1111/sdapi_401_api_auth.json"), headers={"WWW-Authenticate": "Basic"})

            routes[key] = guarded
    return routes


def test_a1111_api_auth_without_credentials(mon: Monitor) -> None:
    with LoopbackServer(api_auth_routes("director:hunter2")) as srv:
        b = make(A1111, srv.url, mon)
        b.probe()  # /internal/ping is outside --api-auth
        caps = b.detect()
        want = (
            "HTTP 401: the webui wants credentials (--api-auth); set api_key_env to the name of "
            "an environment variable holding user:password"
        )
        assert caps.missing["resources"] == f"GET /sdapi/v1/memory: {want}"
        assert caps.missing["models"] == f"GET /sdapi/v1/options: {want}"
        assert caps.available["queue"] == (
            f"GET /internal/pending-tasks (size: waiting; running reported as 0: /sdapi/v1/progress {want})"
        )
        b.collect()
    st = mon.stats(NAME, "5m")
    assert st.error_counts == {"http_4xx": 3}
    assert (st.queue_running, st.queue_pending) == (0, 0)


def test_a1111_api_auth_with_credentials_from_env(mon: Monitor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "director:hunter2")
    with LoopbackServer(api_auth_routes("director:hunter2")) as srv:
        b = make(A1111, srv.url, mon, api_key_env=KEY_ENV)
        caps = b.detect()
        b.collect()
    assert set(caps.available) == {"health", "queue", "resources", "models"}
    assert errors(mon) == {}
    assert "hunter2" not in repr(b) + repr(b.config) + str(caps.as_dict()) + str(caps.missing)


def test_a1111_api_auth_wrong_credentials(mon: Monitor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "director:wrong")
    with LoopbackServer(api_auth_routes("director:hunter2")) as srv:
        b = make(A1111, srv.url, mon, api_key_env=KEY_ENV)
        b.detect()
        b.capabilities.set("resources", "forced")  # collect reads it, and fails
        with pytest.raises(ProbeError) as e:
            b.collect()
    assert e.value.error_type == "http_4xx" and e.value.status == 401
    assert str(e.value) == (
        f"GET /sdapi/v1/memory: HTTP 401: the webui refused the --api-auth credentials in ${KEY_ENV} (expected user:password)"
    )
    assert "wrong" not in str(e.value)


def test_a1111_without_api_flag(mon: Monitor) -> None:
    """A webui started without --api answers its ping but 404s every
    /sdapi route: detection fails, so the backend is not shown as up (the
    worker marks it down with the cause api_disabled, tests/test_diagnosis.py)."""
    routes = {k: v for k, v in a1111_routes().items() if not k[1].startswith("/sdapi/")}
    with LoopbackServer(routes) as srv:
        b = make(A1111, srv.url, mon)
        with pytest.raises(ProbeError, match="started without --api") as e:
            b.detect()
    assert (e.value.error_type, e.value.status) == ("http_4xx", 404)
    caps = b.capabilities
    assert caps.missing["resources"] == "GET /sdapi/v1/memory: HTTP 404: the webui was started without --api"
    assert not b.detected
    assert errors(mon) == {}  # the 404s at detection are answers, not failed requests


def test_a1111_collect_reads_the_rest_when_one_endpoint_fails(mon: Monitor) -> None:
    routes = a1111_routes(busy=True)
    with LoopbackServer(routes) as srv:
        b = make(A1111, srv.url, mon)
        b.detect()
        srv.routes[("GET", "/sdapi/v1/memory")] = Reply(500, {"error": "RuntimeError"})
        with pytest.raises(ProbeError) as e:
            b.collect()
    assert e.value.error_type == "http_5xx"
    st = mon.stats(NAME, "5m")
    assert (st.queue_running, st.queue_pending) == (1, 2)  # still recorded
    assert st.error_counts == {"http_5xx": 1}


# ---- Ollama ---------------------------------------------------------------------------


def ollama_routes() -> dict[tuple[str, str], Any]:
    return {
        ("GET", "/api/version"): ok("ollama/api_version.json"),
        ("GET", "/api/ps"): ok("ollama/api_ps.json"),
    }


def test_ollama_version_models_vram_and_offload(mon: Monitor) -> None:
    with LoopbackServer(ollama_routes()) as srv:
        b = make(Ollama, srv.url, mon)
        assert b.probe() > 0
        assert b.version == "0.6.2"
        caps = b.detect()
        b.collect()
    assert caps.available["health"] == "GET /api/version"
    assert caps.available["models"] == "GET /api/ps (loaded models)"
    assert caps.available["resources"] == (
        "GET /api/ps (vram_used_bytes: sum of size_vram of the loaded models); "
        "partial CPU offload: llama3.1:70b 48% in VRAM"
    )
    assert caps.missing["queue"] == QUEUE_NA
    assert "503" in QUEUE_NA and "server_busy" in QUEUE_NA
    assert "record_generation" in caps.missing["processing"]
    assert b.models == ["llama3.1:8b", "llama3.1:70b"]
    assert b.detail == {"offload llama3.1:70b": "48% in VRAM, the rest on the CPU (partial offload)"}
    st = mon.stats(NAME, "5m")
    ps = jfx("ollama/api_ps.json")["models"]
    assert st.resources["vram_used_bytes"].last == sum(m["size_vram"] for m in ps) == 30_142_392_320
    assert "vram_total_bytes" not in st.resources  # Ollama does not say; n/a, not 0


def test_ollama_nothing_loaded_is_a_real_zero(mon: Monitor) -> None:
    routes = ollama_routes()
    routes[("GET", "/api/ps")] = ok("ollama/api_ps_empty.json")
    with LoopbackServer(routes) as srv:
        b = make(Ollama, srv.url, mon)
        caps = b.detect()
        b.collect()
    assert caps.available["resources"].endswith("loaded models)")
    assert b.models == [] and b.detail == {}
    assert mon.stats(NAME, "5m").resources["vram_used_bytes"].last == 0


def test_ollama_without_ps(mon: Monitor) -> None:
    with LoopbackServer({("GET", "/api/version"): ok("ollama/api_version.json")}) as srv:
        b = make(Ollama, srv.url, mon)
        caps = b.detect()
        b.collect()  # reads nothing
    assert caps.missing["resources"] == "GET /api/ps: HTTP 404: this Ollama is older than /api/ps"
    assert caps.missing["models"] == caps.missing["resources"]
    st = mon.stats(NAME, "5m")
    assert st.count == 1 and st.errors == 0  # the 404 is an answer; collect read nothing
    assert st.resources == {}


def test_ollama_passing_failure_at_detection_is_retried(mon: Monitor) -> None:
    with LoopbackServer(ollama_routes()) as srv:
        srv.routes[("GET", "/api/ps")] = Reply(503, fx("ollama/error_503_server_busy.json"))
        b = make(Ollama, srv.url, mon, interval_s=0.1)
        caps = b.detect()
        assert caps.missing["resources"] == "GET /api/ps: HTTP 503 (detection will retry)"
        srv.routes[("GET", "/api/ps")] = ok("ollama/api_ps.json")
        time.sleep(0.06)
        b.collect()
    assert caps.has("resources") and caps.has("models")
    assert mon.stats(NAME, "5m").error_counts == {"server_busy": 1}


def test_ollama_503_is_server_busy(mon: Monitor) -> None:
    busy = Reply(503, fx("ollama/error_503_server_busy.json"))
    with LoopbackServer({("GET", "/api/version"): busy, ("POST", "/api/generate"): busy}) as srv:
        b = make(Ollama, srv.url, mon)
        with pytest.raises(ProbeError) as e:
            b.probe()
        assert e.value.error_type == "server_busy" and e.value.status == 503
        with pytest.raises(ProbeError) as e:
            b.call("POST", "/api/generate", {"model": "llama3.1:8b", "prompt": "hi"})
        assert e.value.error_type == "server_busy"
    assert errors(mon) == {"server_busy": 2}


def test_ollama_record_generation(mon: Monitor) -> None:
    b = make(Ollama, "http://127.0.0.1:11434", mon)
    final = jfx("ollama/api_generate_final.json")
    t = b.record_generation(final)
    assert t.total_ms == 4883.583458
    assert t.load_ms == 1.334875 and t.prompt_eval_ms == 342.546 and t.eval_ms == 4535.599
    assert t.tokens_per_s == pytest.approx(282 / 4.535599)
    cached = b.record_generation(jfx("ollama/api_chat_final_cached_prompt.json"))
    assert cached.prompt_eval_ms is None and cached.total_ms == 5191.566416
    with pytest.raises(InvalidValueError, match="final Ollama object"):
        b.record_generation(jfx("ollama/api_chat_chunk.json"))
    with pytest.raises(InvalidValueError, match="total_duration = None"):
        b.record_generation({"done": True})
    st = mon.stats(NAME, "5m")
    assert st.processing_count == 2
    assert st.processing_avg_ms == pytest.approx((4883.583458 + 5191.566416) / 2)
    assert st.count == 0  # processing times are not requests


# ---- OpenAI-compatible: hosted / generic ------------------------------------------------


def test_openai_generic_with_api_key(mon: Monitor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    seen: list[str | None] = []

    def models(h: BaseHTTPRequestHandler) -> Reply:
        seen.append(h.headers.get("Authorization"))
        return ok("openai/v1_models.json")

    with LoopbackServer({("GET", "/v1/models"): models}) as srv:
        b = make(OpenAICompatible, srv.url, mon, api_key_env=KEY_ENV)
        b.probe()
        caps = b.detect()
        hits = len(srv.hits)
        b.collect()
        assert len(srv.hits) == hits  # nothing polled beyond the probe
    assert seen == [f"Bearer {SECRET}"]
    assert b.flavor == "openai" and b.loopback
    assert b.models == ["gpt-4o-mini", "gpt-4o"]
    assert caps.available["models"] == "GET /v1/models (every probe)"
    assert caps.missing["queue"] == "no Prometheus /metrics with a known queue gauge (HTTP 404 (not served here))"
    assert caps.missing["resources"].startswith("OpenAI-compatible APIs report no memory or GPU figures")
    assert "track()" in caps.missing["processing"]
    assert b.detail == {"host": "this machine (loopback)"}
    assert errors(mon) == {}  # the 404s of detection are answers
    shown = repr(b) + repr(b.config) + str(caps.as_dict()) + str(caps.missing) + str(b.detail)
    assert SECRET not in shown


def test_openai_remote_host_is_noted_without_contacting_it(mon: Monitor) -> None:
    b = make(OpenAICompatible, "https://api.openai.com", mon, api_key_env=KEY_ENV, interval_s=300)
    assert not b.loopback
    assert repr(b) == "OpenAICompatible(name='svc', url='https://api.openai.com', flavor='openai')"


def test_openai_bad_key_names_the_variable_not_the_key(mon: Monitor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    with LoopbackServer({("GET", "/v1/models"): Reply(401, fx("openai/error_401_invalid_api_key.json"))}) as srv:
        b = make(OpenAICompatible, srv.url, mon, api_key_env=KEY_ENV)
        with pytest.raises(ProbeError) as e:
            b.probe()
    assert e.value.error_type == "http_4xx" and e.value.status == 401
    assert str(e.value) == f"GET /v1/models: HTTP 401: the server refused the API key in ${KEY_ENV}"
    assert "sk-" not in str(e.value)  # not even the server's masked echo
    assert errors(mon) == {"http_4xx": 1}


def test_openai_key_variable_unset(mon: Monitor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    seen: list[str | None] = []

    def models(h: BaseHTTPRequestHandler) -> Reply:
        seen.append(h.headers.get("Authorization"))
        return Reply(401, fx("openai/error_401_invalid_api_key.json"))

    with LoopbackServer({("GET", "/v1/models"): models}) as srv:
        b = make(OpenAICompatible, srv.url, mon, api_key_env=KEY_ENV)
        with pytest.raises(ProbeError, match=rf"wants an API key; \${KEY_ENV} is not set"):
            b.probe()
    assert seen == [None]


# ---- vLLM ----------------------------------------------------------------------------------


def vllm_routes(metrics: str = "vllm/metrics.txt") -> dict[tuple[str, str], Any]:
    return {
        ("GET", "/v1/models"): ok("vllm/v1_models.json"),
        ("GET", "/metrics"): text(metrics),
        ("GET", "/version"): ok("vllm/version.json"),
    }


def test_vllm_queue_from_metrics(mon: Monitor) -> None:
    with LoopbackServer(vllm_routes()) as srv:
        b = make(OpenAICompatible, srv.url, mon)
        b.probe()
        caps = b.detect()
        b.collect()
    assert b.flavor == "vllm" and b.version == "0.8.5"
    assert caps.available["queue"] == "GET /metrics (vllm:num_requests_running, vllm:num_requests_waiting)"
    assert caps.available["health"] == "GET /v1/models"
    assert "KV-cache" in caps.missing["resources"]
    assert b.detail["kv_cache_usage"] == "42.8% (vllm:kv_cache_usage_perc)"
    assert b.models == ["meta-llama/Llama-3.1-8B-Instruct"]
    st = mon.stats(NAME, "5m")
    assert (st.queue_running, st.queue_pending) == (3, 5)
    assert st.errors == 0


def test_vllm_metrics_timeout_at_detection_is_retried(mon: Monitor) -> None:
    with LoopbackServer(vllm_routes()) as srv:
        good = srv.routes[("GET", "/metrics")]
        srv.routes[("GET", "/metrics")] = Reply(200, fx("vllm/metrics.txt"), delay_s=0.5)
        config = BackendConfig(NAME, "openai", srv.url, interval_s=0.1, read_timeout_s=0.2)
        b = OpenAICompatible(config, mon.service(NAME))
        caps = b.detect()
        assert b.flavor == "openai"
        assert caps.missing["queue"].endswith("(detection will retry))")
        srv.routes[("GET", "/metrics")] = good
        time.sleep(0.06)
        b.collect()
    assert b.flavor == "vllm" and "will retry" not in str(caps.missing)
    st = mon.stats(NAME, "5m")
    assert (st.queue_running, st.queue_pending) == (3, 5)
    assert st.error_counts == {"timeout": 1}


def test_vllm_older_gpu_cache_name(mon: Monitor) -> None:
    with LoopbackServer(vllm_routes("vllm/metrics_older_gpu_cache.txt")) as srv:
        b = make(OpenAICompatible, srv.url, mon)
        b.detect()
        b.collect()
    assert b.detail["kv_cache_usage"] == "8.1% (vllm:gpu_cache_usage_perc)"
    st = mon.stats(NAME, "5m")
    assert (st.queue_running, st.queue_pending) == (1, 0)


def test_vllm_metrics_that_are_not_prometheus_text(mon: Monitor) -> None:
    with LoopbackServer(vllm_routes()) as srv:
        b = make(OpenAICompatible, srv.url, mon)
        b.detect()
        srv.routes[("GET", "/metrics")] = Reply(200, "<html>proxy login</html>")
        with pytest.raises(ProbeError) as e:
            b.collect()
    assert e.value.error_type == "bad_json"
    assert str(e.value).startswith("GET /metrics: not Prometheus text")


def test_prometheus_parser_agrees_with_prometheus_client() -> None:
    # prometheus_client's own parser is the oracle (too slow for every
    # poll: ~300 us a reply against ~18 us for ours).
    oracle = pytest.importorskip("prometheus_client.parser")
    body = fx("vllm/metrics.txt").decode() + fx("llamacpp/metrics.txt").decode()
    theirs: dict[str, list[float]] = {}
    for fam in oracle.text_string_to_metric_families(body):
        for sample in fam.samples:
            if math.isfinite(sample.value):
                theirs.setdefault(sample.name, []).append(sample.value)
    ours = parse_prometheus(body)
    # prometheus_client renames a counter sample that lacks "_total"
    # (llamacpp:n_busy_slots_per_decode); every other sample agrees.
    assert theirs.pop("llamacpp:n_busy_slots_per_decode_total") == ours.pop("llamacpp:n_busy_slots_per_decode")
    assert ours == theirs
    assert ours["vllm:num_requests_waiting"] == [5.0]
    assert "llamacpp:predicted_tokens_seconds" not in ours  # nan is skipped
    with pytest.raises(ValueError, match="line 1"):
        parse_prometheus("<html>")


# ---- llama.cpp ----------------------------------------------------------------------------


def llamacpp_routes(metrics: Reply | None = None) -> dict[tuple[str, str], Any]:
    return {
        ("GET", "/v1/models"): ok("llamacpp/v1_models.json"),
        ("GET", "/health"): ok("llamacpp/health_ok.json"),
        ("GET", "/props"): ok("llamacpp/props.json"),
        ("GET", "/metrics"): metrics or text("llamacpp/metrics.txt"),
    }


def test_llamacpp_queue_version_and_health_probe(mon: Monitor) -> None:
    with LoopbackServer(llamacpp_routes()) as srv:
        b = make(OpenAICompatible, srv.url, mon)
        b.probe()
        caps = b.detect()
        srv.hits.clear()
        b.probe()
        assert srv.hits == [("GET", "/health")]  # after detection: the cheap, keyless probe
        b.collect()
    assert b.flavor == "llama.cpp" and b.version == "b5174-56304069"
    assert caps.available["health"] == "GET /health (503 while the model loads)"
    assert caps.available["queue"] == (
        "GET /metrics (llamacpp:requests_processing, llamacpp:requests_deferred), at most every 5 s: "
        "each scrape resets the server's rate gauges"
    )
    assert b.models == ["qwen2.5-7b-instruct-q4_k_m.gguf"]
    st = mon.stats(NAME, "5m")
    assert (st.queue_running, st.queue_pending) == (4, 7)


def test_llamacpp_loading_model_is_down_server_busy(mon: Monitor) -> None:
    loading = Reply(503, fx("llamacpp/health_503_loading_model.json"))
    with LoopbackServer(llamacpp_routes()) as srv:
        b = make(OpenAICompatible, srv.url, mon)
        b.detect()
        srv.routes[("GET", "/health")] = loading
        with pytest.raises(ProbeError) as e:
            b.probe()
        assert e.value.error_type == "server_busy" and e.value.status == 503
        assert str(e.value) == "GET /health: HTTP 503: llama.cpp is loading the model ('Loading model')"
        # Before detection llama-server answers every route the same way.
        fresh = make(OpenAICompatible, srv.url, mon)
        srv.routes[("GET", "/v1/models")] = loading
        with pytest.raises(ProbeError, match="loading the model") as e:
            fresh.probe()
        assert e.value.error_type == "server_busy"
    assert errors(mon) == {"server_busy": 2}


def test_llamacpp_without_metrics_flag(mon: Monitor) -> None:
    routes = llamacpp_routes(Reply(501, fx("llamacpp/metrics_501_not_enabled.json")))
    with LoopbackServer(routes) as srv:
        b = make(OpenAICompatible, srv.url, mon)
        caps = b.detect()
        b.collect()
    assert b.flavor == "llama.cpp"
    assert caps.missing["queue"] == (
        "GET /metrics: HTTP 501 (not served here: 'This server does not support metrics endpoint. "
        "Start it with `--metrics`'): start llama-server with --metrics"
    )
    assert mon.stats(NAME, "5m").queue_running is None  # n/a, not 0


# ---- LM Studio -----------------------------------------------------------------------------


def test_lmstudio_loaded_models(mon: Monitor) -> None:
    routes: dict[tuple[str, str], Any] = {
        ("GET", "/v1/models"): ok("lmstudio/v1_models.json"),
        ("GET", "/api/v0/models"): ok("lmstudio/api_v0_models.json"),
    }
    with LoopbackServer(routes) as srv:
        b = make(OpenAICompatible, srv.url, mon)
        b.probe()
        assert len(b.models) == 3  # /v1/models lists every downloaded model
        caps = b.detect()
        b.probe()
        b.collect()
    assert b.flavor == "lmstudio"
    assert b.models == ["meta-llama-3.1-8b-instruct"]
    assert b.detail["not_loaded"] == "2 downloaded model(s) not loaded"
    assert caps.available["models"] == "GET /api/v0/models (state: loaded)"
    assert "lms ps --json" in caps.missing["queue"]
    assert mon.stats(NAME, "5m").queue_running is None


# ---- faults, every kind ---------------------------------------------------------------------

PROBE_PATHS = [(Ollama, "/api/version"), (OpenAICompatible, "/v1/models")]


@pytest.mark.parametrize(("cls", "path"), PROBE_PATHS)
@pytest.mark.parametrize(
    ("reply", "error_type"),
    [
        (Reply(200, b'{"version": "0.6'), "bad_json"),  # complete reply, cut-off JSON
        (Reply(200, b"<html>not json</html>"), "bad_json"),
        (Reply(200, [1, 2, 3]), "bad_json"),  # JSON, wrong shape
        (Reply(500, {"error": "boom"}), "http_5xx"),
        (Reply(drop=True), "connection_reset"),
    ],
)
def test_probe_faults(mon: Monitor, cls: type[Backend], path: str, reply: Reply, error_type: str) -> None:
    with LoopbackServer({("GET", path): reply}) as srv:
        b = make(cls, srv.url, mon)
        with pytest.raises(ProbeError) as e:
            b.probe()
    assert e.value.error_type == error_type
    assert errors(mon) == {error_type: 1}  # recorded once, as what was raised


# A body cut short of its Content-Length is a cut connection (http.py
# compares the bytes read with Content-Length), not bad JSON.
TRUNCATED_TYPES = {"connection_reset"}


@pytest.mark.parametrize(("cls", "path"), PROBE_PATHS)
def test_probe_truncated_body(mon: Monitor, cls: type[Backend], path: str) -> None:
    reply = Reply(200, fx("ollama/api_version.json"), truncate_to=5)
    with LoopbackServer({("GET", path): reply}) as srv:
        b = make(cls, srv.url, mon)
        with pytest.raises(ProbeError) as e:
            b.probe()
    assert e.value.error_type in TRUNCATED_TYPES
    assert errors(mon) == {e.value.error_type: 1}


@pytest.mark.parametrize("cls", [A1111, Ollama, OpenAICompatible])
def test_probe_refused_and_timeout(mon: Monitor, cls: type[Backend]) -> None:
    b = make(cls, refused_url(), mon)
    with pytest.raises(ProbeError) as e:
        b.probe()
    assert e.value.error_type == "connection_refused"
    with HangingServer() as srv:
        config = BackendConfig(NAME, cls.kind, srv.url, connect_timeout_s=0.2, read_timeout_s=0.2)
        with pytest.raises(ProbeError) as e:
            cls(config, mon.service(NAME)).probe()
    assert e.value.error_type == "timeout"
    assert errors(mon) == {"connection_refused": 1, "timeout": 1}


@pytest.mark.parametrize(
    ("reply", "error_type"),
    [
        (Reply(200, b'{"size": 2, "tas'), "bad_json"),
        (Reply(500, {"error": "boom"}), "http_5xx"),
    ],
)
def test_a1111_collect_faults(mon: Monitor, reply: Reply, error_type: str) -> None:
    with LoopbackServer(a1111_routes()) as srv:
        b = make(A1111, srv.url, mon)
        b.detect()
        srv.routes[("GET", "/internal/pending-tasks")] = reply
        with pytest.raises(ProbeError) as e:
            b.collect()
    assert e.value.error_type == error_type
    assert errors(mon) == {error_type: 1}


def test_a1111_collect_truncated_body(mon: Monitor) -> None:
    with LoopbackServer(a1111_routes()) as srv:
        b = make(A1111, srv.url, mon)
        b.detect()
        srv.routes[("GET", "/internal/pending-tasks")] = Reply(200, fx("a1111/internal_pending-tasks_busy.json"), truncate_to=8)
        with pytest.raises(ProbeError) as e:
            b.collect()
    assert e.value.error_type in TRUNCATED_TYPES
    assert errors(mon) == {e.value.error_type: 1}


def test_a1111_probe_500(mon: Monitor) -> None:
    with LoopbackServer({("GET", "/internal/ping"): Reply(500, {"error": "boom"})}) as srv:
        with pytest.raises(ProbeError) as e:
            make(A1111, srv.url, mon).probe()
    assert e.value.error_type == "http_5xx"


def test_ollama_collect_bad_ps(mon: Monitor) -> None:
    with LoopbackServer(ollama_routes()) as srv:
        b = make(Ollama, srv.url, mon)
        b.detect()
        srv.routes[("GET", "/api/ps")] = Reply(200, {"models": "none"})
        with pytest.raises(ProbeError, match="no 'models' list") as e:
            b.collect()
    assert e.value.error_type == "bad_json"


# ---- through the scheduler's check_once -------------------------------------------------------


def test_check_once_reports_versions_capabilities_and_no_key(mon: Monitor, monkeypatch: pytest.MonkeyPatch) -> None:
    from movie_director_metrics.collectors.scheduler import check_once

    monkeypatch.setenv(KEY_ENV, SECRET)
    bad_key = Reply(401, fx("openai/error_401_invalid_api_key.json"))
    with (
        LoopbackServer(a1111_routes()) as sd,
        LoopbackServer(ollama_routes()) as ol,
        LoopbackServer(vllm_routes()) as vl,
        LoopbackServer({("GET", "/v1/models"): bad_key}) as hosted,
    ):
        configs = [
            BackendConfig("sd", "a1111", sd.url),
            BackendConfig("ollama", "ollama", ol.url),
            BackendConfig("vllm", "openai", vl.url),
            BackendConfig("gpt", "openai", hosted.url, api_key_env=KEY_ENV),
        ]
        status = {s.name: s for s in check_once(configs, monitor=mon)}
    assert [status[n].state for n in ("sd", "ollama", "vllm", "gpt")] == ["up", "up", "up", "down"]
    assert status["ollama"].version == "0.6.2" and status["vllm"].version == "0.8.5"
    assert status["sd"].capabilities["queue"] is not None
    assert status["sd"].missing == {"processing": A1111_PROCESSING_NA}
    assert status["ollama"].missing["queue"] == QUEUE_NA
    assert status["vllm"].capabilities["queue"] == "GET /metrics (vllm:num_requests_running, vllm:num_requests_waiting)"
    assert status["gpt"].last_error_type == "http_4xx"
    assert status["gpt"].last_error == f"GET /v1/models: HTTP 401: the server refused the API key in ${KEY_ENV}"
    assert SECRET not in repr(status)


# ---- impossible readings -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "routes", "path", "reply", "message"),
    [
        ("a1111", a1111_routes, "/internal/pending-tasks", {"size": -5, "tasks": []},
         "size = -5: expected a whole number in [0, 4294967295]"),
        ("a1111", a1111_routes, "/sdapi/v1/memory", {"ram": {"used": 1e30, "total": 2e30}},
         "ram.used = 1e+30: expected a number in [0, 1e+18]"),
        ("ollama", ollama_routes, "/api/ps", {"models": [{"name": "m", "size": 10, "size_vram": 10**40}]},
         "models[0].size_vram = an integer of 41 digits: expected a whole number in [0, 1000000000000000000]"),
    ],
    ids=["a1111-queue-negative", "a1111-ram-past-range", "ollama-vram-past-range"],
)  # fmt: skip
def test_impossible_readings_are_one_bad_json_naming_the_value(
    kind: str, routes: Any, path: str, reply: Any, message: str, mon: Monitor
) -> None:
    """A reading the engine cannot take is the reply's fault: one bad_json
    for that request, a message naming the field, the value and the range,
    and nothing from that reply recorded (the engine keeps the last good
    reading)."""
    table = routes()
    with LoopbackServer(table) as srv:
        b = make(backend_class(kind), srv.url, mon)
        b.probe()
        b.detect()
        b.collect()
        before = mon.stats(NAME, "5m")
        srv.routes[("GET", path)] = Reply(200, json.dumps(reply).encode())
        with pytest.raises(ProbeError) as info:
            b.collect()
    assert info.value.error_type == "bad_json"
    assert message in str(info.value), str(info.value)
    mon.advance(1.0)
    after = mon.stats(NAME, "5m")
    assert after.error_counts == {"bad_json": 1}
    assert (after.queue_running, after.queue_pending) == (before.queue_running, before.queue_pending)
    assert {k: g.last for k, g in after.resources.items()} == {k: g.last for k, g in before.resources.items()}
