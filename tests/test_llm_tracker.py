"""LlmTracker: windows on a driven clock, streams, rows, export, threads and
the OpenMetrics families.  Oracles: counts recorded here, costs worked out
by hand from the shipped LiteLLM prices, and the engine's own stats()."""

from __future__ import annotations

import csv
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from movie_director_metrics import Monitor
from movie_director_metrics.errors import ExportError, InvalidValueError, InvalidWindowError
from movie_director_metrics.llm import EXPORT_COLUMNS, ROW_COLUMNS, LlmStats, LlmTracker, PriceTable, Usage
from movie_director_metrics.openmetrics import render



class _Sdk:
    """The real SDKs' types, imported when a test first needs them (tests
    that need one are skipped without it; the rest run)."""

    def __getattr__(self, module: str) -> Any:
        return pytest.importorskip({"openai_chat": "openai.types.chat", "anthropic_types": "anthropic.types"}[module])


sdk = _Sdk()

T0 = 1_800_000_000.0  # a whole hour (and minute), so bucket edges are easy to reason about
EXACT = 1e-12

# Per-token prices of the shipped entries (LiteLLM's values).
GPT4O_IN, GPT4O_CACHED, GPT4O_OUT = 2.5e-06, 1.25e-06, 1e-05
SONNET_IN, SONNET_READ, SONNET_W5M, SONNET_W1H, SONNET_OUT = 3e-06, 3e-07, 3.75e-06, 6e-06, 1.5e-05


@pytest.fixture
def mon() -> Monitor:
    return Monitor(manual_clock=True, start_time=T0)


@pytest.fixture
def llm(mon: Monitor) -> LlmTracker:
    return LlmTracker(mon)


def by_model(stats: list[LlmStats]) -> dict[str | None, LlmStats]:
    return {s.model: s for s in stats}


def openai_response(prompt: int, cached: int, completion: int, reasoning: int = 0) -> Any:
    return sdk.openai_chat.ChatCompletion.model_validate({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                  "prompt_tokens_details": {"cached_tokens": cached},
                  "completion_tokens_details": {"reasoning_tokens": reasoning}},
    })


def anthropic_message(inp: int, out: int, read: int = 0, w5m: int = 0, w1h: int = 0) -> Any:
    return sdk.anthropic_types.Message.model_validate({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": inp, "output_tokens": out, "cache_read_input_tokens": read,
                  "cache_creation_input_tokens": w5m + w1h,
                  "cache_creation": {"ephemeral_5m_input_tokens": w5m, "ephemeral_1h_input_tokens": w1h}},
    })


