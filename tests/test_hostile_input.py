"""Hostile input into everything that reads data from outside the process.

Property tests (hypothesis) feed arbitrary and near-valid input to:

* ``backends.toml``: ``parse_config`` over TOML-like dicts and
  ``load_config`` over arbitrary text -- only ``ConfigError`` may come out,
  and what is accepted works (an engine service name, a URL the HTTP client
  takes);
* alert rule files: ``parse_rules`` -- only ``ConfigError``; accepted rules
  answer ``suppression`` at any time and survive ``as_table`` -> TOML;
* price tables: ``PriceTable.load`` on arbitrary JSON -- only
  ``ConfigError``; an accepted table prices any request with a finite cost
  or None;
* ``normalize_usage``/``usage_from_stream`` on arbitrary dicts and objects --
  a ``Usage`` or ``InvalidValueError``, nothing else;
* backend replies: arbitrary JSON (deeply nested, huge, wrong-typed, NaN,
  unicode, truncated) served by a real loopback server to each kind's
  probe/detect/collect -- only ``ProbeError`` may escape, and what is
  recorded is ``bad_json`` (``connection_reset`` for a cut reply);
* names with quotes, newlines, commas, semicolons, ``=``, ``%``,
  backslashes, control characters, emoji and lone surrogates through CSV,
  JSON, OpenMetrics (``prometheus_client``'s parsers) and the LLM export.

Inputs that once found a bug live in ``tests/fuzz_corpus/`` and are replayed
by the ``*_corpus`` tests below.  Example counts keep this file under 30 s;
``MDM_FUZZ_SCALE=100`` multiplies them for a long run.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, event, given, note, settings
from hypothesis import strategies as st

from loopback import LoopbackServer, Reply
from movie_director_metrics import Monitor, _core
from movie_director_metrics.alerts.rules import DERIVED_METRICS, SERVICE_METRICS, AlertRule, parse_rules
from movie_director_metrics.collectors import BackendConfig, HttpClient, ProbeError
from movie_director_metrics.collectors.config import KINDS, load_config, parse_config
from movie_director_metrics.collectors.kinds import backend_class
from movie_director_metrics.errors import ConfigError, InvalidConfigError, InvalidNameError, InvalidValueError
from movie_director_metrics.llm.prices import PriceTable, normalize_provider
from movie_director_metrics.llm.usage import MAX_TOKENS, Usage, normalize_usage, usage_from_stream

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "fuzz_corpus"
FIXTURES = HERE / "fixtures" / "backends"
SHARED_FIXTURES = HERE / "fixtures" / "recorded"  # real recorded payloads (copied in)
SCALE = max(1, int(os.environ.get("MDM_FUZZ_SCALE", "1")))
T0 = 1_700_000_000.0


def fuzz(examples: int, *, shrink: bool = True) -> Callable[[Any], Any]:
    """Hypothesis settings for this file: no deadline (loopback I/O),
    no example database in the tree (found inputs go to fuzz_corpus/).
    ``shrink=False`` for tests doing HTTP per example, where shrinking a
    failure can take many minutes (``MDM_FUZZ_SHRINK=1`` turns it back on)."""
    phases = list(Phase)
    if not shrink and not os.environ.get("MDM_FUZZ_SHRINK"):
        phases.remove(Phase.shrink)
    return settings(
        max_examples=examples * SCALE,
        deadline=None,
        database=None,
        phases=phases,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


def corpus_bytes(path: Path) -> bytes:
    """A corpus file's bytes; ``*.parts.json`` holds ``[[text, repeat], ...]``
    for inputs too big to keep (100 000 nested brackets)."""
    if path.name.endswith(".parts.json"):
        return "".join(text * n for text, n in json.loads(path.read_text())).encode("utf-8")
    return path.read_bytes()


def corpus(kind: str, *suffixes: str) -> list[Path]:
    return sorted(p for p in (CORPUS / kind).iterdir() if p.name.endswith(suffixes))


def materialize(path: Path, tmp: Path) -> Path:
    """The corpus input as a real file (big ones are kept as parts)."""
    if not path.name.endswith(".parts.json"):
        return path
    out = tmp / path.name.removesuffix(".parts.json")
    out.write_bytes(corpus_bytes(path))
    return out


# ---- TOML-like values and their text ---------------------------------------------

def toml_scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.text(max_size=24),
        st.integers(min_value=-(10**40), max_value=10**40),
        st.floats(),
        st.booleans(),
        st.datetimes(timezones=st.none() | st.just(_dt.UTC)),
        st.dates(),
        st.times(),
    )


def toml_values(max_leaves: int = 8) -> st.SearchStrategy[Any]:
    return st.recursive(
        toml_scalars(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=max_leaves,
    )


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        # A TOML basic string: JSON's escapes are TOML's; DEL must be escaped.
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, (_dt.datetime, _dt.date, _dt.time)):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml(str(k))} = {_toml(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def toml_document(data: dict[str, Any]) -> str:
    """``data`` as TOML text (inline tables and arrays only)."""
    return "".join(f"{_toml(str(k))} = {_toml(v)}\n" for k, v in data.items())


def write_text(path: Path, text: str) -> Path:
    # surrogatepass: a lone surrogate becomes bytes that are not UTF-8,
    # which the readers must refuse cleanly too.
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    return path


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


def engine_name_problem(name: str) -> bool:
    """Whether the engine refuses ``name`` as a service name (its rule:
    1-64 characters, no control characters, no whitespace but the space)."""
    return (
        not 1 <= len(name) <= 64
        or any(c < " " or "\x7f" <= c <= "\x9f" or (c.isspace() and c != " ") for c in name)
    )


# ---- backends.toml -----------------------------------------------------------------

URLS = st.one_of(
    st.builds(
        "{}://{}{}{}".format,
        st.sampled_from(["http", "https", "ftp", "HTTP", ""]),
        st.sampled_from(["127.0.0.1", "localhost", "[::1]", "[::1", "[abc]", "[fe80::1%25eth0]", "a b", "", "ü.example"])
        | st.text(max_size=8),
        st.sampled_from(["", ":0", ":8188", ":65535", ":65536", ":-1", ":abc", ":", ":99999999999999999999"]),
        st.sampled_from(["", "/", "/api/", "?q=1", "#f", "/\x00"]),
    ),
    st.text(max_size=30),
)

PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "name": st.text(min_size=0, max_size=70),
    "kind": st.sampled_from([*KINDS, "", "ComfyUI", "grpc"]),
    "url": URLS,
    "interval_s": st.one_of(st.floats(), st.integers(min_value=-(10**30), max_value=10**30)),
    "connect_timeout_s": st.floats(min_value=-1, max_value=20) | st.just(math.nan),
    "read_timeout_s": st.floats(min_value=-1, max_value=200),
    "api_key_env": st.text(max_size=12),
    "enabled": st.booleans(),
    "path": st.text(max_size=12),
    "expect_status": st.integers(min_value=-5, max_value=1000),
    "api_key": st.text(max_size=8),
    "key": st.text(max_size=8),
    "bogus": st.text(max_size=8),
}


def backend_entries() -> st.SearchStrategy[Any]:
    """A [[backend]] table: the required keys (mostly), some optional ones,
    each plausible or any TOML value; now and then not a table at all."""
    value = {k: s | toml_values(4) for k, s in PLAUSIBLE.items()}
    required = {k: value[k] for k in ("name", "kind", "url")}
    optional = {k: value[k] for k in PLAUSIBLE if k not in required}
    table = st.fixed_dictionaries(required, optional=optional)
    return table | toml_values(4)


def config_documents() -> st.SearchStrategy[dict[str, Any]]:
    defaults = st.dictionaries(st.sampled_from(sorted(PLAUSIBLE)), toml_values(3), max_size=3)
    return st.fixed_dictionaries(
        {},
        optional={
            "backend": st.lists(backend_entries(), max_size=3) | toml_values(3),
            "defaults": defaults | toml_values(3),
            "other": toml_values(2),
        },
    )


@pytest.fixture(scope="module")
def names_engine() -> Iterator[_core.Monitor]:
    m = _core.Monitor(max_services=4096)
    yield m
    m.close()


def check_accepted_configs(configs: list[BackendConfig], engine: _core.Monitor) -> None:
    """What parse_config accepts must work: the name is an engine service
    name and the URL one the HTTP client takes."""
    for c in configs:
        engine.service(c.name)
        HttpClient(c.url, connect_timeout_s=c.connect_timeout_s, read_timeout_s=c.read_timeout_s)
        assert c.kind in KINDS


@fuzz(200)
@given(doc=config_documents())
def test_parse_config_raises_only_config_error(doc: dict[str, Any], names_engine: _core.Monitor) -> None:
    try:
        configs = parse_config(doc)
    except ConfigError:
        return
    check_accepted_configs(configs, names_engine)


@fuzz(100)
@given(doc=config_documents(), junk=st.sampled_from(["", "\n[[backend]]\n", "\nx = ", "\x00", "\n= 1\n", "\"\n"]))
def test_load_config_reads_any_text(doc: dict[str, Any], junk: str, scratch: Path, names_engine: _core.Monitor) -> None:
    path = write_text(scratch / "backends.toml", toml_document(doc) + junk)
    try:
        configs = load_config(path)
    except ConfigError as e:
        assert str(path) in str(e)
        return
    check_accepted_configs(configs, names_engine)


@fuzz(100)
@given(text=st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_load_config_reads_arbitrary_bytes(text: str, scratch: Path) -> None:
    path = scratch / "junk.toml"
    path.write_bytes(text.encode("latin-1", "replace"))
    try:
        load_config(path)
    except ConfigError:
        pass


@pytest.mark.parametrize("path", corpus("config", ".toml", ".parts.json"), ids=lambda p: p.name)
def test_config_corpus(path: Path, tmp_path: Path, names_engine: _core.Monitor) -> None:
    try:
        configs = load_config(materialize(path, tmp_path))
    except ConfigError:
        return
    check_accepted_configs(configs, names_engine)


# ---- alert rules -----------------------------------------------------------------------

RULE_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "name": st.text(max_size=20) | st.sampled_from(["r", "x" * 200, "a\nb"]),
    "target": st.sampled_from(["svc", "*", "model:gpt", "model:", "model:*", "", "a\tb"]) | st.text(max_size=10),
    "metric": st.sampled_from([*SERVICE_METRICS, *DERIVED_METRICS, "gauge:cpu_pct", "gauge:nope", "", "up"])
    | st.text(max_size=10),
    "comparator": st.sampled_from([">", ">=", "<", "<=", "=", ""]),
    "threshold": st.one_of(st.floats(), st.integers(min_value=-(10**400), max_value=10**400)),
    "recovery_threshold": st.floats(),
    "window": st.sampled_from(["5m", "1h", "90s", "7d", "0s", "1.5h", "٣m", " 5 m ", "-1m", "1e9d"])
    | st.floats()
    | st.integers(min_value=-10, max_value=10**20),
    "for_s": st.floats(min_value=-1, max_value=3e6),
    "keep_firing_for_s": st.floats(),
    "repeat_s": st.integers(min_value=-5, max_value=10**12),
    "cooldown_s": st.floats(),
    "severity": st.sampled_from(["info", "warning", "critical", "fatal"]),
    "maintenance": st.lists(
        st.one_of(
            st.sampled_from(["22:00-02:00", "00:00-24:00", "24:00-01:00", "9:5-10:00", "12:00-12:00", "٠٠:٠٠-٠١:٠٠"]),
            st.text(max_size=12),
            st.lists(st.one_of(st.floats(), st.integers(min_value=-(10**400), max_value=10**400)), max_size=3),
        ),
        max_size=3,
    ),
    "snooze_until": st.one_of(
        st.floats(),
        st.datetimes(timezones=st.none() | st.just(_dt.timezone(_dt.timedelta(hours=-23, minutes=-59)))),
        st.dates(),
    ),
    "bogus": st.integers(),
}


def rule_tables() -> st.SearchStrategy[Any]:
    value = {k: s | toml_values(3) for k, s in RULE_VALUES.items()}
    required = {k: value[k] for k in ("name", "target", "metric", "comparator", "threshold")}
    optional = {k: value[k] for k in RULE_VALUES if k not in required}
    table = st.fixed_dictionaries(required, optional=optional)
    return table | toml_values(3)


def check_accepted_rules(rules: list[AlertRule]) -> None:
    """Accepted rules answer every question at any time, and their TOML
    form reads back as the same rule."""
    for r in rules:
        for at in (0.0, T0, 4e9, 1e18):
            reason = r.suppression(at)
            assert reason is None or isinstance(reason, str)
        r.breached(0.0)
        r.recovered(1e300)
        assert parse_rules(toml_document({"rule": [r.as_table()]})) == [r]


@fuzz(200)
@given(tables=st.lists(rule_tables(), max_size=3) | toml_values(3), extra=st.none() | toml_values(2))
def test_parse_rules_raises_only_config_error(tables: Any, extra: Any) -> None:
    doc: dict[str, Any] = {"rule": tables}
    if extra is not None:
        doc["extra"] = extra
    try:
        rules = parse_rules(toml_document(doc))
    except ConfigError:
        return
    check_accepted_rules(rules)


@fuzz(100)
@given(text=st.text(max_size=120))
def test_parse_rules_reads_any_text(text: str) -> None:
    # "[[" makes it TOML text rather than a file name.
    try:
        parse_rules("[[rule]]\n" + text)
    except ConfigError:
        pass
    try:
        parse_rules(text)  # a file name, mostly: missing, or unreadable
    except ConfigError:
        pass


def test_found_a_nul_after_a_tilde_in_any_path_argument(tmp_path: Path) -> None:
    """Found by test_parse_rules_reads_any_text at 100x (text '~\\x00'):
    ``Path.expanduser`` raised a bare ``ValueError: embedded null byte``.
    Every path a user passes now gets our error naming it."""
    from movie_director_metrics.llm import PriceTable

    bad = "~\x00"
    m = Monitor(manual_clock=True, start_time=T0)
    try:
        cases: list[tuple[Callable[[], object], type[Exception], str]] = [
            (lambda: parse_rules(bad), ConfigError, "alert rules file"),
            (lambda: PriceTable.load(bad), ConfigError, "price table"),
            (lambda: Monitor(storage=bad), InvalidConfigError, "storage"),
            (lambda: m.export(bad + "/x.csv"), InvalidValueError, "export path"),
            (lambda: m.llm.export(tmp_path / "a\x00.csv"), InvalidValueError, "export path"),
        ]
        for call, error, what in cases:
            with pytest.raises(error) as info:
                call()
            assert str(info.value).startswith(what) and "NUL character: expected a file path" in str(info.value)
    finally:
        m.close()


@pytest.mark.parametrize("path", corpus("rules", ".toml", ".parts.json"), ids=lambda p: p.name)
def test_rules_corpus(path: Path, tmp_path: Path) -> None:
    try:
        rules = parse_rules(materialize(path, tmp_path))
    except ConfigError:
        return
    check_accepted_rules(rules)


# ---- price tables --------------------------------------------------------------------------

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(),
    st.text(max_size=16),
)


def json_values(max_leaves: int = 10) -> st.SearchStrategy[Any]:
    return st.recursive(
        JSON_SCALARS,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
        max_leaves=max_leaves,
    )


PRICE_FIELDS = (
    "input_cost_per_token", "output_cost_per_token", "output_cost_per_reasoning_token",
    "cache_read_input_token_cost", "cache_creation_input_token_cost",
    "cache_creation_input_token_cost_above_1hr", "input_cost_per_token_above_200k_tokens",
    "output_cost_per_token_above_0k_tokens", "input_cost_per_second", "gpu_watts", "energy_cost_per_kwh",
)  # fmt: skip
PRICE_NUMBERS = st.one_of(
    st.floats(min_value=0, max_value=1e-3),
    st.floats(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.sampled_from([0, 1e6, 1e6 + 1, 1e308, 5e-324, -0.0]),
)


def price_entries() -> st.SearchStrategy[Any]:
    fields: dict[str, st.SearchStrategy[Any]] = {k: st.one_of(PRICE_NUMBERS, PRICE_NUMBERS, JSON_SCALARS) for k in PRICE_FIELDS}
    fields["litellm_provider"] = st.sampled_from(["openai", "ollama", "", " ", "a\nb", "LM_Studio"]) | JSON_SCALARS
    fields["start_date"] = st.sampled_from(["2024-01-01", "2024-02-30", "2999-12-31", "24-1-1", ""]) | JSON_SCALARS
    fields["match_pattern"] = st.sampled_from(["gpt-.*", "(", "a{99999999999}", "(a*)*b", ".*"]) | st.text(max_size=8)
    entry = st.fixed_dictionaries({}, optional=fields)
    return st.one_of(entry, entry, entry, st.lists(entry, max_size=3), json_values(4))


def price_documents() -> st.SearchStrategy[Any]:
    names = st.sampled_from(["gpt", "openai/gpt", "llama3", "_meta", "sample_spec"]) | st.text(max_size=10)
    return st.one_of(st.dictionaries(names, price_entries(), max_size=4), st.dictionaries(names, price_entries(), max_size=4), json_values(6))


def check_accepted_prices(table: PriceTable, doc: Any) -> None:
    """Every lookup answers a finite cost or None (JSON exports cannot hold
    an infinite one)."""
    names = [n for n in doc if isinstance(n, str)] if isinstance(doc, dict) else []
    usage = Usage(input_uncached=10**6, cache_read=10**5, cache_write=100, cache_write_1h=50, output=10**6, reasoning=10)
    for model in [*names, "gpt"]:
        for provider in ("openai", "ollama", "lmstudio"):
            if not model:
                continue
            for at in (None, "2024-06-01", 0.0):
                cost = table.cost(provider, model, usage, at, latency_ms=1e9)
                assert cost is None or (math.isfinite(cost) and cost >= 0), cost


@fuzz(150)
@given(doc=price_documents())
def test_price_table_load_raises_only_config_error(doc: Any, scratch: Path) -> None:
    path = scratch / "prices.json"
    path.write_text(json.dumps(doc, allow_nan=True))
    try:
        table = PriceTable.load(path)
    except ConfigError as e:
        assert str(path) in str(e)
        return
    check_accepted_prices(table, doc)


@pytest.mark.parametrize("path", corpus("prices", ".json"), ids=lambda p: p.name)
def test_prices_corpus(path: Path, tmp_path: Path) -> None:
    real = materialize(path, tmp_path)
    try:
        table = PriceTable.load(real)
    except ConfigError:
        return
    try:
        doc = json.loads(corpus_bytes(path))
    except (ValueError, RecursionError):
        doc = {}
    check_accepted_prices(table, doc)


# ---- token usage ------------------------------------------------------------------------------

USAGE_KEYS = (
    "usage", "prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details",
    "cached_tokens", "cache_write_tokens", "completion_tokens_details", "reasoning_tokens",
    "input_tokens", "output_tokens", "input_tokens_details", "output_tokens_details", "thinking_tokens",
    "cache_read_input_tokens", "cache_creation_input_tokens", "cache_creation", "ephemeral_5m_input_tokens",
    "ephemeral_1h_input_tokens", "eval_count", "prompt_eval_count", "eval_duration", "done", "timings",
    "prompt_n", "predicted_n", "cache_n", "predicted_per_second", "stats", "tokens_per_second", "type", "message",
)  # fmt: skip
COUNTS = st.one_of(
    st.integers(min_value=0, max_value=5000),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(),
    st.sampled_from([2**53, 2**53 + 1, 2**63, 1e300, -1, 0.5, True, "12", None]),
)


def usage_values() -> st.SearchStrategy[Any]:
    leaf = st.one_of(COUNTS, COUNTS, st.sampled_from(["message_start", "message_delta", "x"]), JSON_SCALARS)
    return st.recursive(
        leaf,
        lambda inner: st.dictionaries(st.sampled_from(USAGE_KEYS), inner, max_size=6)
        | st.lists(inner, max_size=3),
        max_leaves=14,
    )


def as_objects(v: Any) -> Any:
    """Dicts as attribute objects, the way SDK objects are read."""
    if isinstance(v, dict):
        return SimpleNamespace(**{k: as_objects(x) for k, x in v.items()})
    if isinstance(v, list):
        return [as_objects(x) for x in v]
    return v


def check_usage(u: Usage) -> None:
    assert isinstance(u, Usage)
    for k in ("input_uncached", "cache_read", "cache_write", "output", "reasoning", "cache_write_1h"):
        v = getattr(u, k)
        assert isinstance(v, int) and 0 <= v <= MAX_TOKENS
    assert u.output_tokens_per_s is None or math.isfinite(u.output_tokens_per_s)


@fuzz(250)
@given(
    value=usage_values(),
    objects=st.booleans(),
    provider=st.none() | st.sampled_from(["openai", "anthropic", "vllm", ""]) | st.integers() | st.text(max_size=5),
)
def test_normalize_usage_gives_usage_or_invalid_value(value: Any, objects: bool, provider: Any) -> None:
    try:
        u = normalize_usage(as_objects(value) if objects else value, provider)
    except InvalidValueError:
        return
    check_usage(u)


@fuzz(200)
@given(chunks=st.lists(usage_values(), max_size=6), objects=st.booleans())
def test_usage_from_stream_gives_usage_or_invalid_value(chunks: list[Any], objects: bool) -> None:
    try:
        u = usage_from_stream((as_objects(c) if objects else c) for c in chunks)
    except InvalidValueError:
        return
    check_usage(u)


@pytest.mark.parametrize("path", corpus("usage", ".json"), ids=lambda p: p.name)
def test_usage_corpus(path: Path) -> None:
    case = json.loads(path.read_text())
    for objects in (False, True):
        try:
            if "chunks" in case:
                u = usage_from_stream(as_objects(c) if objects else c for c in case["chunks"])
            else:
                u = normalize_usage(as_objects(case["usage"]) if objects else case["usage"], case.get("provider"))
        except InvalidValueError:
            continue
        check_usage(u)


# ---- backend replies ----------------------------------------------------------------------------

#: What a kind reads, by path (without the query): the real payload it is
#: fuzzed from.  Paths not listed get a 404.
def _fx(*parts: str) -> Any:
    base = SHARED_FIXTURES if parts[0] == "comfyui" else FIXTURES
    raw = base.joinpath(*parts).read_bytes()
    return raw.decode() if parts[-1].endswith(".txt") else json.loads(raw)


ENDPOINTS: dict[str, dict[str, Any]] = {
    "comfyui": {
        "/api/prompt": _fx("comfyui", "prompt_get.json"),
        "/api/queue": _fx("comfyui", "queue_busy.json"),
        "/api/system_stats": _fx("comfyui", "system_stats.json"),
        "/api/history": _fx("comfyui", "history_prompt_id.json"),
        "/api/jobs": {"jobs": [{"id": "a", "status": "completed", "execution_start_time": 1, "execution_end_time": 2}]},
    },
    "a1111": {
        "/internal/ping": _fx("a1111", "internal_ping.json"),
        "/internal/pending-tasks": _fx("a1111", "internal_pending-tasks_busy.json"),
        "/sdapi/v1/progress": _fx("a1111", "sdapi_v1_progress_busy.json"),
        "/sdapi/v1/memory": _fx("a1111", "sdapi_v1_memory.json"),
        "/sdapi/v1/options": _fx("a1111", "sdapi_v1_options.json"),
    },
    "ollama": {
        "/api/version": _fx("ollama", "api_version.json"),
        "/api/ps": _fx("ollama", "api_ps.json"),
    },
    "openai": {
        "/v1/models": _fx("openai", "v1_models.json"),
        "/metrics": _fx("vllm", "metrics.txt"),
        "/version": _fx("vllm", "version.json"),
        "/api/v0/models": _fx("lmstudio", "api_v0_models.json"),
        "/props": _fx("llamacpp", "props.json"),
        "/health": _fx("llamacpp", "health_ok.json"),
    },
}

#: Error types a hostile reply may be recorded as.  bad_json for a body that
#: is not what the endpoint promises, connection_reset for a cut one, the
#: status's own for a non-200 status, oom for A1111's OOM counter.
STATUS_ERRORS = {"http_4xx", "http_5xx", "server_busy", "unexpected_status"}
ALLOWED_ERRORS = {"bad_json", "connection_reset", "oom", *STATUS_ERRORS}

#: Exception types of bugs this file has found and that are still open,
#: with what each is (the fuzz tests note them instead of failing, so that
#: they keep looking for new ones; test_backend_corpus replays the cases
#: that found them, strict-xfail while ``open_bug`` is set).  All the ones
#: found so far are fixed: the corpus keeps each case, with the bug it found.
KNOWN_BUGS: dict[str, str] = {}


class _CatchAll(dict[tuple[str, str], Any]):
    """Routes every request to one handler (``LoopbackServer`` looks routes up with ``.get``)."""

    def __init__(self, handler: Callable[[BaseHTTPRequestHandler], Reply]) -> None:
        super().__init__()
        self.handler = handler

    def get(self, key: Any, default: Any = None) -> Any:  # type: ignore[override]
        return self.handler


class Replies:
    """A loopback server whose replies the current example sets: by path,
    or one reply for every path."""

    def __init__(self) -> None:
        self.by_path: dict[str, Reply] = {}
        self.every: Reply | None = None
        #: (path, reply) served at that path after its first request.
        self.then: tuple[str, Reply] | None = None
        self.server = LoopbackServer()
        self.server.routes = _CatchAll(self._route)

    def _route(self, handler: BaseHTTPRequestHandler) -> Reply:
        if self.every is not None:
            return self.every
        path = handler.path.split("?")[0]
        reply = self.by_path.get(path, Reply(404, {"error": "not found"}))
        if self.then is not None and self.then[0] == path:
            self.by_path[path] = self.then[1]  # from the second request on
            self.then = None
        return reply


@pytest.fixture(scope="module")
def replies() -> Iterator[Replies]:
    r = Replies()
    yield r
    r.server.close()


@pytest.fixture(scope="module")
def engine() -> Iterator[_core.Monitor]:
    m = _core.Monitor(manual_clock=True, start_time=T0, max_services=256)
    yield m
    m.close()


_service_counter = iter(range(10**9))


def drive(kind: str, url: str, engine: _core.Monitor) -> tuple[Counter[str], str | None]:
    """probe, detect, collect (and collect again) as the worker does: only
    ProbeError may escape.  Returns the error types recorded on a fresh
    service and the known bug that cut the run short, if one did."""
    name = f"{kind}-{next(_service_counter) % 40}"
    svc = engine.service(name)
    before = Counter(dict(engine.stats(name, "5m").error_counts))
    backend = backend_class(kind)(BackendConfig(name, kind, url, read_timeout_s=5.0), svc)
    known = None
    for step in ("probe", "detect", "collect", "collect"):
        try:
            getattr(backend, step)()
        except ProbeError as e:
            assert e.error_type in ALLOWED_ERRORS, f"{step}: {e.error_type}: {e}"
            if step == "probe":
                break
        except Exception as e:
            if type(e).__name__ not in KNOWN_BUGS:
                raise
            known = f"{kind} {step}: {type(e).__name__}: {str(e)[:120]} -- {KNOWN_BUGS[type(e).__name__]}"
            note(f"known bug: {known}")
            event(f"known bug: {kind} {type(e).__name__}")
            break
    engine.advance(1.0)
    after = Counter(dict(engine.stats(name, "5m").error_counts))
    return after - before, known


def wild_json() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**400), max_value=10**400),
        st.floats(), st.text(max_size=20), st.sampled_from(["\ud800", "🙂", "\u202e", "\x00", "a\nb"]),
    )  # fmt: skip
    return st.recursive(
        scalars, lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=12), c, max_size=5), max_leaves=25
    )


def _paths(v: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a node of ``v`` (lists cut to their first 4 items)."""
    yield at
    if isinstance(v, dict):
        for k, x in v.items():
            yield from _paths(x, (*at, k))
    elif isinstance(v, list):
        for i, x in enumerate(v[:4]):
            yield from _paths(x, (*at, i))


