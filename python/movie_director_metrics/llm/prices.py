"""LLM prices in LiteLLM's field names, and the cost of a request.

The table is a JSON object keyed by model name, exactly as LiteLLM's
``model_prices_and_context_window.json``, so entries can be pasted from it.
Prices are USD per unit: per token (``3e-06`` is $3 per 1M tokens) or per
second.  The package ships a small dated subset (``llm/prices/default.json``,
its ``_source`` and ``_retrieved`` say where and when the values were
read); :meth:`PriceTable.load` lays the user's file over it.

Fields read (every other LiteLLM field is kept but ignored):

* ``input_cost_per_token``, ``output_cost_per_token``,
  ``cache_read_input_token_cost``, ``cache_creation_input_token_cost``
  (5-minute write), ``cache_creation_input_token_cost_above_1hr`` (1-hour
  write), ``output_cost_per_reasoning_token`` (when the provider prices
  reasoning apart; else reasoning is output).
* Long-context tiers: ``<field>_above_<N>k_tokens``.  When a request's total
  input passes N thousand tokens the *whole* request is billed at that tier
  (LiteLLM's rule); a field without a tier variant keeps its base price.
* ``litellm_provider``: the entry applies to that provider only.
* Extensions (after Langfuse): ``match_pattern``, a regex matched in full
  against the model name (or ``provider/model``); ``start_date``
  (``YYYY-MM-DD``, UTC): a key may hold a *list* of entries, and the one with
  the latest ``start_date`` on or before the request date applies.
* Runtime prices: ``input_cost_per_second`` (x latency, LiteLLM's field), or
  ``gpu_watts`` with ``energy_cost_per_kwh`` (watts x latency in kWh x price).

**Which entry.**  The user's file first, then the shipped one; in each, the
exact names ``model`` and ``provider/model``, then ``match_pattern``
entries.  Within a name, start dates pick the entry; a user entry that does
not apply yet (a future ``start_date``) leaves the shipped price in force
until then.

**Cost rules.**  ``None`` means "no price", never a guess: an unknown
model, a kind of token the entry has no price for (cache reads, 1-hour
cache writes), unknown usage on a per-token price, or a runtime price
without a latency.  Cache writes without a write price are billed as
ordinary input (providers list a write price only when writes cost extra).
Local providers (``ollama``, ``lmstudio``, ``llama.cpp``, and any provider
whose ``base_url`` is loopback, such as vLLM on localhost) cost 0 unless an
entry gives them a price.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import numbers
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import ConfigError, InvalidValueError
from ..net import is_loopback_url as is_loopback  # llm.is_loopback(base_url): part of this package's API
from ..paths import expand_user
from .usage import Usage

__all__ = ["LOCAL_PROVIDERS", "PriceEntry", "PriceTable", "is_loopback", "normalize_provider", "to_date"]

#: Providers that run on the user's machine: free unless priced.
LOCAL_PROVIDERS = frozenset({"ollama", "lmstudio", "llama.cpp"})

_ALIASES = {
    "lm_studio": "lmstudio",
    "lm-studio": "lmstudio",
    "llamacpp": "llama.cpp",
    "llama_cpp": "llama.cpp",
    "llama-cpp": "llama.cpp",
}

#: Per-token and per-second fields; each may have ``_above_<N>k_tokens`` tiers.
_RATE_FIELDS = (
    "input_cost_per_token",
    "output_cost_per_token",
    "output_cost_per_reasoning_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
    "cache_creation_input_token_cost_above_1hr",
)
_RUNTIME_FIELDS = ("input_cost_per_second", "gpu_watts", "energy_cost_per_kwh")
_TIER = re.compile(r"^(?P<base>.+)_above_(?P<k>[0-9]{1,9})k_tokens$")

#: Highest price accepted, in USD per unit (token, second, kWh) or watts:
#: far above any real one, and low enough that no cost, nor any sum of
#: costs, overflows to infinity (which JSON cannot hold).
MAX_PRICE = 1e6
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def normalize_provider(provider: str) -> str:
    """Lower-case provider name with the usual spellings merged
    (``lm_studio`` -> ``lmstudio``, ``llamacpp`` -> ``llama.cpp``)."""
    if not isinstance(provider, str) or not provider.strip() or not provider.isprintable():
        # Printable: the name becomes part of an engine service name.
        raise InvalidValueError(
            f"provider={provider!r} is invalid: expected a non-empty printable name such as 'openai'"
        )
    p = provider.strip().lower()
    return _ALIASES.get(p, p)


def to_date(at: object) -> _dt.date:
    """The UTC date of ``at``: epoch seconds, a ``datetime`` (naive = UTC),
    a ``date``, an ISO ``"YYYY-MM-DD"`` string, or ``None`` (today)."""
    if at is None:
        return _dt.datetime.now(_dt.UTC).date()
    if isinstance(at, _dt.datetime):
        return (at.astimezone(_dt.UTC) if at.tzinfo else at).date()
    if isinstance(at, _dt.date):
        return at
    if isinstance(at, numbers.Real) and not isinstance(at, bool) and math.isfinite(at):
        return _dt.datetime.fromtimestamp(float(at), _dt.UTC).date()
    if isinstance(at, str) and _DATE.match(at):
        try:
            return _dt.date.fromisoformat(at)
        except ValueError:
            pass
    raise InvalidValueError(
        f"at={at!r} is not a time: expected epoch seconds, a datetime/date or 'YYYY-MM-DD'"
    )


@dataclass(frozen=True)
class PriceEntry:
    """One price entry: the LiteLLM fields as given, plus where it came from."""

    name: str
    fields: Mapping[str, Any]
    origin: str
    provider: str | None
    start_date: _dt.date | None
    pattern: re.Pattern[str] | None
    tiers: tuple[int, ...]  # thresholds in tokens, ascending

    @property
    def has_token_price(self) -> bool:
        return any(f in self.fields for f in _RATE_FIELDS)

    @property
    def has_runtime_price(self) -> bool:
        return "input_cost_per_second" in self.fields or "gpu_watts" in self.fields

    def rate(self, field: str, input_tokens: int = 0) -> float | None:
        """USD per unit of ``field`` for a request with ``input_tokens`` of
        input: the highest tier passed, else the base price; None if unpriced."""
        for threshold in reversed(self.tiers):
            if input_tokens > threshold:
                tiered = self.fields.get(f"{field}_above_{threshold // 1000}k_tokens")
                if tiered is not None:
                    return float(tiered)
                break  # the whole request is in this tier; this field has no tier price
        base = self.fields.get(field)
        return None if base is None else float(base)

    def cost(self, usage: Usage, latency_ms: float | None = None) -> float | None:
        """USD for one request, or None when the entry cannot price it."""
        if not (self.has_token_price or self.has_runtime_price):
            return None
        total = 0.0
        if self.has_token_price:
            tokens = self._token_cost(usage)
            if tokens is None:
                return None
            total += tokens
        if self.has_runtime_price:
            if latency_ms is None:
                return None
            seconds = latency_ms / 1e3
            per_second = self.fields.get("input_cost_per_second")
            if per_second is not None:
                total += float(per_second) * seconds
            watts = self.fields.get("gpu_watts")
            if watts is not None:
                kwh = float(watts) * seconds / 3.6e6  # W*s -> kWh
                total += kwh * float(self.fields["energy_cost_per_kwh"])
        return total

    def _token_cost(self, u: Usage) -> float | None:
        if not u.known:
            return None
        n = u.total_input
        prices = {
            "input": (u.input_uncached, self.rate("input_cost_per_token", n)),
            "cache_read": (u.cache_read, self.rate("cache_read_input_token_cost", n)),
            "cache_write_1h": (u.cache_write_1h, self.rate("cache_creation_input_token_cost_above_1hr", n)),
        }
        write_5m = self.rate("cache_creation_input_token_cost", n)
        prices["cache_write"] = (u.cache_write - u.cache_write_1h, prices["input"][1] if write_5m is None else write_5m)
        output = self.rate("output_cost_per_token", n)
        reasoning = self.rate("output_cost_per_reasoning_token", n)
        prices["output"] = (u.output - u.reasoning, output)
        prices["reasoning"] = (u.reasoning, output if reasoning is None else reasoning)
        total = 0.0
        for tokens, price in prices.values():
            if tokens:
                if price is None:
                    return None  # tokens of a kind this entry does not price
                total += tokens * price
        return total


def _price(value: object) -> bool:
    """A number in [0, MAX_PRICE] (NaN is not; an int past the float range is not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    try:
        return 0 <= float(value) <= MAX_PRICE
    except OverflowError:
        return False


def _entry(name: str, raw: object, origin: str) -> PriceEntry:
    where = f"{origin}: entry {name!r}"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} is {type(raw).__name__}: expected an object of LiteLLM price fields")
    fields = dict(raw)
    tiers: set[int] = set()
    for key, value in fields.items():
        m = _TIER.match(key)
        base = m.group("base") if m else key
        if base in _RATE_FIELDS or key in _RUNTIME_FIELDS:
            if not _price(value):
                raise ConfigError(
                    f"{where}: {key}={value!r} is invalid: expected a number from 0 to {MAX_PRICE:g} (USD per unit)"
                )
            if m:
                tiers.add(int(m.group("k")) * 1000)
    if ("gpu_watts" in fields) != ("energy_cost_per_kwh" in fields):
        raise ConfigError(f"{where}: gpu_watts and energy_cost_per_kwh go together: set both or neither")
    provider = fields.get("litellm_provider")
    if provider is not None and not (isinstance(provider, str) and provider.strip() and provider.isprintable()):
        raise ConfigError(f"{where}: litellm_provider={provider!r} is invalid: expected a provider name")
    start = fields.get("start_date")
    start_date = None
    if start is not None:
        try:
            if not (isinstance(start, str) and _DATE.match(start)):
                raise ValueError
            start_date = _dt.date.fromisoformat(start)
        except ValueError:
            raise ConfigError(f"{where}: start_date={start!r} is invalid: expected 'YYYY-MM-DD'") from None
    pattern = None
    if fields.get("match_pattern") is not None:
        try:
            pattern = re.compile(str(fields["match_pattern"]))
        except (re.error, RecursionError, OverflowError, ValueError) as e:  # nested too deep, {huge} repeats
            raise ConfigError(f"{where}: match_pattern={fields['match_pattern']!r} is not a regex: {e}") from None
    return PriceEntry(
        name=name,
        fields=MappingProxyType(fields),
        origin=origin,
        provider=normalize_provider(provider) if provider else None,
        start_date=start_date,
        pattern=pattern,
        tiers=tuple(sorted(tiers)),
    )


