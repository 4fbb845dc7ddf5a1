"""Token usage of one LLM request, normalised across providers.

``normalize_usage(x)`` turns what a backend reports into a :class:`Usage`;
``usage_from_stream(chunks)`` does the same for a streamed response.  Both
accept plain dicts (parsed JSON) and SDK objects (``openai`` /
``anthropic`` pydantic models, read by attribute, never dumped).

**The mapping.**  Every kind of token is counted once, so the input kinds add
up to what was billed as input:

==============  ==============================================  ===============================================
``Usage``       OpenAI-compatible ``usage`` (OpenAI, vLLM, LM   Anthropic ``usage``
                Studio, llama.cpp ``/v1``, Ollama ``/v1``)
==============  ==============================================  ===============================================
input_uncached  ``prompt_tokens - cached - cache_write``        ``input_tokens`` (it *excludes* the cache)
                (``prompt_tokens`` *includes* the cache)
cache_read      ``prompt_tokens_details.cached_tokens``         ``cache_read_input_tokens``
                (llama.cpp: else ``timings.cache_n``)
cache_write     ``prompt_tokens_details.cache_write_tokens``    ``cache_creation_input_tokens``, else the sum of
                                                                ``cache_creation.ephemeral_5m/1h_input_tokens``
cache_write_1h  0                                               ``cache_creation.ephemeral_1h_input_tokens``
output          ``completion_tokens``                           ``output_tokens``
reasoning       ``completion_tokens_details.reasoning_tokens``  ``output_tokens_details.thinking_tokens``
==============  ==============================================  ===============================================

The OpenAI Responses API (``input_tokens`` + ``input_tokens_details``) has
OpenAI semantics: ``input_tokens`` includes ``cached_tokens``.

Native local backends:

* **Ollama** ``/api/chat``/``/api/generate`` final object (``done: true``):
  ``prompt_eval_count`` -> input_uncached, ``eval_count`` -> output,
  output tokens/s = ``eval_count / eval_duration * 1e9`` (durations are in
  nanoseconds).  Ollama omits ``prompt_eval_count`` when the whole prompt
  came from its cache; that gives 0 input tokens and a note saying so (the
  cached size is not reported, so it is not guessed).
* **llama.cpp** ``timings``: ``prompt_n`` -> input_uncached, ``cache_n``
  (newer builds) -> cache_read, ``predicted_n`` -> output, output tokens/s =
  ``predicted_n / predicted_ms * 1e3``, so that the generation time the
  tracker rebuilds (output / rate) is ``predicted_ms`` itself.  Not
  ``predicted_per_second``: llama-server computes it as ``(predicted_n - 1)
  / predicted_ms`` (the first token comes free with the prompt's logits),
  and output / that rate overstates the generation time by ``n / (n - 1)``
  (x2 for two tokens).  ``predicted_n / predicted_ms`` is also the ratio of
  the server's own counters ``tokens_predicted_total /
  tokens_predicted_seconds_total``.  A single token has no generation phase
  (no rate); without ``predicted_ms`` (older builds) ``predicted_per_second``
  is taken as it is.  Next to an OpenAI ``usage`` the tokens come from
  ``usage`` and only the rate from ``timings``.
* **LM Studio** ``/api/v0``: OpenAI ``usage`` plus ``stats.tokens_per_second``.

``reasoning`` is a subset of ``output`` and ``cache_write_1h`` of
``cache_write``; ``total_input`` is the sum of the three input kinds.

**Unknown usage.**  A stream that ended without usage (interrupted, or
``stream_options.include_usage`` not sent) gives ``Usage(known=False)``:
its counts are not measurements and the tracker never adds them up as zeros.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidValueError

__all__ = ["MAX_TOKENS", "UNKNOWN_USAGE", "StreamUsage", "Usage", "normalize_usage", "usage_from_stream"]

#: Largest token count accepted (2**53, exact as a JSON number): far beyond
#: any request, and within SQLite's INTEGER, where the rows are stored.
MAX_TOKENS = 2**53


@dataclass(frozen=True)
class Usage:
    """Tokens of one request by kind (see the module doc for the mapping).

    Counts are non-negative ints; ``reasoning <= output`` and
    ``cache_write_1h <= cache_write``.  ``known=False`` means the backend
    did not say: the counts are then placeholders, not zeros.
    """

    input_uncached: int = 0
    cache_read: int = 0
    cache_write: int = 0
    output: int = 0
    reasoning: int = 0
    cache_write_1h: int = 0
    output_tokens_per_s: float | None = None
    known: bool = True
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        for name in ("input_uncached", "cache_read", "cache_write", "output", "reasoning", "cache_write_1h"):
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_TOKENS):
                raise InvalidValueError(f"Usage.{name}={v!r} is invalid: expected an int from 0 to 2**53")
        if self.reasoning > self.output:
            raise InvalidValueError(
                f"Usage.reasoning={self.reasoning} exceeds output={self.output}: reasoning tokens are part of the output"
            )
        if self.cache_write_1h > self.cache_write:
            raise InvalidValueError(
                f"Usage.cache_write_1h={self.cache_write_1h} exceeds cache_write={self.cache_write}: "
                "1-hour writes are part of the cache writes"
            )
        tps = self.output_tokens_per_s
        if tps is not None and not (_is_number(tps) and math.isfinite(tps) and tps >= 0):
            raise InvalidValueError(f"Usage.output_tokens_per_s={tps!r} is invalid: expected None or a finite number >= 0")

    @property
    def total_input(self) -> int:
        """Every input token, cached or not: what the model read."""
        return self.input_uncached + self.cache_read + self.cache_write

    @property
    def total(self) -> int:
        """Input and output tokens together."""
        return self.total_input + self.output


#: What a request without usage information reports.
UNKNOWN_USAGE = Usage(known=False, notes=("usage unknown",))


# --- Reading dicts and SDK objects alike -------------------------------------


def _get(obj: Any, key: str) -> Any:
    """``obj[key]`` for mappings, ``obj.key`` for objects; None when absent."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _present(obj: Any, key: str) -> bool:
    """Whether ``key`` is there at all, even as null."""
    if isinstance(obj, Mapping):
        return key in obj
    fields = getattr(type(obj), "model_fields", None)
    return key in fields if isinstance(fields, Mapping) else hasattr(obj, key)


