"""Usage normalisation: real SDK objects built from JSON, provider dicts and
streams, against counts worked out by hand from the mapping table."""

from __future__ import annotations

from typing import Any

import pytest

from movie_director_metrics.errors import InvalidValueError
from movie_director_metrics.llm import StreamUsage, Usage, normalize_usage, usage_from_stream



class _Sdk:
    """The real SDKs' types, imported when a test first needs them (tests
    that need one are skipped without it; the rest run)."""

    def __getattr__(self, module: str) -> Any:
        return pytest.importorskip({"openai_chat": "openai.types.chat", "anthropic_types": "anthropic.types"}[module])


sdk = _Sdk()


def chat_completion(usage: dict[str, Any] | None) -> Any:
    return sdk.openai_chat.ChatCompletion.model_validate({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000, "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}],
        "usage": usage,
    })


def chunk(content: str | None = None, usage: dict[str, Any] | None = None, *, final: bool = False) -> Any:
    choices = [] if final else [{"index": 0, "delta": {"content": content}, "finish_reason": None}]
    return sdk.openai_chat.ChatCompletionChunk.model_validate({
        "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o", "choices": choices,
        "usage": usage,
    })


def anthropic_message(usage: dict[str, Any]) -> Any:
    return sdk.anthropic_types.Message.model_validate({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": usage,
    })


# --- OpenAI-compatible -----------------------------------------------------------


def test_openai_chat_completion_prompt_tokens_include_cached() -> None:
    response = chat_completion({
        "prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 192, "audio_tokens": 0},
    })
    u = normalize_usage(response)
    # 2006 prompt tokens of which 1920 were cached: 86 uncached.
    assert (u.input_uncached, u.cache_read, u.cache_write) == (86, 1920, 0)
    assert (u.output, u.reasoning) == (300, 192)
    assert u.total_input == 2006 and u.total == 2306 and u.known
    assert normalize_usage(response.usage) == u  # the usage object alone reads the same