class _Layer:
    """The entries of one file: by exact name, and those with a pattern."""

    def __init__(self, data: Mapping[str, Any], origin: str) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{origin}: the price table is {type(data).__name__}: expected a JSON object keyed by model")
        self.meta = {k: v for k, v in data.items() if isinstance(k, str) and k.startswith("_")}
        self.by_name: dict[str, list[PriceEntry]] = {}
        self.patterns: list[PriceEntry] = []
        for name, value in data.items():
            if not isinstance(name, str) or name.startswith("_") or name == "sample_spec":
                continue
            for raw in value if isinstance(value, list) else [value]:
                e = _entry(name, raw, origin)
                if e.pattern is not None:
                    self.patterns.append(e)
                else:
                    self.by_name.setdefault(name, []).append(e)

    def find(self, provider: str, model: str, day: _dt.date) -> PriceEntry | None:
        names = dict.fromkeys((model, f"{provider}/{model}"))
        exact = [e for n in names for e in self.by_name.get(n, ())]
        found = _current(exact, provider, day)
        if found is None:
            matching = [e for e in self.patterns if any(e.pattern and e.pattern.fullmatch(n) for n in names)]
            found = _current(matching, provider, day)
        return found


def _current(entries: Sequence[PriceEntry], provider: str, day: _dt.date) -> PriceEntry | None:
    """The entry in force on ``day``: latest start_date on or before it
    (no start_date = always); the first listed wins a tie."""
    best: PriceEntry | None = None
    for e in entries:
        if e.provider is not None and e.provider != provider:
            continue
        start = e.start_date or _dt.date.min
        if start > day:
            continue
        if best is None or start > (best.start_date or _dt.date.min):
            best = e
    return best