def _is_number(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _finite(v: object) -> bool:
    """A finite number (an int past the float range is not)."""
    try:
        return _is_number(v) and math.isfinite(v)  # type: ignore[arg-type]
    except OverflowError:
        return False


def _count(obj: Any, key: str, where: str) -> int | None:
    """A token count field: None when absent, else a non-negative int."""
    v = _get(obj, key)
    if v is None:
        return None
    if _finite(v) and 0 <= v <= MAX_TOKENS and float(v).is_integer():
        return int(v)
    raise InvalidValueError(f"{where}.{key}={v!r} is not a token count: expected an integer from 0 to 2**53")


def _rate(obj: Any, key: str) -> float | None:
    v = _get(obj, key)
    if _finite(v) and v >= 0:
        return float(v)
    return None


def _has(obj: Any, *keys: str) -> bool:
    return any(_get(obj, k) is not None for k in keys)


# --- Provider mappers ----------------------------------------------------------


def _openai(u: Any, extra: Any = None, tps: float | None = None) -> Usage:
    """Chat Completions usage: ``prompt_tokens`` includes the cache."""
    prompt = _count(u, "prompt_tokens", "usage") or 0
    details = _get(u, "prompt_tokens_details")
    cached = _count(details, "cached_tokens", "usage.prompt_tokens_details")
    if cached is None and extra is not None:  # llama.cpp reports reuse in timings
        cached = _count(extra, "cache_n", "timings")
    written = _count(details, "cache_write_tokens", "usage.prompt_tokens_details") or 0
    return _with_cache_inside(prompt, cached or 0, written, u, "completion_tokens", "completion_tokens_details", tps)


def _openai_responses(u: Any) -> Usage:
    """Responses API usage: ``input_tokens`` includes ``cached_tokens``."""
    prompt = _count(u, "input_tokens", "usage") or 0
    details = _get(u, "input_tokens_details")
    cached = _count(details, "cached_tokens", "usage.input_tokens_details") or 0
    return _with_cache_inside(prompt, cached, 0, u, "output_tokens", "output_tokens_details", None)


def _with_cache_inside(
    prompt: int, cached: int, written: int, u: Any, out_key: str, out_details_key: str, tps: float | None
) -> Usage:
    notes: list[str] = []
    if cached + written > prompt:
        notes.append(f"cached+written tokens ({cached}+{written}) exceed the prompt ({prompt}); input_uncached set to 0")
    output = _count(u, out_key, "usage") or 0
    reasoning = _count(_get(u, out_details_key), "reasoning_tokens", f"usage.{out_details_key}") or 0
    if reasoning > output:
        notes.append(f"reasoning tokens ({reasoning}) exceed the output ({output}); capped")
        reasoning = output
    return Usage(
        input_uncached=max(prompt - cached - written, 0),
        cache_read=cached,
        cache_write=written,
        output=output,
        reasoning=reasoning,
        output_tokens_per_s=tps,
        notes=tuple(notes),
    )


def _anthropic(u: Any) -> Usage:
    """Messages API usage: ``input_tokens`` excludes cache reads and writes."""
    creation = _get(u, "cache_creation")
    w5m = _count(creation, "ephemeral_5m_input_tokens", "usage.cache_creation") or 0
    w1h = _count(creation, "ephemeral_1h_input_tokens", "usage.cache_creation") or 0
    written = _count(u, "cache_creation_input_tokens", "usage")
    notes: list[str] = []
    if written is None:
        written = w5m + w1h
    elif w1h > written:
        notes.append(f"ephemeral_1h_input_tokens ({w1h}) exceed cache_creation_input_tokens ({written}); capped")
        w1h = written
    output = _count(u, "output_tokens", "usage") or 0
    thinking = _count(_get(u, "output_tokens_details"), "thinking_tokens", "usage.output_tokens_details") or 0
    return Usage(
        input_uncached=_count(u, "input_tokens", "usage") or 0,
        cache_read=_count(u, "cache_read_input_tokens", "usage") or 0,
        cache_write=written,
        cache_write_1h=w1h,
        output=output,
        reasoning=min(thinking, output),
        notes=tuple(notes),
    )


def _ollama(d: Any) -> Usage:
    """Ollama's native final object; durations in nanoseconds."""
    notes: list[str] = []
    prompt = _count(d, "prompt_eval_count", "ollama")
    if prompt is None:
        notes.append("prompt_eval_count omitted: the prompt came from Ollama's cache (size not reported)")
    output = _count(d, "eval_count", "ollama") or 0
    eval_ns = _rate(d, "eval_duration")
    tps = output / eval_ns * 1e9 if eval_ns else None
    if tps is not None and not math.isfinite(tps):  # a duration of a few ns or less: no rate
        tps = None
    return Usage(input_uncached=prompt or 0, output=output, output_tokens_per_s=tps, notes=tuple(notes))


def _llamacpp(t: Any) -> Usage:
    """llama.cpp's native ``timings`` (prompt_n excludes reused cache_n)."""
    return Usage(
        input_uncached=_count(t, "prompt_n", "timings") or 0,
        cache_read=_count(t, "cache_n", "timings") or 0,
        output=_count(t, "predicted_n", "timings") or 0,
        output_tokens_per_s=_llamacpp_rate(t),
    )


def _llamacpp_rate(t: Any) -> float | None:
    """Output tokens/s of llama.cpp ``timings``: ``predicted_n /
    predicted_ms`` (see the module doc for why not ``predicted_per_second``);
    None for fewer than two tokens, whose time is the prompt's."""
    ms = _rate(t, "predicted_ms")
    if ms is None:
        return _rate(t, "predicted_per_second")  # a build without predicted_ms
    n = _get(t, "predicted_n")
    if not (_finite(n) and n >= 2 and ms > 0):
        return None
    tps = float(n) / ms * 1e3
    return tps if math.isfinite(tps) else None


_OPENAI_PROVIDERS = {"openai", "azure", "vllm", "lmstudio", "lm_studio", "llama.cpp", "llamacpp", "openrouter"}


def normalize_usage(usage: Any, provider: str | None = None) -> Usage:
    """A :class:`Usage` from what a backend reported (see the module doc).

    ``usage`` may be a ``usage`` object/dict, a whole response (OpenAI
    ``ChatCompletion``, Anthropic ``Message``, LM Studio with ``stats``,
    llama.cpp with ``timings``), Ollama's final object, a bare llama.cpp
    ``timings`` dict, a ``Usage`` (returned as is) or ``None`` (unknown).
    ``provider`` only settles the one ambiguous shape (``input_tokens``
    without cache fields reads the same either way).  Raises
    ``InvalidValueError`` for a shape with no token fields or a count that
    is not a non-negative integer.
    """
    if provider is not None and not isinstance(provider, str):
        raise InvalidValueError(f"provider={provider!r} is invalid: expected a provider name or None")
    if usage is None:
        return UNKNOWN_USAGE
    if isinstance(usage, Usage):
        return usage
    if isinstance(usage, (str, bytes, numbers.Number)):
        raise InvalidValueError(
            f"usage={usage!r} is not a usage report: expected a dict or SDK object with token fields"
        )
    inner = _get(usage, "usage")
    if inner is None and _present(usage, "usage"):
        return Usage(known=False, notes=("the response carried usage: null",))
    timings = _get(usage, "timings")
    stats = _get(usage, "stats")
    tps = _llamacpp_rate(timings) if timings is not None else _rate(stats, "tokens_per_second")
    if inner is not None:
        return _from_usage_fields(inner, provider, timings, tps)
    if _has(usage, "prompt_tokens", "input_tokens", "completion_tokens", "output_tokens"):
        return _from_usage_fields(usage, provider, timings, tps)
    if _has(usage, "eval_count", "prompt_eval_count", "eval_duration"):
        return _ollama(usage)
    if timings is not None:
        return _llamacpp(timings)
    if _has(usage, "prompt_n", "predicted_n"):
        return _llamacpp(usage)
    if _get(usage, "done") is True:  # Ollama final object with no counts at all
        return _ollama(usage)
    raise InvalidValueError(
        f"usage of type {type(usage).__name__} has no token fields: expected OpenAI (prompt_tokens/"
        "completion_tokens), Anthropic (input_tokens/output_tokens), Ollama (eval_count) or llama.cpp "
        f"(timings) fields; got {_keys(usage)}"
    )


def _from_usage_fields(u: Any, provider: str | None, timings: Any, tps: float | None) -> Usage:
    if _has(u, "prompt_tokens", "completion_tokens"):
        return _openai(u, timings, tps)
    if _has(u, "cache_read_input_tokens", "cache_creation_input_tokens", "cache_creation"):
        return _anthropic(u)  # only Anthropic reports the cache this way, whoever relays it
    if _has(u, "input_tokens_details", "total_tokens") or (
        provider is not None and provider.lower() in _OPENAI_PROVIDERS
    ):
        return _openai_responses(u)
    if _has(u, "input_tokens", "output_tokens"):
        return _anthropic(u)
    raise InvalidValueError(
        f"usage has no token fields: expected prompt_tokens/completion_tokens or input_tokens/output_tokens; "
        f"got {_keys(u)}"
    )


def _keys(obj: Any) -> list[str]:
    if isinstance(obj, Mapping):
        return sorted(str(k) for k in obj)
    fields = getattr(type(obj), "model_fields", None)
    if isinstance(fields, Mapping):
        return sorted(fields)
    return sorted(k for k in vars(obj) if not k.startswith("_")) if hasattr(obj, "__dict__") else []


# --- Streams ---------------------------------------------------------------------


class StreamUsage:
    """Accumulates usage chunk by chunk; :meth:`usage` gives the result.

    * OpenAI-style chunks: ``usage`` may sit on any chunk (the extra final
      chunk with ``choices: []``, a chunk with content, vLLM's ``choices:
      null``, or every chunk with ``continuous_usage_stats``); the last one
      seen wins.
    * Anthropic events: ``message_start.message.usage`` gives the input
      side; each ``message_delta.usage`` carries *cumulative* counts, so the
      latest value of each field replaces the earlier one (never summed).
    * Ollama native chunks: the ``done`` one carries the counts.
    * llama.cpp native chunks: the last ``timings`` wins.

    Holds only the latest usage-bearing chunk, so memory is constant.
    """

    __slots__ = ("_anthropic", "_last", "_provider")

    def __init__(self, provider: str | None = None) -> None:
        self._provider = provider
        self._last: Any = None
        self._anthropic: dict[str, Any] | None = None

    def add(self, chunk: Any) -> None:
        kind = _get(chunk, "type")
        if kind == "message_start":
            start = _get(_get(chunk, "message"), "usage")
            if start is not None:
                self._anthropic = _fields(start)
            return
        if kind == "message_delta":
            delta = _get(chunk, "usage")
            if delta is not None:
                merged = self._anthropic if self._anthropic is not None else {}
                # Cumulative counts: a later non-null value replaces the earlier one.
                merged.update({k: v for k, v in _fields(delta).items() if v is not None})
                self._anthropic = merged
            return
        if _get(chunk, "usage") is not None:
            self._last = chunk
        elif _has(chunk, "eval_count", "prompt_eval_count") or _get(chunk, "done") is True:
            self._last = chunk
        elif _get(chunk, "timings") is not None:
            self._last = chunk

    def usage(self) -> Usage:
        """The stream's usage, or ``Usage(known=False)`` when it carried none."""
        if self._anthropic is not None:
            return _anthropic(self._anthropic)
        if self._last is not None:
            return normalize_usage(self._last, self._provider)
        return Usage(known=False, notes=("stream ended without usage",))


_ANTHROPIC_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "cache_creation",
    "output_tokens_details",
)


def _fields(u: Any) -> dict[str, Any]:
    return {k: _get(u, k) for k in _ANTHROPIC_FIELDS}


def usage_from_stream(chunks: Iterable[Any], provider: str | None = None) -> Usage:
    """Consumes ``chunks`` and returns their usage (see :class:`StreamUsage`);
    ``known=False`` when the stream ended without any."""
    acc = StreamUsage(provider)
    for chunk in chunks:
        acc.add(chunk)
    return acc.usage()