def test_openai_usage_without_details_and_as_dict() -> None:
    u = normalize_usage({"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14})
    assert u == Usage(input_uncached=10, output=4)


def test_openai_cache_write_tokens_are_part_of_the_prompt() -> None:
    u = normalize_usage({
        "prompt_tokens": 5000, "completion_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 1000, "cache_write_tokens": 3000},
    })
    assert (u.input_uncached, u.cache_read, u.cache_write) == (1000, 1000, 3000)


def test_openai_responses_api_input_tokens_include_cached() -> None:
    u = normalize_usage({
        "input_tokens": 1200, "input_tokens_details": {"cached_tokens": 1024},
        "output_tokens": 80, "output_tokens_details": {"reasoning_tokens": 64}, "total_tokens": 1280,
    })
    assert (u.input_uncached, u.cache_read, u.output, u.reasoning) == (176, 1024, 80, 64)


def test_cached_more_than_prompt_is_noted_not_negative() -> None:
    u = normalize_usage({"prompt_tokens": 5, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 9}})
    assert u.input_uncached == 0 and u.cache_read == 9
    assert any("exceed the prompt" in n for n in u.notes)


def test_lm_studio_stats_give_tokens_per_second() -> None:
    response = {
        "object": "chat.completion", "model": "qwen2.5-7b-instruct",
        "usage": {"prompt_tokens": 24, "completion_tokens": 53, "total_tokens": 77},
        "stats": {"tokens_per_second": 51.43, "time_to_first_token": 0.111, "generation_time": 0.954,
                  "stop_reason": "eosFound"},
    }
    u = normalize_usage(response, "lmstudio")
    assert (u.input_uncached, u.output, u.output_tokens_per_s) == (24, 53, 51.43)


def test_llamacpp_openai_response_with_timings() -> None:
    # usage has no prompt_tokens_details: the reused prefix comes from timings.cache_n.
    response = {
        "choices": [], "usage": {"prompt_tokens": 410, "completion_tokens": 40},
        "timings": {"prompt_n": 120, "prompt_ms": 900.0, "predicted_n": 40, "predicted_ms": 2000.0,
                    "predicted_per_second": 20.0, "cache_n": 290},
    }
    u = normalize_usage(response)
    assert (u.input_uncached, u.cache_read, u.output, u.output_tokens_per_s) == (120, 290, 40, 20.0)


def test_llamacpp_native_timings() -> None:
    # The rate is predicted_n / predicted_ms (2 / 46 ms), not the server's predicted_per_second.
    timings = {"prompt_n": 26, "prompt_ms": 119.0, "prompt_per_second": 218.4, "predicted_n": 2,
               "predicted_ms": 46.0, "predicted_per_second": 21.74, "cache_n": 4}
    expected = Usage(input_uncached=26, cache_read=4, output=2, output_tokens_per_s=2 / 46.0 * 1e3)
    assert normalize_usage(timings) == expected
    assert normalize_usage({"content": "2", "stop": True, "timings": timings}) == expected


# --- Anthropic -----------------------------------------------------------------------


def test_anthropic_message_input_tokens_exclude_cache() -> None:
    msg = anthropic_message({
        "input_tokens": 50, "output_tokens": 400, "cache_read_input_tokens": 2000,
        "cache_creation_input_tokens": 1000,
        "cache_creation": {"ephemeral_5m_input_tokens": 600, "ephemeral_1h_input_tokens": 400},
    })
    u = normalize_usage(msg)
    assert (u.input_uncached, u.cache_read, u.cache_write, u.cache_write_1h) == (50, 2000, 1000, 400)
    assert u.total_input == 50 + 2000 + 1000 and u.output == 400
    assert normalize_usage(msg.usage) == u


def test_anthropic_cache_write_from_the_split_when_total_absent() -> None:
    u = normalize_usage({"input_tokens": 3, "output_tokens": 7,
                         "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 20}})
    assert (u.cache_write, u.cache_write_1h) == (120, 20)


def test_anthropic_total_only_is_all_5m() -> None:
    u = normalize_usage({"input_tokens": 3, "output_tokens": 7, "cache_creation_input_tokens": 500,
                         "cache_read_input_tokens": None})
    assert (u.cache_write, u.cache_write_1h, u.cache_read) == (500, 0, 0)


def test_anthropic_thinking_tokens_are_reasoning() -> None:
    u = normalize_usage(anthropic_message({"input_tokens": 10, "output_tokens": 900,
                                           "output_tokens_details": {"thinking_tokens": 700}}))
    assert (u.output, u.reasoning) == (900, 700)


# --- Ollama --------------------------------------------------------------------------


def test_ollama_final_chunk_tokens_and_rate() -> None:
    final = {"model": "llama3.1:8b", "done": True, "done_reason": "stop", "total_duration": 5_043_500_667,
             "load_duration": 5_025_959, "prompt_eval_count": 26, "prompt_eval_duration": 325_953_000,
             "eval_count": 290, "eval_duration": 4_709_213_000}
    u = normalize_usage(final)
    assert (u.input_uncached, u.output) == (26, 290)
    assert u.output_tokens_per_s == 290 / 4_709_213_000 * 1e9  # eval_count / eval_duration(ns) * 1e9


def test_ollama_cached_prompt_omits_prompt_eval_count() -> None:
    u = normalize_usage({"done": True, "eval_count": 12, "eval_duration": 600_000_000})
    assert u.known and u.input_uncached == 0 and u.output == 12
    assert u.output_tokens_per_s == 20.0
    assert any("prompt_eval_count omitted" in n for n in u.notes)


# --- Unknown and invalid ---------------------------------------------------------------


def test_none_and_null_usage_are_unknown_not_zero() -> None:
    assert not normalize_usage(None).known
    u = normalize_usage(chat_completion(None))
    assert not u.known and "null" in u.notes[0]


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ({"foo": 1}, "no token fields"),
        ({"prompt_tokens": -1, "completion_tokens": 2}, "prompt_tokens=-1"),
        ({"prompt_tokens": 1.5, "completion_tokens": 2}, "prompt_tokens=1.5"),
        ({"input_tokens": "12", "output_tokens": 2}, "input_tokens='12'"),
        ("12 tokens", "not a usage report"),
    ],
)
def test_invalid_usage_names_the_value(bad: Any, fragment: str) -> None:
    with pytest.raises(InvalidValueError, match="expected") as ei:
        normalize_usage(bad)
    assert fragment in str(ei.value)


def test_usage_checks_its_invariants() -> None:
    with pytest.raises(InvalidValueError, match="reasoning=5 exceeds output=3"):
        Usage(output=3, reasoning=5)
    with pytest.raises(InvalidValueError, match="cache_write_1h"):
        Usage(cache_write=1, cache_write_1h=2)
    with pytest.raises(InvalidValueError, match="input_uncached=-1"):
        Usage(input_uncached=-1)


# --- Streams ------------------------------------------------------------------------------


def test_openai_stream_usage_on_the_final_empty_choices_chunk() -> None:
    chunks = [chunk("Hel"), chunk("lo"), chunk(usage={
        "prompt_tokens": 1100, "completion_tokens": 2, "total_tokens": 1102,
        "prompt_tokens_details": {"cached_tokens": 1024}}, final=True)]
    u = usage_from_stream(chunks)
    assert (u.input_uncached, u.cache_read, u.output) == (76, 1024, 2)


def test_usage_on_a_chunk_with_content_and_last_one_wins() -> None:
    # vLLM continuous_usage_stats: usage on every chunk, cumulative; the last is the total.
    chunks = [
        chunk("a", {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}),
        chunk("b", {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}),
        chunk("c", {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}),
    ]
    assert usage_from_stream(chunks) == Usage(input_uncached=9, output=3)


def test_vllm_choices_null_chunks() -> None:
    chunks: list[dict[str, Any]] = [
        {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "x"}}], "usage": None},
        {"object": "chat.completion.chunk", "choices": None,
         "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}},
    ]
    assert usage_from_stream(chunks) == Usage(input_uncached=7, output=5)