def _replaced(v: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(v, dict):
        return {k: _replaced(x, rest, new) if k == head else x for k, x in v.items()}
    return [_replaced(x, rest, new) if i == head else x for i, x in enumerate(v)]


HOSTILE_LEAVES = st.sampled_from(
    [-1, 10**20, 10**400, 1e300, -1e300, 2**64, 0.5, math.nan, math.inf, "1", True, None, [], {}, [[1]], "\ud800"]
)


def mutated(template: Any, data: st.DataObject) -> Any:
    """``template`` with a few nodes (leaves, now and then a subtree)
    replaced by hostile values, so the reply gets past the shape checks."""
    paths = list(_paths(template))
    changes = data.draw(
        st.lists(st.tuples(st.integers(0, len(paths) - 1), HOSTILE_LEAVES | wild_json()), min_size=1, max_size=4),
        label="changes",
    )
    for i, new in changes:
        try:
            template = _replaced(template, paths[i], new)
        except (TypeError, IndexError):  # the path went away with an earlier change
            pass
    return template


def encode(value: Any) -> bytes:
    """JSON as a server might send it: NaN/Infinity tokens, and lone
    surrogates as \\u escapes."""
    return json.dumps(value, allow_nan=True).encode()


def deep(depth: int, opener: str = "[") -> bytes:
    closer = {"[": "]", "{": "}"}[opener]
    if opener == "{":
        return ('{"a":' * depth + "1" + closer * depth).encode()
    return (opener * depth + closer * depth).encode()


def hostile_bodies() -> st.SearchStrategy[bytes]:
    return st.one_of(
        wild_json().map(encode),
        st.binary(max_size=64),
        st.sampled_from(
            [
                deep(100_000), deep(5_000, "{"), deep(990), b"[" * 100, b"{", b"", b"null", b"NaN", b"-Infinity",
                b"1" * 5000, b'"' + b"\xff" * 10 + b'"', b'{"a": 1}' * 3, b"\xef\xbb\xbf{}", b'"\\ud800"',
                b"[" + b"1," * 200_000 + b"1]",
            ]  # fmt: skip
        ),
    )


@pytest.mark.parametrize("kind", ["comfyui", "a1111", "ollama", "openai"])
@fuzz(30, shrink=False)
@given(body=hostile_bodies(), status=st.sampled_from([200, 200, 200, 200, 500, 404, 401, 503, 302]))
def test_every_path_answers_hostile_json(
    kind: str, body: bytes, status: int, replies: Replies, engine: _core.Monitor
) -> None:
    replies.every = Reply(status, body)
    try:
        recorded, known = drive(kind, replies.server.url, engine)
    finally:
        replies.every = None
    assert set(recorded) <= ALLOWED_ERRORS, recorded
    if known is None and status == 200 and set(recorded) - {"oom"}:
        # A 200 reply can only be wrong in its body.
        assert set(recorded) - {"oom"} <= {"bad_json"}, recorded


@pytest.mark.parametrize("kind", ["comfyui", "a1111", "ollama", "openai"])
@fuzz(30, shrink=False)
@given(data=st.data())
def test_near_valid_replies_with_hostile_values(kind: str, data: st.DataObject, replies: Replies, engine: _core.Monitor) -> None:
    by_path: dict[str, Reply] = {}
    for path, template in ENDPOINTS[kind].items():
        if isinstance(template, str):  # Prometheus text
            lines = template.splitlines()
            value = data.draw(
                st.sampled_from(["-1", "1e300", "NaN", "+Inf", "5000000000", "0.5", "x", "1e19", "-1e300"]), label=path
            )
            at = data.draw(st.integers(0, max(len(lines) - 1, 0)), label="line")
            if lines and not lines[at].startswith("#"):
                lines[at] = lines[at].rsplit(" ", 1)[0] + " " + value
            by_path[path] = Reply(200, "\n".join(lines) + "\n", headers={"Content-Type": "text/plain"})
        else:
            by_path[path] = Reply(200, encode(mutated(template, data)))
    replies.by_path = by_path
    try:
        recorded, _ = drive(kind, replies.server.url, engine)
    finally:
        replies.by_path = {}
    assert set(recorded) <= {"bad_json", "oom"}, recorded


@pytest.mark.parametrize("kind", ["comfyui", "a1111", "ollama", "openai"])
@fuzz(10, shrink=False)
@given(cut=st.floats(0.0, 0.99))
def test_truncated_replies_are_connection_reset(kind: str, cut: float, replies: Replies, engine: _core.Monitor) -> None:
    replies.by_path = {
        path: Reply(200, body if isinstance(body, str) else encode(body), truncate_to=int(len(encode(body)) * cut))
        for path, body in ENDPOINTS[kind].items()
    }
    try:
        recorded, known = drive(kind, replies.server.url, engine)
    finally:
        replies.by_path = {}
    assert known is None
    assert set(recorded) == {"connection_reset"}, recorded


def backend_cases() -> list[Any]:
    cases = json.loads((CORPUS / "backend_replies.json").read_text())
    out = []
    for case in cases:
        marks = [pytest.mark.xfail(strict=True, reason=case["bug"])] if case.get("open_bug") else []
        out.append(pytest.param(case, id=case["id"], marks=marks))
    return out


def case_body(case: dict[str, Any]) -> bytes:
    if "parts" in case:
        return "".join(text * n for text, n in case["parts"]).encode("utf-8")
    if "text" in case:
        return str(case["text"]).encode("utf-8")
    return encode(case["json"])


@pytest.mark.parametrize("case", backend_cases())
def test_backend_corpus(case: dict[str, Any], replies: Replies, engine: _core.Monitor) -> None:
    """Replies that once broke a kind: the contract holds exactly (no
    known-bug tolerance here)."""
    body = case_body(case)
    reply = Reply(case.get("status", 200), body, truncate_to=case.get("truncate_to"), headers=case.get("headers", {}))
    if case.get("path"):
        base = {
            p: Reply(200, b if isinstance(b, str) else encode(b), headers={"Content-Type": "text/plain"} if isinstance(b, str) else {})
            for p, b in ENDPOINTS[case["kind"]].items()
        }
        for path, other in case.get("other_paths", {}).items():  # e.g. no /api/jobs, so /history is read
            base[path] = Reply(other["status"], encode(other.get("json")))
        # after_first: detection sees the real reply, collect the hostile one.
        replies.by_path = {**base, case["path"]: reply}
        if case.get("after_first"):
            replies.by_path[case["path"]] = base[case["path"]]
            replies.then = (case["path"], reply)
    else:
        replies.every = reply
    saved = dict(KNOWN_BUGS)
    KNOWN_BUGS.clear()
    try:
        recorded, _ = drive(case["kind"], replies.server.url, engine)
    finally:
        KNOWN_BUGS.update(saved)
        replies.every, replies.by_path, replies.then = None, {}, None
    assert set(recorded) <= set(case["expect"]), recorded


# ---- names through every export -----------------------------------------------------------------

SPECIALS = st.sampled_from(['"', "'", "\n", "\r", ",", ";", "=", "%", "\\", "\t", "\x00", "\x1b", "🙂", "é", "\u202e", " ", "#", "{", "}"])
#: Text without lone surrogates (they cannot cross into Rust: see the test below).
NAMEISH = st.text(alphabet=st.one_of(SPECIALS, st.characters(exclude_categories=("Cs",))), min_size=1, max_size=20)


def read_error_cell(cell: str) -> dict[str, int]:
    """``type=n;type=n`` with %, ;, = and CR percent-encoded inside names."""
    out: dict[str, int] = {}
    for item in cell.split(";") if cell else []:
        name, n = item.rsplit("=", 1)
        out[name.replace("%0D", "\r").replace("%3D", "=").replace("%3B", ";").replace("%25", "%")] = int(n)
    return out


def openmetrics_samples(text: str, strict: bool) -> list[Any]:
    if strict:
        from prometheus_client.openmetrics.parser import text_string_to_metric_families
    else:
        from prometheus_client.parser import text_string_to_metric_families
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


@fuzz(60)
@given(
    names=st.lists(NAMEISH.filter(lambda n: not engine_name_problem(n)), min_size=1, max_size=3, unique=True),
    errors=st.lists(NAMEISH | st.just(""), min_size=1, max_size=4, unique=True),
)
def test_names_and_error_types_survive_every_export(names: list[str], errors: list[str], scratch: Path) -> None:
    m = Monitor(manual_clock=True, start_time=T0)
    try:
        want: dict[str, Counter[str]] = {}
        for i, name in enumerate(names):
            svc = m.service(name)
            svc.record(5.0)
            want[name] = Counter()
            for j, err in enumerate(errors):
                for _ in range(1 + (i + j) % 3):
                    svc.record(7.0, ok=False, error=err)
                    want[name][err] += 1
        m.advance(61.0)
        csv_path = m.export(scratch / "names.csv", "csv", window="1h")
        with open(csv_path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        got: dict[str, Counter[str]] = {}
        for row in rows:
            got.setdefault(row["service"], Counter()).update(read_error_cell(row["error_types"]))
        assert got == want
        doc = json.loads(m.export(scratch / "names.json", "json", window="1h").read_text(encoding="utf-8"))
        assert {s["service"]: Counter(s["summary"]["error_counts"]) for s in doc["services"]} == want
        for strict in (True, False):
            samples = openmetrics_samples(m.openmetrics(openmetrics=strict), strict)
            seen: dict[str, Counter[str]] = {n: Counter() for n in names}
            for s in samples:
                if s.name == "mdm_request_errors_total":
                    seen[s.labels["service"]][s.labels["error_type"]] += int(s.value)
            assert seen == want
    finally:
        m.close()


@fuzz(40)
@given(
    models=st.lists(NAMEISH.filter(str.isprintable), min_size=1, max_size=3, unique=True),
    provider=NAMEISH.filter(lambda p: p.isprintable() and p.strip() != ""),
)
def test_llm_names_survive_the_llm_export_and_openmetrics(models: list[str], provider: str, scratch: Path) -> None:
    m = Monitor(manual_clock=True, start_time=T0)
    try:
        for model in models:
            m.llm.record(provider, model, {"prompt_tokens": 3, "completion_tokens": 2}, 12.0)
        prov = normalize_provider(provider)
        with open(m.llm.export(scratch / "llm.csv", "csv", "1h"), newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        assert sorted((r["provider"], r["model"]) for r in rows) == sorted((prov, mo) for mo in models)
        doc = json.loads((m.llm.export(scratch / "llm.json", "json", "1h")).read_text(encoding="utf-8"))
        assert sorted((r["provider"], r["model"]) for r in doc["rows"]) == sorted((prov, mo) for mo in models)
        for strict in (True, False):
            samples = openmetrics_samples(m.openmetrics(openmetrics=strict), strict)
            seen = {(s.labels["provider"], s.labels["model"]) for s in samples if s.name.startswith("mdm_llm_requests")}
            assert seen == {(prov, mo) for mo in models}
    finally:
        m.close()


@pytest.mark.parametrize("bad", ["a\ud800", "\udfff", "x\ud83d"])
def test_lone_surrogates_are_refused_before_anything_is_recorded(bad: str) -> None:
    """A lone surrogate cannot be UTF-8: the engine refuses it as a service
    name (InvalidNameError) or error type (InvalidValueError) with a message
    showing the value and what was expected, the LLM tracker as provider or
    model with InvalidValueError, and nothing is recorded."""
    m = Monitor(manual_clock=True, start_time=T0)
    try:
        for call in (lambda: m.service(bad), lambda: m.stats(bad), lambda: m.series_stats(bad)):
            with pytest.raises(InvalidNameError) as name_error:
                call()
            assert repr(bad) in str(name_error.value) and "expected 1 to 64 printable characters" in str(name_error.value)
        svc = m.service("ok")
        with pytest.raises(InvalidValueError) as type_error:
            svc.record(1.0, ok=False, error=bad)
        assert repr(bad) in str(type_error.value) and "nothing was recorded" in str(type_error.value)
        with pytest.raises(InvalidValueError):
            m.llm.record(bad, "gpt", None, 1.0)
        with pytest.raises(InvalidValueError):
            m.llm.record("openai", bad, None, 1.0)
        m.advance(2.0)
        assert m.services() == ["ok"]
        assert m.stats("ok", "5m").count == 0
        assert m.llm.stats("1h") == []
        m.openmetrics()
    finally:
        m.close()


@pytest.mark.parametrize("name", ["a\tb", "a\nb", "\x00", "a\u2028b", "a\xa0b", "x" * 65, ""])
def test_unprintable_service_names_are_refused_by_the_engine_and_the_config(name: str) -> None:
    m = _core.Monitor()
    try:
        with pytest.raises(InvalidNameError):
            m.service(name)
    finally:
        m.close()
    with pytest.raises(ConfigError):
        parse_config({"backend": [{"name": name, "kind": "comfyui", "url": "http://127.0.0.1:8188"}]})


@pytest.mark.parametrize("error", ["\r", "a\rb", "\r\n", "x\r;=%"])
def test_a_bare_carriage_return_in_an_error_type_keeps_its_csv_row(error: str, tmp_path: Path) -> None:
    """csv quotes a field holding "\n" (the line terminator) but not a bare
    "\r", which readers end the row at: the cell percent-encodes it."""
    m = Monitor(manual_clock=True, start_time=T0)
    try:
        m.service("svc").record(3.0, ok=False, error=error)
        m.advance(61.0)
        with open(m.export(tmp_path / "cr.csv", "csv", window="1h"), newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    finally:
        m.close()
    assert [(r["service"], read_error_cell(r["error_types"])) for r in rows] == [("svc", {error: 1})]


@pytest.mark.parametrize("who", ["~nosuchuser-mdm/x", "~0"])
def test_a_home_of_no_such_user_is_a_config_error(who: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Path.expanduser raises RuntimeError for "~name" of an unknown user."""
    with pytest.raises(ConfigError):
        parse_rules(who + "/rules.toml")
    with pytest.raises(ConfigError):
        PriceTable.load(who + "/prices.json")
    monkeypatch.setenv("MOVIE_DIRECTOR_METRICS_CONFIG", who + "/backends.toml")
    with pytest.raises(ConfigError):
        load_config()


def test_a_nul_in_a_rules_file_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        parse_rules("rules\x00.toml")


def test_corpus_is_replayed() -> None:
    """Every corpus directory has inputs (a guard against a path typo)."""
    for kind in ("config", "rules", "prices", "usage"):
        assert corpus(kind, ".toml", ".json"), kind
    assert len(backend_cases()) > 5
