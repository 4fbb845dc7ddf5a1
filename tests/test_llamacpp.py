"""llama.cpp's ``llama-server`` through our OpenAI-compatible collector and
LLM usage, replaying the replies of a real server over loopback HTTP.

The server cannot run in CI, so these tests replay what
``scripts/check_llamacpp.py --record`` recorded from a real llama-server
(``tests/fixtures/llamacpp``, see its README), unedited, through
:class:`LoopbackServer`: the collector makes its real HTTP requests, and the
loopback server answers each with the recorded body and status.  The same
script runs the same checks against the live server
(``benchmarks/reference/llamacpp-2026-12-07.json``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loopback import LoopbackServer, Reply
from movie_director_metrics import Monitor
from movie_director_metrics._core import Monitor as CoreMonitor
from movie_director_metrics.collectors import BackendConfig
from movie_director_metrics.collectors.openai import (
    LLAMACPP_METRICS_EVERY_S,
    SLEEPING_DETAIL,
    OpenAICompatible,
    parse_prometheus,
)
from movie_director_metrics.collectors.scheduler import _Worker, check_once
from movie_director_metrics.llm.usage import normalize_usage, usage_from_stream

REC = Path(__file__).resolve().parent / "fixtures" / "llamacpp"
NAME = "llama"
#: What the collector may ask a llama-server: nothing that wakes a sleeping one.
NEVER_WAKES = {"/health", "/props", "/v1/models", "/metrics"}


def rec(path: str) -> bytes:
    return REC.joinpath(path).read_bytes()


def jrec(path: str) -> Any:
    return json.loads(rec(path))


def routes(state: str = "ready") -> dict[tuple[str, str], Any]:
    """The recorded replies of one state (any other path: 404)."""
    return {
        ("GET", "/health"): Reply(200, rec(f"{state}/health.json")),
        ("GET", "/props"): Reply(200, rec(f"{state}/props.json")),
        ("GET", "/v1/models"): Reply(200, rec(f"{state}/v1_models.json")),
        ("GET", "/metrics"): Reply(200, rec(f"{state}/metrics.txt"), headers={"Content-Type": "text/plain; version=0.0.4"}),
    }


def loading_routes() -> dict[tuple[str, str], Any]:
    return {("GET", p): Reply(503, rec(f"loading/{p.strip('/').replace('/', '_')}_503.json"))
            for p in ("/health", "/v1/models", "/props", "/metrics", "/slots")}


def config(url: str, **kw: Any) -> BackendConfig:
    return BackendConfig(NAME, "openai", url, connect_timeout_s=0.5, read_timeout_s=1.0, **kw)


@pytest.fixture
def mon() -> Iterator[CoreMonitor]:
    m = CoreMonitor(manual_clock=True, start_time=1_800_000_000.0)
    yield m
    m.close()


def served_model() -> str:
    return str(jrec("ready/v1_models.json")["data"][0]["id"])


# ---- loading ----------------------------------------------------------------------------


def test_loading_is_model_loading_naming_llamacpp_before_detection() -> None:
    with LoopbackServer(loading_routes()) as srv:
        (status,) = check_once([config(srv.url)])
    assert status.state == "loading", "it answers: not gone, not up either"
    assert status.cause == "model_loading", (status.cause, status.hint)
    assert status.hint is not None and status.hint.startswith("llama.cpp is up and loading its model")
    assert "Loading model" in status.hint
    assert status.last_error == "GET /v1/models: HTTP 503: llama.cpp is loading the model ('Loading model')"


def test_a_detected_server_that_reloads_keeps_its_kind(mon: CoreMonitor) -> None:
    with LoopbackServer(routes()) as srv:
        w = _Worker(config(srv.url), mon.service(NAME), allow_remote=False, resources=False)
        stop = threading.Event()
        w.cycle(stop)
        assert w.snapshot(0).state == "up"
        srv.routes.update(loading_routes())  # restarted with a model that takes a while to load
        w.cycle(stop)
        s = w.snapshot(0)
        w.close()
    assert (s.state, s.cause) == ("loading", "model_loading")
    assert s.hint is not None and "llama.cpp" in s.hint
    assert s.last_error == "GET /health: HTTP 503: llama.cpp is loading the model ('Loading model')"
    assert isinstance(w.backend, OpenAICompatible) and w.backend.flavor == "llama.cpp"  # still probed with /health
    assert (s.version, s.models) == ("b0-unknown", (served_model(),))  # what detection found stays shown


# ---- ready, queue, no --metrics -----------------------------------------------------------


def test_ready_server_detection(mon: CoreMonitor) -> None:
    with LoopbackServer(routes()) as srv:
        b = OpenAICompatible(config(srv.url), mon.service(NAME))
        b.probe()
        caps = b.detect()
        b.collect()
        asked = {p.split("?")[0] for _, p in srv.hits}
    assert (b.flavor, b.version, b.models, b.sleeping) == ("llama.cpp", "b0-unknown", [served_model()], False)
    assert caps.available["models"] == "GET /v1/models (at detection); none while GET /props says is_sleeping"
    assert "sleeping" not in b.detail
    assert asked <= NEVER_WAKES
    st = mon.stats(NAME, "5m")
    assert (st.queue_running, st.queue_pending) == (0, 0)


def test_busy_queue_from_the_recorded_metrics(mon: CoreMonitor) -> None:
    r = routes()
    r[("GET", "/metrics")] = Reply(200, rec("busy/metrics.txt"))
    with LoopbackServer(r) as srv:
        b = OpenAICompatible(config(srv.url), mon.service(NAME))
        b.detect()
    st = mon.stats(NAME, "5m")
    assert (st.queue_running, st.queue_pending) == (2, 2)  # four requests on two slots


def test_without_metrics_flag_the_queue_is_na(mon: CoreMonitor) -> None:
    r = routes()
    r[("GET", "/metrics")] = Reply(501, rec("no_metrics/metrics_501.json"))
    with LoopbackServer(r) as srv:
        b = OpenAICompatible(config(srv.url), mon.service(NAME))
        caps = b.detect()
        b.collect()
    assert b.flavor == "llama.cpp"
    assert caps.missing["queue"].endswith("start llama-server with --metrics")
    assert mon.stats(NAME, "5m").queue_running is None


# ---- /metrics: bounded scrapes, rates from the counters ------------------------------------


def metrics_hits(srv: LoopbackServer) -> int:
    return sum(1 for _, p in srv.hits if p == "/metrics")


def test_metrics_is_scraped_at_most_every_5_s(mon: CoreMonitor) -> None:
    assert LLAMACPP_METRICS_EVERY_S == 5.0
    with LoopbackServer(routes()) as srv:
        b = OpenAICompatible(config(srv.url, interval_s=1.0), mon.service(NAME))
        b.probe()
        b.detect()
        for _ in range(10):  # ten 1 s cycles' worth of collects, back to back
            b.collect()
        assert metrics_hits(srv) == 1  # detection's only
        assert sum(1 for _, p in srv.hits if p == "/props") == 2  # detection's, then at most every 5 s
        b._metrics_at -= LLAMACPP_METRICS_EVERY_S  # as if 5 s had passed
        b.collect()
        b.collect()
        assert metrics_hits(srv) == 2


def test_token_rates_come_from_the_counters_not_the_reset_gauges(mon: CoreMonitor) -> None:
    scrapes = iter([rec("chat/metrics_before.txt"), rec("chat/metrics_after.txt"), rec("chat/metrics_rescraped.txt")])
    r = routes()
    r[("GET", "/metrics")] = lambda _h: Reply(200, next(scrapes))
    with LoopbackServer(r) as srv:
        b = OpenAICompatible(config(srv.url), mon.service(NAME))
        b.detect()  # metrics_before: the base
        b.metrics_every_s = 0.0
        b.collect()  # metrics_after: one chat completion later
        after = dict(b.detail)
        b.collect()  # metrics_rescraped: nothing generated in between
        again = dict(b.detail)
    t = jrec("chat/completion.json")["timings"]
    before, later = (parse_prometheus(rec(f"chat/{f}").decode()) for f in ("metrics_before.txt", "metrics_after.txt"))
    d_tokens = later["llamacpp:tokens_predicted_total"][0] - before["llamacpp:tokens_predicted_total"][0]
    d_seconds = later["llamacpp:tokens_predicted_seconds_total"][0] - before["llamacpp:tokens_predicted_seconds_total"][0]
    assert (d_tokens, round(d_seconds * 1e3, 3)) == (t["predicted_n"], t["predicted_ms"])  # that one request
    assert after["generation_tokens_per_s"].startswith(f"{d_tokens / d_seconds:.1f} (llamacpp:tokens_predicted_total")
    assert f"{t['predicted_n'] / t['predicted_ms'] * 1e3:.1f}" == f"{d_tokens / d_seconds:.1f}"  # = n / predicted_ms
    # The gauge the server reset: 0 on the scrape right after, and never what we show.
    rescraped = parse_prometheus(rec("chat/metrics_rescraped.txt").decode())
    assert later["llamacpp:predicted_tokens_seconds"] == [pytest.approx(t["predicted_per_second"], abs=1e-3)]
    assert rescraped["llamacpp:predicted_tokens_seconds"] == [0.0]
    assert "generation_tokens_per_s" not in again  # no tokens between the two scrapes: no rate, not 0


# ---- sleeping ---------------------------------------------------------------------------------


def test_sleeping_server_shows_sleeping_with_no_model(mon: CoreMonitor) -> None:
    assert jrec("sleeping/props.json")["is_sleeping"] is True
    with LoopbackServer(routes("sleeping")) as srv:
        b = OpenAICompatible(config(srv.url), mon.service(NAME))
        b.probe()
        caps = b.detect()
        assert (b.sleeping, b.models, b.detail["sleeping"]) == (True, [], SLEEPING_DETAIL)
        assert caps.has("models")  # known: none loaded
        srv.routes[("GET", "/props")] = Reply(200, rec("sleeping/props_after_slots.json"))  # woken by a request
        b.collect()
    assert (b.sleeping, b.models) == (False, [served_model()])
    assert "sleeping" not in b.detail


def test_a_full_cycle_against_a_sleeping_server_asks_nothing_that_wakes_it(mon: CoreMonitor) -> None:
    with LoopbackServer(routes("sleeping")) as srv:
        w = _Worker(config(srv.url), mon.service(NAME), allow_remote=False, resources=False)
        assert isinstance(w.backend, OpenAICompatible)
        w.backend.metrics_every_s = 0.0  # scrape /metrics every cycle too
        stop = threading.Event()
        for _ in range(3):
            w.cycle(stop)
        s = w.snapshot(0)
        w.close()
        (checked,) = check_once([config(srv.url)])
        asked = {p for _, p in srv.hits}
    assert "/slots" not in asked
    assert asked <= NEVER_WAKES
    assert (s.state, s.models, s.detail["sleeping"]) == ("up", (), SLEEPING_DETAIL)
    assert checked.state == "up" and checked.detail["sleeping"] == SLEEPING_DETAIL


# ---- usage and speed from timings -------------------------------------------------------------


def test_chat_completion_usage_and_generation_time() -> None:
    resp = jrec("chat/completion.json")
    t = resp["timings"]
    n, ms, pps = t["predicted_n"], t["predicted_ms"], t["predicted_per_second"]
    assert pps == pytest.approx((n - 1) / ms * 1e3)  # the server's rate leaves out the free first token
    u = normalize_usage(resp)
    assert (u.input_uncached, u.cache_read, u.output) == (t["prompt_n"], t["cache_n"], resp["usage"]["completion_tokens"])
    assert u.output_tokens_per_s == pytest.approx(n / ms * 1e3)
    m = Monitor(manual_clock=True, start_time=1_800_000_000.0)
    try:
        row = m.llm.record("llama.cpp", resp["model"], resp, 1000.0)
        (st,) = m.llm.stats("5m")
    finally:
        m.close()
    # The generation time the tracker keeps (output / rate) is predicted_ms; it was n/(n-1) too long.
    assert row["output"] / row["output_tokens_per_s"] * 1e3 == pytest.approx(ms)
    assert u.output / pps * 1e3 == pytest.approx(ms * n / (n - 1))
    assert st.output_tokens_per_s == pytest.approx(n / ms * 1e3)


def sse_chunks(path: str) -> list[Any]:
    return [json.loads(line[6:]) for line in rec(path).decode().splitlines()
            if line.startswith("data: ") and line != "data: [DONE]"]


def test_stream_with_include_usage_ends_with_usage_and_timings() -> None:
    chunks = sse_chunks("chat/stream_include_usage.sse")
    last = chunks[-1]
    assert last["choices"] == [] and "usage" in last and "timings" in last
    u = usage_from_stream(chunks)
    details = last["usage"]["prompt_tokens_details"]
    assert (u.input_uncached, u.cache_read, u.output) == (
        last["usage"]["prompt_tokens"] - details["cached_tokens"], details["cached_tokens"], last["usage"]["completion_tokens"])
    assert u.output_tokens_per_s == pytest.approx(last["timings"]["predicted_n"] / last["timings"]["predicted_ms"] * 1e3)


def test_stream_without_usage_takes_the_last_timings() -> None:
    chunks = sse_chunks("chat/stream_plain.sse")
    assert all("usage" not in c for c in chunks)
    t = chunks[-1]["timings"]
    u = usage_from_stream(chunks)
    assert u.known and (u.input_uncached, u.cache_read, u.output) == (t["prompt_n"], t["cache_n"], t["predicted_n"])
    assert u.output_tokens_per_s == pytest.approx(t["predicted_n"] / t["predicted_ms"] * 1e3)
    m = Monitor(manual_clock=True, start_time=1_800_000_000.0)
    try:
        list(m.llm.track_stream("llama.cpp", chunks[0]["model"], iter(chunks)))
        (st,) = m.llm.stats("5m")
    finally:
        m.close()
    assert st.output == t["predicted_n"]
    assert st.output_tokens_per_s == pytest.approx(t["predicted_n"] / t["predicted_ms"] * 1e3)


def test_the_models_it_serves_join_the_llm_trackers_active_models() -> None:
    """Through the real scheduler and a real Monitor: the served model is
    an active, loaded model of provider ``llama.cpp`` (what its requests
    are recorded under), like Ollama's loaded ones."""
    import time

    import movie_director_metrics as mdm

    with mdm.Monitor() as m, LoopbackServer(routes()) as srv:
        col = m.start_collectors([config(srv.url, interval_s=0.2)])
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not m.llm.active_models("5m"):
                time.sleep(0.05)
        finally:
            col.stop()
        active = [(a.provider, a.model, a.loaded) for a in m.llm.active_models("5m")]
    assert active == [("llama.cpp", served_model(), True)]


def test_a_hosted_openai_api_lists_no_active_model() -> None:
    """A hosted API's /v1/models lists every model it offers: none of them
    is "loaded", so none joins the active models (flavour ``openai``)."""
    import time

    import movie_director_metrics as mdm

    listing = {"object": "list", "data": [{"id": "gpt-4o", "object": "model"}, {"id": "gpt-4o-mini", "object": "model"}]}
    with mdm.Monitor() as m, LoopbackServer({("GET", "/v1/models"): Reply(200, listing)}) as srv:
        col = m.start_collectors([config(srv.url, interval_s=0.2)])
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and col.status()[NAME].models == ():
                time.sleep(0.05)
            assert col.status()[NAME].models == ("gpt-4o", "gpt-4o-mini")
        finally:
            col.stop()
        assert m.llm.active_models("5m") == []
