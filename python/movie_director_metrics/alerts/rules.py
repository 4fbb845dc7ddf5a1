"""Alert rules: the figures a rule can watch, its fields and checks, and
the TOML form (see the package docs for the state machine)."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from .. import _core
from ..errors import ConfigError, InvalidWindowError
from ..paths import expand_user
from ..windows import window_seconds


# One logger for the package (rules and manager): "movie_director_metrics.alerts".
logger = logging.getLogger(__package__ or __name__)

State = Literal["normal", "pending", "firing", "recovering"]
Severity = Literal["info", "warning", "critical"]
Comparator = Literal[">", ">=", "<", "<="]

STATES: tuple[State, ...] = ("normal", "pending", "firing", "recovering")
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")
COMPARATORS: tuple[Comparator, ...] = (">", ">=", "<", "<=")

#: ``ServiceStats`` fields a rule can watch (``up`` reads as 1.0/0.0).  The
#: timestamps (``start``, ``end``, ``*_at``) and ``window_s`` are left out:
#: they are not health figures.
SERVICE_METRICS: tuple[str, ...] = (
    "count", "errors", "success_rate", "rpm", "peak_rpm",
    "avg_ms", "min_ms", "max_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms",
    "uptime_pct", "uptime_known_s", "health_checks", "up", "health_latency_ms",
    "queue_running", "queue_pending", "queue_depth_avg", "queue_depth_max",
    "processing_count", "processing_avg_ms", "processing_p50_ms", "processing_p95_ms",
)  # fmt: skip

#: Figures computed from a ``ServiceStats``: ``queue_depth`` = running +
#: pending (latest report), ``vram_used_pct`` = 100 · used / total from the
#: gauges' latest readings, ``error_rate`` = 1 − success_rate.  Any gauge's
#: latest reading is ``"gauge:<name>"`` (names in ``GAUGES``).
DERIVED_METRICS: tuple[str, ...] = ("queue_depth", "vram_used_pct", "error_rate")

#: Target prefixes whose values come from ``AlertManager(sources=...)``
#: instead of the engine: ``"model:<name>"`` looks up
#: ``sources["model"](name, metric, window)``, ``"provider:<name>"``
#: ``sources["provider"](...)`` (a monitor's own manager has both: the LLM
#: tracker's figures of that model, or summed over that provider's models).
#: A service whose own name starts with one of these cannot be targeted by name.
SOURCE_PREFIXES: tuple[str, ...] = ("model", "provider")

#: Figures a ``model:``/``provider:`` rule can watch: the numeric fields of
#: ``llm.LlmStats`` (tokens by kind, ``total_tokens``, ``cost_usd`` -- None
#: while any request in the window had no price -- ``cost_known_usd``,
#: requests, errors, latency and TTFT percentiles ...) plus ``input_tokens``
#: = input_uncached + cache_read + cache_write.
LLM_METRICS: tuple[str, ...] = (
    "requests", "errors", "error_rate", "requests_usage_unknown",
    "input_tokens", "input_uncached", "cache_read", "cache_write", "output", "reasoning", "total_tokens",
    "cost_usd", "cost_known_usd", "cost_known_requests",
    "latency_p50_ms", "latency_p95_ms", "ttft_p50_ms", "ttft_p95_ms",
    "output_tokens_per_s", "share_of_requests", "share_of_tokens",
)  # fmt: skip

#: Top-level keys of an alerts file: ``[[rule]]`` tables (this module) and
#: ``[[notify]]`` tables (:mod:`.targets`).
FILE_TABLES: tuple[str, ...] = ("rule", "notify")

#: Longest ``for_s``/``keep_firing_for_s``/``repeat_s``/``cooldown_s``: a
#: bound that catches milliseconds typed as seconds.
MAX_DURATION_S = 30 * 86_400

_DAILY_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
class MetricSource(Protocol):
    """A value provider for prefixed targets (``"model:<name>"``): called as
    ``source(name, metric, window)``; returns the figure, or ``None`` when it
    has none.  Called outside the manager's lock; an exception is logged
    (once until it succeeds again) and counts as ``None``."""

    def __call__(self, name: str, metric: str, window: str | float, /) -> float | None: ...


class Snapshots(Protocol):
    """What the manager needs of a monitor (``Monitor`` or ``_core.Monitor``)."""

    @property
    def tiers(self) -> list[tuple[int, int]]: ...
    def snapshot(self, window: str | float | None = None) -> dict[str, _core.ServiceStats]: ...
    def now(self) -> float: ...


Reader = Callable[[_core.ServiceStats], "float | None"]


# ---- rules -----------------------------------------------------------------


def _number(x: object) -> float | None:
    """A field value as a float (bool as 0/1); ``None`` stays ``None``."""
    if x is None:
        return None
    return float(x)  # type: ignore[arg-type]


def _queue_depth(st: _core.ServiceStats) -> float | None:
    running, pending = st.queue_running, st.queue_pending
    if running is None and pending is None:
        return None
    return float((running or 0) + (pending or 0))


def _vram_used_pct(st: _core.ServiceStats) -> float | None:
    res = st.resources
    used, total = res.get("vram_used_bytes"), res.get("vram_total_bytes")
    if used is None or total is None or used.last is None or not total.last:
        return None
    return 100.0 * used.last / total.last


def _error_rate(st: _core.ServiceStats) -> float | None:
    rate = st.success_rate
    return None if rate is None else 1.0 - rate


def _reader(metric: str) -> Reader:
    if metric == "queue_depth":
        return _queue_depth
    if metric == "vram_used_pct":
        return _vram_used_pct
    if metric == "error_rate":
        return _error_rate
    if metric.startswith("gauge:"):
        gauge = metric[len("gauge:"):]

        def read_gauge(st: _core.ServiceStats) -> float | None:
            g = st.resources.get(gauge)
            return None if g is None else g.last

        return read_gauge
    return lambda st: _number(getattr(st, metric))


def read_llm_metric(stats: Any, metric: str) -> float | None:
    """``metric`` (one of :data:`LLM_METRICS`) of an ``LlmStats``, or None."""
    if metric == "input_tokens":
        return float(stats.input_uncached + stats.cache_read + stats.cache_write)
    v = getattr(stats, metric, None)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _finite_number(v: object) -> bool:
    """A finite int or float, not a bool (an int past the float range,
    which TOML and JSON can hold, is not finite)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def fmt_epoch(t: float) -> str:
    """``t`` (epoch s) as ``"YYYY-MM-DD HH:MM:SSZ"`` for messages."""
    try:
        return _dt.datetime.fromtimestamp(t, _dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    except (OverflowError, OSError, ValueError):  # past year 9999 (a "forever" snooze)
        return f"epoch {t:g} s"


@dataclass(frozen=True)
class AlertRule:
    """One alert rule (frozen; validated on construction, ``ConfigError``
    naming the rule, the field and what was expected).

    See the module documentation for the state machine and the TOML form;
    the TOML keys are these field names.  ``maintenance`` entries are
    ``(start_epoch_s, end_epoch_s)`` spans and/or daily ``"HH:MM-HH:MM"``
    UTC strings; lists are normalized to tuples.
    """

    name: str
    target: str
    metric: str
    comparator: Comparator
    threshold: float
    recovery_threshold: float | None = None
    window: str | float = "5m"
    for_s: float = 0.0
    keep_firing_for_s: float = 0.0
    repeat_s: float = 0.0
    cooldown_s: float = 0.0
    severity: Severity = "warning"
    maintenance: tuple[tuple[float, float] | str, ...] = ()
    snooze_until: float | None = None

    # Derived once at construction; not part of equality or the TOML form.
    _window_s: int = field(init=False, repr=False, compare=False)
    _read: Reader = field(init=False, repr=False, compare=False)
    _daily: tuple[tuple[int, int, str], ...] = field(init=False, repr=False, compare=False)
    _spans: tuple[tuple[float, float], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not name.strip() or not name.isprintable() or len(name) > 128:
            raise ConfigError(f"alert rule {name!r}: name: expected 1 to 128 printable characters")
        where = f"alert rule {name!r}"

        def bad(key: str, expected: str) -> ConfigError:
            return ConfigError(f"{where}: {key} = {getattr(self, key)!r}: expected {expected}")

        def finite(key: str, optional: bool = False) -> float | None:
            v = getattr(self, key)
            if v is None and optional:
                return None
            if not _finite_number(v):
                raise bad(key, "a finite number" + (" or nothing" if optional else ""))
            return float(v)

        t = self.target
        if not isinstance(t, str) or not t or not t.isprintable():
            raise bad("target", 'a service name, "*", "model:<name>" or "provider:<name>"')
        prefix = self.source_prefix
        if prefix is not None and t[len(prefix) + 1:] in ("", "*"):
            raise bad("target", f'"{prefix}:<name>" with a name ("*" fans out over services only)')
        m = self.metric
        if not isinstance(m, str) or not m:
            raise bad("metric", "a non-empty string")
        if prefix is not None and m not in LLM_METRICS:
            raise bad("metric", f"one of {', '.join(LLM_METRICS)} (an LLM figure of a {prefix})")
        if prefix is None and m not in SERVICE_METRICS and m not in DERIVED_METRICS:
            gauges = tuple(_core.GAUGES)
            if m.startswith("gauge:"):
                if m[len("gauge:"):] not in gauges:
                    raise bad("metric", f"gauge:<name> with a name from {', '.join(gauges)}")
            else:
                raise bad("metric", f"one of {', '.join(SERVICE_METRICS + DERIVED_METRICS)} or gauge:<name>")
        if self.comparator not in COMPARATORS:
            raise bad("comparator", "one of " + ", ".join(repr(c) for c in COMPARATORS))
        threshold = finite("threshold")
        recovery = finite("recovery_threshold", optional=True)
        assert threshold is not None
        if recovery is None:
            recovery = threshold
        elif self.comparator in (">", ">=") and recovery > threshold:
            raise bad("recovery_threshold", f"<= threshold {threshold:g} (the healthy side of {self.comparator})")
        elif self.comparator in ("<", "<=") and recovery < threshold:
            raise bad("recovery_threshold", f">= threshold {threshold:g} (the healthy side of {self.comparator})")
        object.__setattr__(self, "threshold", threshold)
        object.__setattr__(self, "recovery_threshold", recovery)
        try:
            # No upper bound here: the manager checks it against the monitor's tiers.
            window_s = window_seconds(self.window)
        except InvalidWindowError:
            expected = 'a window such as "1m", "5m", "5min", "1h", "90s", "7d" or a number of seconds >= 1'
            raise bad("window", expected) from None
        object.__setattr__(self, "_window_s", window_s)
        for key in ("for_s", "keep_firing_for_s", "repeat_s", "cooldown_s"):
            v = finite(key)
            assert v is not None
            if not 0 <= v <= MAX_DURATION_S:
                raise bad(key, f"seconds from 0 to {MAX_DURATION_S}")
            object.__setattr__(self, key, v)
        if self.severity not in SEVERITIES:
            raise bad("severity", "one of " + ", ".join(SEVERITIES))
        if isinstance(self.snooze_until, _dt.datetime):  # a TOML date-time
            if self.snooze_until.tzinfo is None:
                raise bad("snooze_until", "epoch seconds or a date-time with an offset (e.g. 2026-01-01T12:00:00Z)")
            object.__setattr__(self, "snooze_until", self.snooze_until.timestamp())
        snooze = finite("snooze_until", optional=True)
        object.__setattr__(self, "snooze_until", snooze)
        self._parse_maintenance(where)
        object.__setattr__(self, "_read", _reader(m))

    def _parse_maintenance(self, where: str) -> None:
        raw = self.maintenance
        if isinstance(raw, (str, bytes)) or not isinstance(raw, Iterable):
            raise ConfigError(f"{where}: maintenance = {raw!r}: expected a list of \"HH:MM-HH:MM\" "
                              "(daily, UTC) and/or [start_epoch_s, end_epoch_s]")
        entries: list[tuple[float, float] | str] = []
        daily: list[tuple[int, int, str]] = []
        spans: list[tuple[float, float]] = []
        for i, entry in enumerate(raw):
            key = f"maintenance[{i}] = {entry!r}"
            if isinstance(entry, str):
                m = _DAILY_RE.match(entry)
                if m is None:
                    raise ConfigError(f'{where}: {key}: expected "HH:MM-HH:MM" (UTC)')
                h0, m0, h1, m1 = (int(g) for g in m.groups())
                if h0 > 23 or m0 > 59 or m1 > 59 or h1 > 24 or (h1 == 24 and m1):
                    raise ConfigError(f'{where}: {key}: expected times from 00:00 to 24:00')
                start, end = h0 * 3600 + m0 * 60, h1 * 3600 + m1 * 60
                if start % 86_400 == end % 86_400:
                    raise ConfigError(f"{where}: {key}: start and end are the same time of day; "
                                      "expected a window shorter than a day")
                text = f"{h0:02d}:{m0:02d}-{h1:02d}:{m1:02d}"
                daily.append((start, end % 86_400, text))
                entries.append(text)
                continue
            ok = (isinstance(entry, Sequence) and len(entry) == 2
                  and all(_finite_number(x) for x in entry))
            if not ok or not entry[0] < entry[1]:
                raise ConfigError(f"{where}: {key}: expected [start_epoch_s, end_epoch_s] with start < end")
            span = (float(entry[0]), float(entry[1]))
            spans.append(span)
            entries.append(span)
        object.__setattr__(self, "maintenance", tuple(entries))
        object.__setattr__(self, "_daily", tuple(daily))
        object.__setattr__(self, "_spans", tuple(spans))

    # ---- reading ---------------------------------------------------------

    @property
    def source_prefix(self) -> str | None:
        """``"model"``/``"provider"`` for ``"model:<name>"``/``"provider:<name>"``
        targets, else None (a service or "*")."""
        head, sep, _ = self.target.partition(":")
        return head if sep and head in SOURCE_PREFIXES else None

    @property
    def window_s(self) -> int:
        """The window in seconds (what the snapshot is asked for)."""
        return self._window_s

    def breached(self, value: float) -> bool:
        """Whether ``value`` is bad: ``value <comparator> threshold``."""
        return _compare(self.comparator, value, self.threshold)

    def recovered(self, value: float) -> bool:
        """Whether ``value`` is on the healthy side of the recovery threshold."""
        assert self.recovery_threshold is not None
        return not _compare(self.comparator, value, self.recovery_threshold)

    def suppression(self, at: float) -> str | None:
        """Why alerts of this rule cannot start at ``at`` (epoch s), or None."""
        if self.snooze_until is not None and at < self.snooze_until:
            return f"snoozed until {fmt_epoch(self.snooze_until)}"
        for start, end in self._spans:
            if start <= at < end:
                return f"maintenance {fmt_epoch(start)} to {fmt_epoch(end)}"
        if self._daily:
            second = at % 86_400
            for start_s, end_s, text in self._daily:
                inside = start_s <= second < end_s if start_s < end_s else (second >= start_s or second < end_s)
                if inside:
                    return f"maintenance {text} UTC"
        return None

    def as_table(self) -> dict[str, Any]:
        """The rule as a TOML ``[[rule]]`` table (defaults and ``None`` left out)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if not f.init:
                continue
            v = getattr(self, f.name)
            if v is None or (f.default is not dataclasses.MISSING and v == f.default):
                continue
            if f.name == "recovery_threshold" and v == self.threshold:
                continue
            out[f.name] = [list(e) if isinstance(e, tuple) else e for e in v] if f.name == "maintenance" else v
        return out


def _compare(op: str, a: float, b: float) -> bool:
    if op == ">":
        return a > b
    if op == ">=":
        return a >= b
    if op == "<":
        return a < b
    return a <= b


def _alerts_source_text(source: str | os.PathLike[str]) -> tuple[str, str]:
    """(TOML text, the name used in messages) of a path or of TOML text.

    A ``str`` holding a newline or ``[[`` is TOML text; any other ``str``
    and every path-like is a file name."""
    if isinstance(source, str) and ("\n" in source or "[[" in source):
        return source, "<alert rules>"
    path = expand_user(source, "alert rules file", ConfigError)
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such alert rules file") from None
    except (OSError, ValueError) as e:  # ValueError: undecodable, or a NUL in the name
        raise ConfigError(f"{path}: cannot be read: {e}") from None


def read_alerts_toml(source: str | os.PathLike[str]) -> tuple[dict[str, Any], str]:
    """The one reader of an alerts file (``alerts.toml``): a path or TOML
    text, decoded, its top-level keys checked (:data:`FILE_TABLES`).
    Returns (the TOML document, the name messages use: the path, or
    ``"<alert rules>"`` for text).  ``ConfigError`` naming the file."""
    text, where = _alerts_source_text(source)
    try:
        data = tomllib.loads(text)
    except (ValueError, RecursionError) as e:
        # TOMLDecodeError, and what tomllib lets through: an integer past
        # Python's 4300-digit limit, arrays nested thousands deep.
        why = e if isinstance(e, tomllib.TOMLDecodeError) else f"{type(e).__name__}: {e}"
        raise ConfigError(f"{where}: not valid TOML: {why}") from None
    unknown = sorted(set(data) - set(FILE_TABLES))
    if unknown:
        raise ConfigError(
            f"{where}: unknown top-level key {unknown[0]!r}: expected [[rule]] tables and [[notify]] tables"
        )
    return data, where


def file_tables(data: dict[str, Any], key: str, where: str) -> list[Any]:
    """The array of tables ``key`` of an alerts document (``[]`` when absent)."""
    tables = data.get(key, [])
    if not isinstance(tables, list):
        raise ConfigError(f"{where}: {key!r} must be an array of tables ([[{key}]])")
    return tables


def table_label(key: str, i: int, table: Any) -> str:
    """``rule[2] ('slow')``: how messages name the i-th table of an alerts file."""
    name = table.get("name") if isinstance(table, dict) else None
    return f"{key}[{i}] ({name!r})" if isinstance(name, str) else f"{key}[{i}]"


def parse_rules(source: str | os.PathLike[str]) -> list[AlertRule]:
    """Rules from a TOML file or TOML text (``[[rule]]`` tables, keys as
    :class:`AlertRule` fields; ``[[notify]]`` tables are read by
    :func:`~.targets.parse_notify`).  All or nothing: ``ConfigError`` naming
    the file, the rule and the field for unknown keys, missing keys, bad
    values, and names used twice."""
    data, where = read_alerts_toml(source)
    return parse_rule_tables(file_tables(data, "rule", where), where)


def parse_rule_tables(tables: Iterable[Any], where: str = "<alert rules>") -> list[AlertRule]:
    """Rules from ``[[rule]]`` tables already read (dicts keyed as
    :class:`AlertRule` fields); see :func:`parse_rules`."""
    keys = [f.name for f in dataclasses.fields(AlertRule) if f.init]
    required = [f.name for f in dataclasses.fields(AlertRule)
                if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    rules: list[AlertRule] = []
    seen: set[str] = set()
    for i, table in enumerate(tables):
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: rule[{i}]: must be a table")
        label = table_label("rule", i, table)
        for key in table:
            if key not in keys:
                raise ConfigError(f"{where}: {label}: unknown key {key!r}; expected one of {', '.join(keys)}")
        for key in required:
            if key not in table:
                raise ConfigError(f"{where}: {label}: {key} is missing")
        try:
            rule = AlertRule(**table)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        if rule.name in seen:
            raise ConfigError(f"{where}: {label}: name {rule.name!r} is used twice; expected unique names")
        seen.add(rule.name)
        rules.append(rule)
    return rules


# ---- events and states -----------------------------------------------------