class FakeTimer:
    """Monotonic seconds that the fake streams move forward."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def openai_stream(timer: FakeTimer, pieces: int, usage: dict[str, Any] | None, step_s: float = 0.05) -> Iterator[Any]:
    timer.t += 0.25  # time to the first token
    for i in range(pieces):
        if i:
            timer.t += step_s
        yield sdk.openai_chat.ChatCompletionChunk.model_validate({
            "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "delta": {"content": f"t{i}"}, "finish_reason": None}], "usage": None})
    if usage is not None:
        yield sdk.openai_chat.ChatCompletionChunk.model_validate({
            "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o", "choices": [],
            "usage": usage})


# --- Recording and windows --------------------------------------------------------


def test_record_sdk_objects_and_read_stats(mon: Monitor, llm: LlmTracker) -> None:
    row = llm.record("openai", "gpt-4o", openai_response(1200, 1024, 300), latency_ms=800, ttft_ms=200)
    assert row["cost_usd"] == pytest.approx(176 * GPT4O_IN + 1024 * GPT4O_CACHED + 300 * GPT4O_OUT, rel=EXACT)
    llm.record("anthropic", "claude-sonnet-4-5", anthropic_message(50, 400, 2000, 600, 400), 1500, 300)
    mon.advance(1)
    s = by_model(llm.stats("5m"))
    gpt, sonnet = s["gpt-4o"], s["claude-sonnet-4-5"]
    assert (gpt.input_uncached, gpt.cache_read, gpt.cache_write, gpt.output) == (176, 1024, 0, 300)
    assert (sonnet.input_uncached, sonnet.cache_read, sonnet.cache_write, sonnet.output) == (50, 2000, 1000, 400)
    assert sonnet.cost_usd == pytest.approx(
        50 * SONNET_IN + 2000 * SONNET_READ + 600 * SONNET_W5M + 400 * SONNET_W1H + 400 * SONNET_OUT, rel=EXACT)
    # Latency and TTFT are the engine's: processing_* of llm:<provider>/<model> is TTFT.
    engine = mon.stats("llm:openai/gpt-4o", "5m")
    assert gpt.service == "llm:openai/gpt-4o" and engine.count == 1
    assert (gpt.latency_p50_ms, gpt.latency_p95_ms) == (engine.p50_ms, engine.p95_ms)
    assert (gpt.ttft_p50_ms, gpt.ttft_p95_ms) == (engine.processing_p50_ms, engine.processing_p95_ms)
    assert gpt.latency_p50_ms == pytest.approx(800, rel=4e-3) and gpt.ttft_p50_ms == pytest.approx(200, rel=4e-3)
    # 300 tokens over latency - TTFT = 0.6 s.
    assert gpt.output_tokens_per_s == pytest.approx(500.0, rel=EXACT)
    assert gpt.share_of_requests == 0.5
    assert gpt.share_of_tokens == 1500 / (1500 + 3450)


def test_windows_on_a_driven_clock(mon: Monitor, llm: LlmTracker) -> None:
    llm.record("openai", "gpt-4o-mini", Usage(input_uncached=100, output=10), 100)
    mon.advance(120)
    llm.record("openai", "gpt-4o-mini", Usage(input_uncached=200, output=20), 100)
    mon.advance(1)  # now T0 + 121
    # "1m" starts at the first whole minute inside [now - 60, now]: T0 + 120.
    assert [(s.requests, s.input_uncached) for s in llm.stats("1m")] == [(1, 200)]
    assert [(s.requests, s.input_uncached) for s in llm.stats("5m")] == [(2, 300)]
    cost = (300 * 1.5e-07 + 30 * 6e-07)
    assert llm.stats("5m")[0].cost_usd == pytest.approx(cost, rel=EXACT)
    mon.advance(25 * 3600)  # past the minute buckets
    assert llm.stats("24h") == []
    week = llm.stats("7d")[0]  # hour buckets
    assert (week.requests, week.input_uncached, week.output) == (2, 300, 30)
    assert week.cost_usd == pytest.approx(cost, rel=EXACT)
    assert week.latency_p50_ms is None  # the engine keeps 24 h without storage tiers
    with pytest.raises(InvalidWindowError):
        llm.stats("31d")
    with pytest.raises(InvalidWindowError):
        llm.stats("fortnight")


def test_unknown_usage_and_unpriced_requests(mon: Monitor, llm: LlmTracker) -> None:
    llm.record("openai", "gpt-4o", Usage(input_uncached=1000, output=100), 500)
    llm.record("openai", "gpt-4o", None, 700)  # usage unknown: no tokens, no price
    llm.record("openai", "gpt-4o", Usage(input_uncached=1, output=1), 90, ok=False, error="RateLimitError")
    mon.advance(1)
    s = llm.stats()[0]
    assert (s.requests, s.errors, s.requests_usage_unknown) == (3, 1, 1)
    assert s.error_rate == pytest.approx(1 / 3, rel=EXACT)
    assert (s.input_uncached, s.output) == (1001, 101)  # the unknown one added nothing, not zeros
    assert s.cost_usd is None and s.cost_known_requests == 2
    assert s.cost_known_usd == pytest.approx(1001 * GPT4O_IN + 101 * GPT4O_OUT, rel=EXACT)
    assert mon.stats("llm:openai/gpt-4o", "5m").error_counts == {"RateLimitError": 1}


def test_unknown_model_has_no_cost_and_local_model_is_free(mon: Monitor, llm: LlmTracker) -> None:
    llm.record("openai", "gpt-next", Usage(input_uncached=5, output=5), 10)
    llm.record("ollama", "llama3.1:8b", {"done": True, "prompt_eval_count": 20, "eval_count": 100,
                                         "eval_duration": 2_000_000_000}, 2600)
    mon.advance(1)
    s = by_model(llm.stats())
    assert s["gpt-next"].cost_usd is None and s["gpt-next"].cost_known_requests == 0
    assert s["llama3.1:8b"].cost_usd == 0.0
    assert s["llama3.1:8b"].output_tokens_per_s == 50.0  # Ollama's own eval rate


def test_by_provider(mon: Monitor, llm: LlmTracker) -> None:
    llm.record("openai", "gpt-4o", Usage(input_uncached=10, output=1), 100, 10)
    llm.record("openai", "gpt-4o-mini", Usage(input_uncached=30, output=3), 300, 30)
    llm.record("anthropic", "claude-haiku-4-5", Usage(input_uncached=60, output=6), 200, 20)
    mon.advance(1)
    s = {x.provider: x for x in llm.stats("5m", by="provider")}
    assert (s["openai"].model, s["openai"].requests, s["openai"].input_uncached) == (None, 2, 40)
    assert s["openai"].service == "llm:openai"
    assert s["openai"].cost_usd == pytest.approx(10 * GPT4O_IN + 1 * GPT4O_OUT + 30 * 1.5e-07 + 3 * 6e-07, rel=EXACT)
    assert s["openai"].share_of_tokens == 44 / 110
    # Percentiles do not merge across services: only a one-model provider has them.
    assert s["openai"].latency_p50_ms is None
    assert s["anthropic"].latency_p50_ms == mon.stats("llm:anthropic/claude-haiku-4-5", "5m").p50_ms
    with pytest.raises(InvalidValueError, match="by='service'"):
        llm.stats(by="service")  # type: ignore[arg-type]


def test_active_models_and_loaded_reports(mon: Monitor, llm: LlmTracker) -> None:
    llm.record("openai", "gpt-4o", Usage(output=1), 10)
    llm.note_loaded("ollama", ["llama3.1:8b", "qwen2.5:7b"])
    llm.note_loaded("ollama", ["llama3.1:8b"])  # replaces the previous report
    mon.advance(1)
    active = llm.active_models("5m")
    assert [(a.provider, a.model, a.requests, a.loaded) for a in active] == [
        ("ollama", "llama3.1:8b", 0, True), ("openai", "gpt-4o", 1, False)]
    assert active[1].last_request_at == T0
    mon.advance(600)
    assert llm.active_models("5m") == []
    assert [a.model for a in llm.active_models("1h")] == ["llama3.1:8b", "gpt-4o"]


def test_invalid_records_change_nothing(mon: Monitor, llm: LlmTracker) -> None:
    for kwargs, fragment in (
        ({"latency_ms": -1.0}, "latency_ms=-1.0"),
        ({"latency_ms": float("nan")}, "latency_ms=nan"),
        ({"latency_ms": 5.0, "ttft_ms": float("inf")}, "ttft_ms=inf"),
        ({"latency_ms": 5.0, "usage": {"prompt_tokens": -3}}, "prompt_tokens=-3"),
    ):
        args: dict[str, Any] = {"usage": Usage(output=1), **kwargs}
        with pytest.raises(InvalidValueError, match="expected") as ei:
            llm.record("openai", "gpt-4o", **args)
        assert fragment in str(ei.value)
    with pytest.raises(InvalidValueError, match="model=''"):
        llm.record("openai", "", Usage(), 1.0)
    assert llm.stats() == [] and mon.services() == [] and llm.rows_after()[0] == []


def test_long_names_and_model_limit(mon: Monitor) -> None:
    llm = LlmTracker(mon, max_models=2)
    long_model = "hf.co/bartowski/Llama-3.2-3B-Instruct-GGUF:Q4_K_M-with-a-very-long-suffix"
    name = llm.service_name("ollama", long_model)
    assert len(name) == 64 and name.startswith("llm:ollama/hf.co/") and name[-9] == "~"
    llm.record("ollama", long_model, Usage(output=1), 5)
    llm.record("ollama", "b", Usage(output=1), 5)
    llm.record("ollama", "c", Usage(output=1), 5)  # a third model: counted as "other"
    llm.record("ollama", "d", Usage(output=1), 5)
    mon.advance(1)
    assert {s.model: s.requests for s in llm.stats()} == {long_model: 1, "b": 1, "other": 2}
    assert name in mon.services() and "llm:ollama/other" in mon.services()


# --- Streams ----------------------------------------------------------------------------------


def test_track_stream_measures_ttft_and_latency(mon: Monitor) -> None:
    timer = FakeTimer()
    llm = LlmTracker(mon, timer=timer)
    usage = {"prompt_tokens": 1100, "completion_tokens": 4, "total_tokens": 1104,
             "prompt_tokens_details": {"cached_tokens": 1024}}
    got = list(llm.track_stream("openai", "gpt-4o", openai_stream(timer, 4, usage)))
    assert [c.choices[0].delta.content for c in got[:4]] == ["t0", "t1", "t2", "t3"] and got[4].usage is not None
    row = llm.rows_after()[0][0]
    assert row["ttft_ms"] == pytest.approx(250.0, rel=EXACT)
    assert row["latency_ms"] == pytest.approx(400.0, rel=EXACT)  # 0.25 + 3 x 0.05 s
    assert (row["input_uncached"], row["cache_read"], row["output"], row["ok"]) == (76, 1024, 4, True)
    assert row["cost_usd"] == pytest.approx(76 * GPT4O_IN + 1024 * GPT4O_CACHED + 4 * GPT4O_OUT, rel=EXACT)


def test_stream_without_usage_is_counted_unknown(mon: Monitor) -> None:
    timer = FakeTimer()
    llm = LlmTracker(mon, timer=timer)
    assert len(list(llm.track_stream("openai", "gpt-4o", openai_stream(timer, 3, None)))) == 3
    mon.advance(1)
    s = llm.stats()[0]
    assert (s.requests, s.errors, s.requests_usage_unknown, s.output, s.cost_usd) == (1, 0, 1, 0, None)


def paced(timer: FakeTimer, items: list[Any], first_s: float, step_s: float) -> Iterator[Any]:
    """``items`` as a stream: the first after ``first_s``, then one per ``step_s``."""
    for i, item in enumerate(items):
        timer.t += first_s if i == 0 else step_s
        yield item


class ClosableStream:
    def __init__(self, timer: FakeTimer, fail_at: int | None = None) -> None:
        self.timer, self.fail_at, self.closed, self.i = timer, fail_at, False, 0

    def __iter__(self) -> ClosableStream:
        return self

    def __next__(self) -> dict[str, Any]:
        self.timer.t += 0.1
        self.i += 1
        if self.fail_at is not None and self.i == self.fail_at:
            raise ConnectionResetError("peer went away")
        return {"choices": [{"delta": {"content": "x"}}], "usage": None}

    def close(self) -> None:
        self.closed = True


def test_consumer_stopping_early_records_a_failure_and_closes(mon: Monitor) -> None:
    timer = FakeTimer()
    llm = LlmTracker(mon, timer=timer)
    stream = ClosableStream(timer)
    for i, _ in enumerate(llm.track_stream("vllm", "qwen", stream, base_url="http://127.0.0.1:8000/v1")):
        if i == 2:
            break
    row = llm.rows_after()[0][0]
    assert (row["ok"], row["error"], row["usage_known"], row["output"]) == (False, "GeneratorExit", False, None)
    assert row["cost_usd"] == 0.0  # vLLM on loopback: local
    assert row["ttft_ms"] == pytest.approx(100.0, rel=EXACT) and stream.closed


def test_exception_in_the_stream_is_recorded_and_reraised(mon: Monitor) -> None:
    timer = FakeTimer()
    llm = LlmTracker(mon, timer=timer)
    with pytest.raises(ConnectionResetError):
        for _ in llm.track_stream("openai", "gpt-4o", ClosableStream(timer, fail_at=3)):
            pass
    row = llm.rows_after()[0][0]
    assert (row["ok"], row["error"]) == (False, "ConnectionResetError")
    assert mon.stats("llm:openai/gpt-4o", "5m").error_counts == {"ConnectionResetError": 1}


def test_track_stream_anthropic_events(mon: Monitor) -> None:
    timer = FakeTimer()
    llm = LlmTracker(mon, timer=timer)
    events = [
        {"type": "message_start", "message": {"usage": {"input_tokens": 12, "output_tokens": 1,
                                                        "cache_read_input_tokens": 3000}}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
        {"type": "message_delta", "usage": {"output_tokens": 20}},
        {"type": "message_delta", "usage": {"output_tokens": 45}},
        {"type": "message_stop"},
    ]
    assert list(llm.track_stream("anthropic", "claude-haiku-4-5", iter(events))) == events
    row = llm.rows_after()[0][0]
    assert (row["input_uncached"], row["cache_read"], row["output"]) == (12, 3000, 45)
    assert row["cost_usd"] == pytest.approx(12 * 1e-06 + 3000 * 1e-07 + 45 * 5e-06, rel=EXACT)


# --- Rows, restore, export --------------------------------------------------------------------


def test_rows_and_restore_rebuild_the_same_figures(mon: Monitor, llm: LlmTracker) -> None:
    llm.record("openai", "gpt-4o", openai_response(1200, 1024, 300, 100), 800, 200)
    llm.record("anthropic", "claude-sonnet-4-5", anthropic_message(50, 400, 2000, 600, 400), 1500, 300)
    llm.record("openai", "gpt-4o", None, 50, ok=False, error="APITimeoutError")
    mon.advance(30)
    rows, cursor = llm.rows_after(0)
    assert len(rows) == 3 and cursor == 3 and set(rows[0]) == set(ROW_COLUMNS)
    assert rows[2]["input_uncached"] is None and rows[2]["usage_known"] is False
    assert llm.rows_after(cursor) == ([], 3)
    assert len(llm.rows_since(T0)) == 3 and llm.rows_since(T0 + 1) == []

    fresh_mon = Monitor(manual_clock=True, start_time=T0 + 30)
    fresh = LlmTracker(fresh_mon)
    as_tuples = [tuple(r[c] for c in ROW_COLUMNS) for r in rows]  # as SQLite gives them
    bad = {**rows[0], "output": -1}
    old = {**rows[0], "at_s": T0 - 31 * 86_400}
    report = fresh.restore([*as_tuples, bad, old, ("too", "short")])
    assert report == {"restored": 3, "rejected": 2, "out_of_window": 1}
    keep = ("requests", "errors", "requests_usage_unknown", "input_uncached", "cache_read", "cache_write",
            "output", "reasoning", "cost_usd", "cost_known_usd", "cost_known_requests", "output_tokens_per_s")
    for a, b in zip(llm.stats("1h"), fresh.stats("1h"), strict=True):
        assert {k: getattr(a, k) for k in keep} == {k: getattr(b, k) for k in keep}
    assert fresh.totals() == {} and fresh.rows_after() == ([], 0)  # not re-persisted, not lifetime


def test_row_buffer_is_bounded(mon: Monitor) -> None:
    llm = LlmTracker(mon, max_rows=5)
    for _ in range(8):
        llm.record("ollama", "m", Usage(output=1), 1)
    rows, cursor = llm.rows_after(0)
    assert len(rows) == 5 and cursor == 8 and llm.rows_dropped == 3


def test_a_monitor_without_storage_buffers_no_rows() -> None:
    """Rows exist for the history file only: without one, none are kept,
    and none are counted as dropped (nothing was going to read them)."""
    from movie_director_metrics import Monitor as FullMonitor

    with FullMonitor(manual_clock=True, start_time=1_700_000_000.0) as m:
        for _ in range(4):
            m.llm.record("ollama", "m", Usage(output=1), 1)
        assert m.llm.rows_after(0) == ([], 4)
        assert m.llm.rows_dropped == 0
        assert m.llm.stats("5m")[0].requests == 4


def test_export_csv_and_json(tmp_path: Path, mon: Monitor, llm: LlmTracker) -> None:
    llm.record("openai", "gpt-4o", Usage(input_uncached=10, output=2), 100)
    llm.record("openai", "gpt-next", Usage(input_uncached=10, output=2), 100)
    mon.advance(1)
    path = llm.export(tmp_path / "llm.csv", "csv", "1h")
    with open(path, newline="") as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == EXPORT_COLUMNS
    assert {r["model"]: r["cost_usd"] for r in table} == {
        "gpt-4o": repr(10 * GPT4O_IN + 2 * GPT4O_OUT), "gpt-next": ""}  # no price: empty, not 0
    doc = json.loads(llm.export(tmp_path / "llm.json", "json", "1h").read_text())
    assert doc["window"] == "1h" and doc["prices_source"].startswith("BerriAI/litellm")
    assert doc["generated_at"] == "2027-01-15T08:00:01Z"
    assert [r["model"] for r in doc["rows"]] == ["gpt-4o", "gpt-next"]
    with pytest.raises(ExportError, match="does not exist"):
        llm.export(tmp_path / "missing" / "x.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llm.csv", "llm.json"]  # no temp files left


# --- Threads -----------------------------------------------------------------------------------


def test_parallel_recorders_exact_counts(mon: Monitor) -> None:
    threads_n, per_thread = 8, 2_000
    llm = LlmTracker(mon, max_rows=threads_n * per_thread)  # every row kept: counted exactly below
    models = ("gpt-4o", "gpt-4o-mini", "claude-haiku-4-5", "llama3.1:8b")
    providers = {"gpt-4o": "openai", "gpt-4o-mini": "openai", "claude-haiku-4-5": "anthropic",
                 "llama3.1:8b": "ollama"}
    start = threading.Barrier(threads_n + 1)
    failures: list[BaseException] = []

    def work(t: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                model = models[(t + i) % 4]
                usage = None if i % 10 == 0 else Usage(input_uncached=3, cache_read=2, output=5)
                llm.record(providers[model], model, usage, 10.0 + i % 7, 2.0, ok=i % 25 != 0, error="boom")
        except BaseException as e:  # pragma: no cover - reported below
            failures.append(e)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for w in workers:
        w.start()
    start.wait()
    while any(w.is_alive() for w in workers):  # read while they write
        llm.stats("5m")
        render(_WithLlm(mon, llm))
    for w in workers:
        w.join()
    assert not failures
    mon.advance(1)
    per_model = threads_n * per_thread // 4
    unknown = threads_n * (per_thread // 10) // 4  # i % 10 == 0 is spread evenly over the models
    errors = threads_n * (per_thread // 25) // 4
    for s in llm.stats("5m"):
        assert (s.requests, s.requests_usage_unknown, s.errors) == (per_model, unknown, errors), s.model
        assert (s.input_uncached, s.cache_read, s.output) == (3 * (per_model - unknown), 2 * (per_model - unknown),
                                                              5 * (per_model - unknown))
        assert mon.stats(s.service, "5m").count == per_model
        assert mon.stats(s.service, "5m").processing_count == per_model
    assert sum(t.requests for t in llm.totals().values()) == threads_n * per_thread
    assert len(llm.rows_after()[0]) == threads_n * per_thread


# --- OpenMetrics -------------------------------------------------------------------------------


class _WithLlm:
    """A monitor with an ``llm`` attribute, as Monitor.llm will be."""

    def __init__(self, monitor: Monitor, llm: LlmTracker) -> None:
        self._m, self.llm = monitor, llm

    def services(self) -> list[str]:
        return self._m.services()

    def service(self, name: str) -> Any:
        return self._m.service(name)

    def snapshot(self, window: str) -> Any:
        return self._m.snapshot(window)


def samples(text: str, openmetrics: bool = True) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    parse = parse_openmetrics if openmetrics else parse_text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in parse(text) for s in f.samples}


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (name, tuple(sorted(labels.items())))


def test_openmetrics_llm_families(mon: Monitor, llm: LlmTracker) -> None:
    llm.record("openai", "gpt-4o", openai_response(1200, 1024, 300, 100), 800, 200)
    llm.record("openai", "gpt-4o", None, 50, ok=False, error="APITimeoutError")
    llm.record("openai", 'we"ird\\model', Usage(output=5), 10)
    llm.record("ollama", "llama3.1:8b", Usage(input_uncached=20, output=100), 2500)
    llm.note_loaded("ollama", ["llama3.1:8b", "qwen2.5:7b"])
    mon.advance(1)
    text = render(_WithLlm(mon, llm))
    got = samples(text)  # the strict OpenMetrics parser accepts it
    assert samples(render(_WithLlm(mon, llm), openmetrics=False), openmetrics=False) == got
    gpt = {"provider": "openai", "model": "gpt-4o"}
    assert got[key("mdm_llm_requests_total", **gpt, outcome="success")] == 1
    assert got[key("mdm_llm_requests_total", **gpt, outcome="error")] == 1
    assert got[key("mdm_llm_usage_unknown_requests_total", **gpt)] == 1
    assert got[key("mdm_llm_tokens_total", **gpt, kind="input_uncached")] == 176
    assert got[key("mdm_llm_tokens_total", **gpt, kind="cache_read")] == 1024
    assert got[key("mdm_llm_tokens_total", **gpt, kind="output")] == 300
    assert got[key("mdm_llm_tokens_total", **gpt, kind="reasoning")] == 100
    assert got[key("mdm_llm_cost_usd_total", **gpt)] == pytest.approx(
        176 * GPT4O_IN + 1024 * GPT4O_CACHED + 300 * GPT4O_OUT, rel=EXACT)
    assert got[key("mdm_llm_unpriced_requests_total", **gpt)] == 1
    weird = {"provider": "openai", "model": 'we"ird\\model'}
    assert key("mdm_llm_cost_usd_total", **weird) not in got  # never priced: no cost series
    assert got[key("mdm_llm_unpriced_requests_total", **weird)] == 1
    assert got[key("mdm_llm_cost_usd_total", provider="ollama", model="llama3.1:8b")] == 0
    assert got[key("mdm_llm_active_models", provider="ollama")] == 2  # used + loaded, counted once
    assert got[key("mdm_llm_active_models", provider="openai")] == 2
    # TTFT is the processing time of the model's engine service, in its own family.
    assert got[key("mdm_llm_ttft_seconds_count", service="llm:openai/gpt-4o")] == 1
    assert got[key("mdm_llm_ttft_seconds_sum", service="llm:openai/gpt-4o")] == pytest.approx(0.2)
    assert not [k for k in got if k[0].startswith("mdm_processing") and ("service", "llm:openai/gpt-4o") in k[1]]
    assert text.endswith("# EOF\n")


def test_openmetrics_without_llm_is_unchanged(mon: Monitor) -> None:
    mon.service("comfyui").record(5.0)
    assert "mdm_llm" not in render(mon)
    assert "mdm_llm" not in render(_WithLlm(mon, None))  # type: ignore[arg-type]


def test_llm_counters_never_decrease(mon: Monitor, llm: LlmTracker) -> None:
    previous: dict[Any, float] = {}
    for i in range(5):
        llm.record("openai", "gpt-4o-mini", Usage(input_uncached=i, output=1), 10, ok=i % 2 == 0)
        mon.advance(400)  # the windows move on; the counters must not
        now = {k: v for k, v in samples(render(_WithLlm(mon, llm))).items() if k[0].startswith("mdm_llm_")
               and k[0].endswith("_total")}
        assert all(now[k] >= v for k, v in previous.items())
        previous = now


# --- A scripted mixed workload ----------------------------------------------------------------


def test_mixed_workload_table(mon: Monitor) -> None:
    """Two hosted models and a local one, streamed and not; prints the
    per-model table (run with -s)."""
    timer = FakeTimer()
    llm = LlmTracker(mon, PriceTable.load(), timer=timer)
    # gpt-4o: 2 plain calls + 1 stream.
    llm.record("openai", "gpt-4o", openai_response(2000, 1536, 250), 1800, 420)
    llm.record("openai", "gpt-4o", openai_response(800, 0, 120, 0), 950, 300)
    mon.advance(20)
    list(llm.track_stream("openai", "gpt-4o", openai_stream(timer, 6, {
        "prompt_tokens": 1500, "completion_tokens": 6, "total_tokens": 1506,
        "prompt_tokens_details": {"cached_tokens": 1024}})))
    # claude-sonnet-4-5: 1 plain call with cache writes, 1 stream (cumulative deltas).
    llm.record("anthropic", "claude-sonnet-4-5", anthropic_message(40, 600, 5000, 2000, 0), 4200, 900)
    mon.advance(20)
    events = [{"type": "message_start", "message": {"usage": {"input_tokens": 30, "output_tokens": 1,
                                                              "cache_read_input_tokens": 7000}}},
              {"type": "message_delta", "usage": {"output_tokens": 150}},
              {"type": "message_delta", "usage": {"output_tokens": 310}}]
    list(llm.track_stream("anthropic", "claude-sonnet-4-5", paced(timer, events, 0.8, 1.5)))
    # llama3.1:8b on Ollama: 2 plain calls (one fully cached prompt) + 1 stream.
    llm.record("ollama", "llama3.1:8b", {"done": True, "prompt_eval_count": 350, "eval_count": 420,
                                         "eval_duration": 8_400_000_000}, 9100, 700)
    llm.record("ollama", "llama3.1:8b", {"done": True, "eval_count": 90, "eval_duration": 1_800_000_000}, 1900, 100)
    mon.advance(20)
    ollama_chunks = [{"message": {"content": "a"}, "done": False},
                     {"done": True, "prompt_eval_count": 64, "eval_count": 200, "eval_duration": 4_000_000_000}]
    list(llm.track_stream("ollama", "llama3.1:8b", paced(timer, ollama_chunks, 0.25, 4.0)))
    mon.advance(1)

    s = by_model(llm.stats("1h"))
    gpt, sonnet, llama = s["gpt-4o"], s["claude-sonnet-4-5"], s["llama3.1:8b"]
    # gpt-4o: uncached 464 + 800 + 476, cached 1536 + 1024, output 250 + 120 + 6
    assert (gpt.requests, gpt.input_uncached, gpt.cache_read, gpt.output) == (3, 1740, 2560, 376)
    assert gpt.cost_usd == pytest.approx(1740 * GPT4O_IN + 2560 * GPT4O_CACHED + 376 * GPT4O_OUT, rel=EXACT)
    # sonnet: uncached 40 + 30, read 5000 + 7000, 5-minute writes 2000, output 600 + 310
    assert (sonnet.requests, sonnet.input_uncached, sonnet.cache_read, sonnet.cache_write, sonnet.output) == (
        2, 70, 12000, 2000, 910)
    assert sonnet.cost_usd == pytest.approx(
        70 * SONNET_IN + 12000 * SONNET_READ + 2000 * SONNET_W5M + 910 * SONNET_OUT, rel=EXACT)
    # llama: 350 + 0 (cached prompt, not reported) + 64 in, 420 + 90 + 200 out, free
    assert (llama.requests, llama.input_uncached, llama.output, llama.cost_usd) == (3, 414, 710, 0.0)
    # tokens-weighted rate: 710 tokens over 8.4 + 1.8 + 4.0 s
    assert llama.output_tokens_per_s == pytest.approx(710 / 14.2, rel=EXACT)

    header = (f"{'model':<20}{'req':>4}{'in_uncached':>12}{'cache_read':>11}{'cache_write':>12}{'output':>8}"
              f"{'cost_usd':>11}{'ttft_p50_ms':>12}{'lat_p50_ms':>11}{'out_tok/s':>10}")
    print("\n" + header)
    for x in llm.stats("1h"):
        cost = "n/a" if x.cost_usd is None else f"{x.cost_usd:.6f}"
        ttft = "-" if x.ttft_p50_ms is None else f"{x.ttft_p50_ms:.0f}"
        lat = "-" if x.latency_p50_ms is None else f"{x.latency_p50_ms:.0f}"
        tps = "-" if x.output_tokens_per_s is None else f"{x.output_tokens_per_s:.1f}"
        print(f"{x.model:<20}{x.requests:>4}{x.input_uncached:>12}{x.cache_read:>11}{x.cache_write:>12}"
              f"{x.output:>8}{cost:>11}{ttft:>12}{lat:>11}{tps:>10}")
    total = sum(x.cost_usd or 0.0 for x in llm.stats("1h"))
    print(f"{'total':<20}{sum(x.requests for x in llm.stats('1h')):>4}{'':>43}{total:>11.6f}")


def test_saved_rows_are_dropped_from_the_buffer(mon: Monitor) -> None:
    llm = LlmTracker(mon)
    for _ in range(5):
        llm.record("openai", "gpt-4o", {"prompt_tokens": 1, "completion_tokens": 1}, latency_ms=10.0)
    rows, cursor = llm.rows_after(0)
    assert len(rows) == 5
    llm.forget_through(cursor)
    llm.record("openai", "gpt-4o", {"prompt_tokens": 1, "completion_tokens": 1}, latency_ms=10.0)
    assert len(llm.rows_after(0)[0]) == 1
    assert llm.stats("5m")[0].requests == 6  # the aggregates keep everything
