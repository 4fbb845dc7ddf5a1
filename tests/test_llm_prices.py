"""Price table and cost: every expected cost is worked out by hand in the
test from the per-token prices of the shipped LiteLLM entries."""

from __future__ import annotations

import datetime as dt
import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from movie_director_metrics.errors import ConfigError, InvalidValueError
from movie_director_metrics.llm import PriceTable, Usage, is_loopback, normalize_provider, normalize_usage

EXACT = 1e-12  # relative: float sums of a handful of products


def approx(x: float) -> Any:
    return pytest.approx(x, rel=EXACT)


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.load()


def user_table(tmp_path: Path, entries: dict[str, Any]) -> PriceTable:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(entries))
    return PriceTable.load(path)


# --- The shipped table ----------------------------------------------------------


def test_shipped_table_is_dated_and_sourced(table: PriceTable) -> None:
    assert table.source is not None and "BerriAI/litellm" in table.source
    assert "00035b69f416be24e2e323c13198d9b7d2d1bdf9" in table.source
    assert table.retrieved is not None and dt.date.fromisoformat(table.retrieved)
    assert {"gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "claude-haiku-4-5", "claude-sonnet-4-6"} <= set(table.models())


def test_shipped_file_lives_in_the_package() -> None:
    # Under python/movie_director_metrics/, so maturin puts it in the wheel.
    ref = resources.files("movie_director_metrics.llm").joinpath("prices", "default.json")
    data = json.loads(ref.read_text(encoding="utf-8"))
    assert data["_retrieved"] and data["_source"]


@pytest.mark.parametrize(
    "model, input_, output, cache_read",
    [  # values as read in LiteLLM's file (see _source)
        ("gpt-4o", 2.5e-06, 1e-05, 1.25e-06),
        ("gpt-4o-mini", 1.5e-07, 6e-07, 7.5e-08),
        ("claude-haiku-4-5", 1e-06, 5e-06, 1e-07),
        ("claude-sonnet-4-5", 3e-06, 1.5e-05, 3e-07),
        ("claude-sonnet-4-6", 3e-06, 1.5e-05, 3e-07),
    ],
)
def test_shipped_prices_pinned(table: PriceTable, model: str, input_: float, output: float, cache_read: float) -> None:
    provider = "openai" if model.startswith("gpt") else "anthropic"
    e = table.entry(provider, model)
    assert e is not None
    assert (e.fields["input_cost_per_token"], e.fields["output_cost_per_token"],
            e.fields["cache_read_input_token_cost"]) == (input_, output, cache_read)


# --- Hosted costs ------------------------------------------------------------------


def test_openai_cost_with_cached_prompt(table: PriceTable) -> None:
    u = normalize_usage({"prompt_tokens": 1200, "completion_tokens": 300,
                         "prompt_tokens_details": {"cached_tokens": 1024}})
    # 176 uncached x $2.50/M + 1024 cached x $1.25/M + 300 out x $10/M
    expected = 176 * 2.5e-06 + 1024 * 1.25e-06 + 300 * 1e-05
    assert expected == approx(0.00472)
    assert table.cost("openai", "gpt-4o", u) == approx(expected)
    assert table.cost("openai", "gpt-4o-2024-08-06", u) == approx(expected)


def test_gpt_4o_mini_cost(table: PriceTable) -> None:
    u = Usage(input_uncached=10_000, output=2_000)
    assert table.cost("openai", "gpt-4o-mini", u) == approx(10_000 * 1.5e-07 + 2_000 * 6e-07)  # $0.0027


def test_anthropic_cost_with_5m_and_1h_cache_writes(table: PriceTable) -> None:
    u = normalize_usage({"input_tokens": 50, "output_tokens": 400, "cache_read_input_tokens": 2000,
                         "cache_creation_input_tokens": 1000,
                         "cache_creation": {"ephemeral_5m_input_tokens": 600, "ephemeral_1h_input_tokens": 400}})
    # 50 x $3/M + 2000 x $0.30/M + 600 x $3.75/M + 400 x $6/M + 400 x $15/M
    expected = 50 * 3e-06 + 2000 * 3e-07 + 600 * 3.75e-06 + 400 * 6e-06 + 400 * 1.5e-05
    assert expected == approx(0.0114)
    assert table.cost("anthropic", "claude-sonnet-4-5", u) == approx(expected)


def test_above_200k_bills_the_whole_request_at_the_tier(table: PriceTable) -> None:
    u = Usage(input_uncached=150_000, cache_read=60_000, cache_write=10_000, cache_write_1h=4_000, output=1_000)
    # 220k input tokens > 200k: every kind at its _above_200k_tokens price.
    expected = (150_000 * 6e-06 + 60_000 * 6e-07 + 6_000 * 7.5e-06 + 4_000 * 1.2e-05 + 1_000 * 2.25e-05)
    assert table.cost("anthropic", "claude-sonnet-4-5", u) == approx(expected)
    # Exactly 200k is not above it: base prices.
    at_limit = Usage(input_uncached=200_000, output=10)
    assert table.cost("anthropic", "claude-sonnet-4-5", at_limit) == approx(200_000 * 3e-06 + 10 * 1.5e-05)


def test_tier_without_a_price_for_a_kind_keeps_the_base_price(tmp_path: Path) -> None:
    t = user_table(tmp_path, {"m": {"litellm_provider": "acme", "input_cost_per_token": 1e-06,
                                    "input_cost_per_token_above_128k_tokens": 2e-06, "output_cost_per_token": 4e-06}})
    u = Usage(input_uncached=130_000, output=100)
    assert t.cost("acme", "m", u) == approx(130_000 * 2e-06 + 100 * 4e-06)


def test_reasoning_is_output_unless_priced_apart(table: PriceTable, tmp_path: Path) -> None:
    u = Usage(input_uncached=100, output=500, reasoning=400)
    assert table.cost("openai", "gpt-4o", u) == approx(100 * 2.5e-06 + 500 * 1e-05)
    t = user_table(tmp_path, {"r1": {"litellm_provider": "acme", "input_cost_per_token": 1e-06,
                                     "output_cost_per_token": 2e-06, "output_cost_per_reasoning_token": 5e-06}})
    assert t.cost("acme", "r1", u) == approx(100 * 1e-06 + 100 * 2e-06 + 400 * 5e-06)


def test_unknown_model_wrong_provider_and_unknown_usage_have_no_price(table: PriceTable) -> None:
    u = Usage(input_uncached=10, output=10)
    assert table.cost("openai", "gpt-9-ultra", u) is None
    assert table.cost("azure", "gpt-4o", u) is None  # the entry is openai's
    assert table.cost("openai", "gpt-4o", Usage(known=False)) is None


def test_kinds_without_a_price(tmp_path: Path) -> None:
    t = user_table(tmp_path, {"m": {"litellm_provider": "acme", "input_cost_per_token": 1e-06,
                                    "output_cost_per_token": 2e-06}})
    # Cache reads are discounted somewhere or not: no price, no guess.
    assert t.cost("acme", "m", Usage(input_uncached=1, cache_read=5)) is None
    # Writes without a write price are billed as input (no premium listed).
    assert t.cost("acme", "m", Usage(input_uncached=1, cache_write=5)) == approx(6 * 1e-06)
    # 1-hour writes cost a premium that is not listed: no price.
    assert t.cost("acme", "m", Usage(cache_write=5, cache_write_1h=5)) is None
    # Zero tokens of an unpriced kind need no price.
    assert t.cost("acme", "m", Usage(input_uncached=3)) == approx(3e-06)


# --- Overrides, history and patterns --------------------------------------------------------


def test_user_entry_overrides_the_shipped_one(tmp_path: Path) -> None:
    t = user_table(tmp_path, {"gpt-4o": {"litellm_provider": "openai", "input_cost_per_token": 1e-06,
                                         "output_cost_per_token": 1e-06}})
    assert t.cost("openai", "gpt-4o", Usage(input_uncached=10, output=10)) == approx(20e-06)
    assert t.entry("openai", "gpt-4o").origin.endswith("prices.json")  # type: ignore[union-attr]
    assert t.cost("openai", "gpt-4o-mini", Usage(output=10)) == approx(10 * 6e-07)  # shipped still there


def test_price_history_by_start_date(tmp_path: Path) -> None:
    t = user_table(tmp_path, {"acme-1": [
        {"litellm_provider": "acme", "start_date": "2025-01-01", "input_cost_per_token": 2e-06, "output_cost_per_token": 0},
        {"litellm_provider": "acme", "start_date": "2025-06-15", "input_cost_per_token": 1e-06, "output_cost_per_token": 0},
    ]})
    u = Usage(input_uncached=1000)
    assert t.cost("acme", "acme-1", u, at="2024-12-31") is None  # before any price
    assert t.cost("acme", "acme-1", u, at="2025-01-01") == approx(2e-03)
    assert t.cost("acme", "acme-1", u, at=dt.date(2025, 6, 14)) == approx(2e-03)
    assert t.cost("acme", "acme-1", u, at=dt.datetime(2025, 6, 15, 0, 0, tzinfo=dt.UTC)) == approx(1e-03)
    june_15_utc = dt.datetime(2025, 6, 15, tzinfo=dt.UTC).timestamp()
    assert t.cost("acme", "acme-1", u, at=june_15_utc - 1) == approx(2e-03)  # epoch seconds, UTC day
    assert t.cost("acme", "acme-1", u, at=june_15_utc) == approx(1e-03)


def test_future_user_price_leaves_the_shipped_one_until_then(tmp_path: Path) -> None:
    t = user_table(tmp_path, {"gpt-4o": {"litellm_provider": "openai", "start_date": "2030-01-01",
                                         "input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06}})
    u = Usage(input_uncached=100)
    assert t.cost("openai", "gpt-4o", u, at="2029-12-31") == approx(100 * 2.5e-06)
    assert t.cost("openai", "gpt-4o", u, at="2030-01-01") == approx(100 * 1e-06)


def test_match_pattern(tmp_path: Path) -> None:
    t = user_table(tmp_path, {"vllm llama": {"match_pattern": r"(meta-llama/)?llama-3\.\d-8b.*",
                                             "litellm_provider": "vllm",
                                             "input_cost_per_token": 1e-07, "output_cost_per_token": 2e-07}})
    u = Usage(input_uncached=1000, output=500)
    expected = 1000 * 1e-07 + 500 * 2e-07
    base = "http://gpu-box.lan:8000/v1"
    assert t.cost("vllm", "llama-3.1-8b-instruct", u, base_url=base) == approx(expected)
    assert t.cost("vllm", "meta-llama/llama-3.2-8b", u, base_url=base) == approx(expected)
    assert t.cost("vllm", "llama-3.1-70b", u, base_url=base) is None  # full match only
    assert t.cost("openai", "llama-3.1-8b", u) is None  # another provider


def test_exact_name_beats_pattern_in_the_same_file(tmp_path: Path) -> None:
    t = user_table(tmp_path, {
        "any": {"match_pattern": ".*", "litellm_provider": "acme", "input_cost_per_token": 9e-06},
        "acme/small": {"litellm_provider": "acme", "input_cost_per_token": 1e-06},
    })
    assert t.cost("acme", "small", Usage(input_uncached=1)) == approx(1e-06)  # provider/model key
    assert t.cost("acme", "big", Usage(input_uncached=1)) == approx(9e-06)


def test_litellm_metadata_entries_are_skipped(tmp_path: Path) -> None:
    t = user_table(tmp_path, {"sample_spec": {"input_cost_per_token": 0.0, "mode": "one of: chat"},
                              "_comment": "mine", "m": {"input_cost_per_token": 1e-06}})
    assert t.models()[0] == "m" and "sample_spec" not in t.models()


# --- Local models ------------------------------------------------------------------------------


def test_local_models_are_free_without_a_runtime_price(table: PriceTable) -> None:
    u = Usage(input_uncached=500, output=900)
    assert table.cost("ollama", "llama3.1:8b", u) == 0.0
    assert table.cost("Ollama", "llama3.1:8b", Usage(known=False)) == 0.0  # tokens do not matter
    assert table.cost("lm_studio", "qwen2.5-7b", u) == 0.0
    assert table.cost("llamacpp", "gemma", u) == 0.0
    assert table.cost("vllm", "qwen", u) is None  # could be a paid deployment
    assert table.cost("vllm", "qwen", u, base_url="http://127.0.0.1:8000/v1") == 0.0
    assert table.cost("vllm", "qwen", u, base_url="http://gpu-box.lan:8000/v1") is None


def test_runtime_price_per_second_and_energy(tmp_path: Path) -> None:
    t = user_table(tmp_path, {
        "ollama gpu": {"match_pattern": ".*", "litellm_provider": "ollama", "gpu_watts": 350,
                       "energy_cost_per_kwh": 0.30},
        "llama.cpp/rented": {"litellm_provider": "llama.cpp", "input_cost_per_second": 0.0002},
    })
    u = Usage(input_uncached=10, output=10)
    # 350 W for 2.4 s = 840 J = 840 / 3.6e6 kWh; x $0.30
    assert t.cost("ollama", "llama3.1:8b", u, latency_ms=2400) == approx(350 * 2.4 / 3.6e6 * 0.30)
    assert t.cost("llama.cpp", "rented", u, latency_ms=1500) == approx(0.0002 * 1.5)
    assert t.cost("ollama", "llama3.1:8b", u) is None  # a runtime price needs the latency


# --- Errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entries, fragment",
    [
        ({"m": {"input_cost_per_token": -1}}, "input_cost_per_token=-1"),
        ({"m": {"output_cost_per_token": "cheap"}}, "output_cost_per_token='cheap'"),
        ({"m": {"input_cost_per_token_above_200k_tokens": float("inf")}}, "above_200k_tokens=inf"),
        ({"m": {"start_date": "2025-13-01"}}, "start_date='2025-13-01'"),
        ({"m": {"start_date": "1 May 2025"}}, "expected 'YYYY-MM-DD'"),
        ({"m": {"match_pattern": "(unclosed"}}, "is not a regex"),
        ({"m": {"gpu_watts": 300}}, "gpu_watts and energy_cost_per_kwh"),
        ({"m": 3}, "expected an object"),
        ({"m": {"litellm_provider": ""}}, "litellm_provider=''"),
    ],
)
def test_bad_user_file_names_file_entry_and_value(tmp_path: Path, entries: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as ei:
        user_table(tmp_path, entries)
    message = str(ei.value)
    assert "prices.json" in message and "'m'" in message and fragment in message


def test_unreadable_user_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        PriceTable.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"m": {"input_cost_per_token": 1e-06,}}')
    with pytest.raises(ConfigError, match=r"bad\.json: not valid JSON \(line 1"):
        PriceTable.load(bad)
    not_object = tmp_path / "list.json"
    not_object.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="expected a JSON object keyed by model"):
        PriceTable.load(not_object)


def test_bad_arguments(table: PriceTable) -> None:
    with pytest.raises(InvalidValueError, match="provider=''"):
        table.cost("", "gpt-4o", Usage())
    with pytest.raises(InvalidValueError, match="normalize_usage"):
        table.cost("openai", "gpt-4o", {"prompt_tokens": 1})  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError, match="at='yesterday'"):
        table.cost("openai", "gpt-4o", Usage(), at="yesterday")


def test_provider_names_and_loopback() -> None:
    assert normalize_provider(" LM-Studio ") == "lmstudio" and normalize_provider("llama_cpp") == "llama.cpp"
    for url in ("http://127.0.0.1:8000/v1", "http://localhost:11434", "localhost:1234", "http://[::1]:8080",
                "http://127.0.0.5/", "http://api.localhost"):
        assert is_loopback(url), url
    for remote in ("https://api.openai.com/v1", "http://10.0.0.2:8000", "", None, "http://[bad"):
        assert not is_loopback(remote), remote