def test_stream_without_usage_is_unknown() -> None:
    u = usage_from_stream([chunk("a"), chunk("b")])
    assert not u.known
    assert u.notes == ("stream ended without usage",)
    assert not usage_from_stream([]).known


def test_anthropic_stream_message_delta_is_cumulative() -> None:
    start = sdk.anthropic_types.RawMessageStartEvent.model_validate({"type": "message_start", "message": {
        "id": "m", "type": "message", "role": "assistant", "model": "claude-haiku-4-5", "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 1, "cache_read_input_tokens": 3000,
                  "cache_creation_input_tokens": 0}}})
    deltas = [
        sdk.anthropic_types.RawMessageDeltaEvent.model_validate({
            "type": "message_delta", "delta": {"stop_reason": None, "stop_sequence": None},
            "usage": {"output_tokens": n}})
        for n in (10, 25, 40)
    ]
    text = sdk.anthropic_types.RawContentBlockDeltaEvent.model_validate(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}})
    u = usage_from_stream([start, text, *deltas])
    # The last cumulative count, not 1 + 10 + 25 + 40.
    assert (u.input_uncached, u.cache_read, u.output) == (12, 3000, 40)


def test_anthropic_delta_may_update_the_input_side() -> None:
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"usage": {"input_tokens": 5, "output_tokens": 1}}},
        {"type": "message_delta", "usage": {"output_tokens": 30, "input_tokens": 8, "cache_read_input_tokens": 100}},
        {"type": "message_stop"},
    ]
    assert usage_from_stream(events) == Usage(input_uncached=8, cache_read=100, output=30)


def test_ollama_native_stream_takes_the_done_chunk() -> None:
    chunks = [{"message": {"content": "a"}, "done": False}, {"message": {"content": "b"}, "done": False},
              {"done": True, "prompt_eval_count": 14, "eval_count": 2, "eval_duration": 100_000_000}]
    assert usage_from_stream(chunks) == Usage(input_uncached=14, output=2, output_tokens_per_s=20.0)


def test_llamacpp_native_stream_last_timings_win() -> None:
    chunks = [{"content": "a", "stop": False},
              {"content": "", "stop": True, "timings": {"prompt_n": 6, "predicted_n": 9, "predicted_per_second": 30.0}}]
    assert usage_from_stream(chunks) == Usage(input_uncached=6, output=9, output_tokens_per_s=30.0)


def test_stream_accumulator_keeps_only_the_latest_chunk() -> None:
    acc = StreamUsage()
    for i in range(10_000):
        acc.add({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": i}})
    assert acc.usage().output == 9_999


# --- Invariants ---------------------------------------------------------------------------


def test_total_input_is_what_each_provider_bills_as_input() -> None:
    import random

    rng = random.Random(7)
    for _ in range(2_000):
        prompt, completion = rng.randrange(0, 300_000), rng.randrange(0, 20_000)
        cached = rng.randrange(0, prompt + 1)
        reasoning = rng.randrange(0, completion + 1)
        u = normalize_usage({"prompt_tokens": prompt, "completion_tokens": completion,
                             "prompt_tokens_details": {"cached_tokens": cached},
                             "completion_tokens_details": {"reasoning_tokens": reasoning}})
        assert (u.total_input, u.cache_read, u.output, u.reasoning) == (prompt, cached, completion, reasoning)
        inp, read, w5m, w1h = (rng.randrange(0, 100_000) for _ in range(4))
        a = normalize_usage({"input_tokens": inp, "output_tokens": completion, "cache_read_input_tokens": read,
                             "cache_creation": {"ephemeral_5m_input_tokens": w5m, "ephemeral_1h_input_tokens": w1h}})
        assert a.total_input == inp + read + w5m + w1h and a.cache_write_1h == w1h


def test_provider_hint_only_settles_the_ambiguous_shape() -> None:
    plain = {"input_tokens": 100, "output_tokens": 5}
    assert normalize_usage(plain, "openai") == normalize_usage(plain, "anthropic") == Usage(input_uncached=100, output=5)
    # Anthropic's cache fields mean Anthropic semantics whoever relays them.
    relayed = {"input_tokens": 100, "output_tokens": 5, "cache_read_input_tokens": 900}
    assert normalize_usage(relayed, "openai") == Usage(input_uncached=100, cache_read=900, output=5)