def _read_json(path: Path, origin: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{origin}: no such file; expected a JSON price table in LiteLLM format") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{origin}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{origin}: cannot be read ({e})") from None
    except (ValueError, RecursionError) as e:  # a number past 4300 digits; nesting past the recursion limit
        raise ConfigError(f"{origin}: not valid JSON ({type(e).__name__}: {e})") from None


class PriceTable:
    """Prices by provider and model; ``cost()`` of a request (see the module doc).

    ``PriceTable()`` is empty (every hosted model unpriced, local models
    free); :meth:`load` gives the shipped table with the user's file over it.
    Immutable once built, so one table may be shared across threads.
    """

    def __init__(
        self, shipped: Mapping[str, Any] | None = None, user: Mapping[str, Any] | None = None,
        *, shipped_origin: str = "shipped prices", user_origin: str = "user prices",
    ) -> None:
        self._layers = [_Layer(user or {}, user_origin), _Layer(shipped or {}, shipped_origin)]
        self._shipped_meta = self._layers[1].meta

    @classmethod
    def load(cls, user_file: str | os.PathLike[str] | None = None) -> PriceTable:
        """The shipped table, overridden by ``user_file`` (LiteLLM JSON) if
        given.  ``ConfigError`` names the file and the entry that is wrong."""
        ref = resources.files(__package__ or "movie_director_metrics.llm").joinpath("prices", "default.json")
        try:
            shipped = json.loads(ref.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:  # a broken install, not user input
            raise ConfigError(f"the shipped price table {ref} cannot be read: {e}") from None
        user = None
        user_origin = "user prices"
        if user_file is not None:
            path = expand_user(user_file, "price table", ConfigError)
            user_origin = str(path)
            user = _read_json(path, user_origin)
        return cls(shipped, user, shipped_origin=f"shipped {ref.name}", user_origin=user_origin)

    @property
    def source(self) -> str | None:
        """Where the shipped prices were read (``_source``)."""
        v = self._shipped_meta.get("_source")
        return v if isinstance(v, str) else None

    @property
    def retrieved(self) -> str | None:
        """When the shipped prices were read (``_retrieved``, YYYY-MM-DD)."""
        v = self._shipped_meta.get("_retrieved")
        return v if isinstance(v, str) else None

    def models(self) -> list[str]:
        """Names with an exact entry, user's first."""
        return list(dict.fromkeys(n for layer in self._layers for n in layer.by_name))

    @staticmethod
    def is_local(provider: str, base_url: str | None = None) -> bool:
        """Whether requests run on this machine (see :data:`LOCAL_PROVIDERS`)."""
        return normalize_provider(provider) in LOCAL_PROVIDERS or is_loopback(base_url)

    def entry(self, provider: str, model: str, at: object = None) -> PriceEntry | None:
        """The entry that prices ``model`` of ``provider`` on the date of
        ``at`` (see :func:`to_date`), or None."""
        if not isinstance(model, str) or not model:
            raise InvalidValueError(f"model={model!r} is invalid: expected a non-empty model name")
        p, day = normalize_provider(provider), to_date(at)
        for layer in self._layers:
            found = layer.find(p, model, day)
            if found is not None:
                return found
        return None

    def cost(
        self, provider: str, model: str, usage: Usage, at: object = None,
        *, latency_ms: float | None = None, base_url: str | None = None,
    ) -> float | None:
        """USD for one request, or None when there is no price (never a guess).

        ``usage`` as normalised (:func:`~.usage.normalize_usage`);
        ``latency_ms`` for runtime prices; ``base_url`` marks a loopback
        server as local.  Local requests without a price entry cost 0.
        """
        if not isinstance(usage, Usage):
            raise InvalidValueError(f"usage={usage!r} is not a Usage: normalise it with normalize_usage() first")
        e = self.entry(provider, model, at)
        local = self.is_local(provider, base_url)
        if e is None or not (e.has_token_price or e.has_runtime_price):
            return 0.0 if local else None
        return e.cost(usage, latency_ms)

    def __repr__(self) -> str:
        user, shipped = self._layers
        return (f"PriceTable({sum(map(len, user.by_name.values())) + len(user.patterns)} user entries, "
                f"{sum(map(len, shipped.by_name.values())) + len(shipped.patterns)} shipped)")
