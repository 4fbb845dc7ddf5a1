"""Threshold alerts with a pending period, hysteresis, repeats, cooldown,
maintenance windows and snoozes, evaluated over the monitor's windows.

One rule watches one figure of one target::

    [[rule]]
    name = "comfyui-slow"
    target = "comfyui"          # a service, "*" for every service, or "model:<name>"
    metric = "p95_ms"           # a ServiceStats field, a derived figure or "gauge:<name>"
    comparator = ">"            # > >= < <=
    threshold = 2000
    recovery_threshold = 1500   # hysteresis: on the healthy side; default = threshold
    window = "5m"               # passed to Monitor.snapshot
    for_s = 60                  # bad this long before firing (0: at once)
    keep_firing_for_s = 120     # recovered this long before resolving (0: at once)
    repeat_s = 900              # re-notify while firing (0: never)
    cooldown_s = 300            # after resolving, do not fire again for this long
    severity = "warning"        # info | warning | critical
    maintenance = ["02:00-02:30", [1767225600, 1767229200]]  # daily UTC and/or epoch spans
    snooze_until = 1767230000   # epoch seconds; omit for none

States of each (rule, target), and what moves them (``v`` is the value read
in this pass; "bad" is ``v <comparator> threshold``; "recovered" is
``not (v <comparator> recovery_threshold)``)::

                 bad, not suppressed             bad for for_s, not cooling down
    ┌────────┐ ──────────────────────> ┌─────────┐ ──────────────────────────> ┌────────┐ ─┐ repeat every
    │ normal │                         │ pending │                             │ firing │  │ repeat_s
    └────────┘ <────────────────────── └─────────┘                             └────────┘ <┘ (kind="repeat")
         ^      not bad, or suppressed                                recovered │    ^ bad
         │                                                                      v    │
         │     recovered, keep_firing_for_s after recovery began          ┌────────────┐
         └─────────────────────────────────────────────────────────────── │ recovering │
                                                                          └────────────┘
    shortcuts: normal -> firing when for_s = 0 (not suppressed, not cooling down);
               firing -> normal when keep_firing_for_s = 0

Guarantees, in the order questions about them come up:

* **Missing data changes nothing.**  A pass where the value is ``None`` (no
  data in the window, an unknown service, a source that returned ``None``
  or raised) leaves the state, its ``since`` and every timer as they were,
  and sends no repeat.  A pending alert whose data vanishes therefore fires
  on the first pass that has data again if the condition still holds and
  ``for_s`` has passed since it became pending.
* **Hysteresis.**  A value between ``recovery_threshold`` and ``threshold``
  (the band) keeps ``firing`` firing and ``recovering`` recovering: it
  neither starts recovery nor re-fires.  ``recovering`` resolves on the
  first pass whose value is recovered once ``keep_firing_for_s`` has passed
  since recovery began; band values in between do not restart that clock,
  a bad value sends it back to ``firing``.  ``pending`` uses the plain
  threshold: any value that is not bad returns it to ``normal``.
* **Suppression** (a maintenance window, or ``snooze_until`` in the
  future) stops alerts from *starting*: ``normal`` does not become
  ``pending`` and ``pending`` returns to ``normal`` (its ``for_s`` clock
  starts again after the suppression ends), and repeats are muted.  An
  alert already firing keeps firing and can recover and resolve as usual;
  a repeat that fell due meanwhile goes out at the first pass after.
  Maintenance windows are half-open ``[start, end)``; daily ones are UTC
  and may wrap midnight (``"23:30-00:30"``).
* **Cooldown** stops alerts from *firing* again too soon: after resolving,
  a bad value still makes the alert ``pending``, but it fires only when
  both ``for_s`` and the cooldown have passed.
* **Events.**  Every transition is an :class:`AlertEvent`; so is each
  repeat (``firing -> firing``, ``kind="repeat"``).  The manager keeps the
  latest ``max_events`` in memory and hands each event, in order, to every
  callback registered with :meth:`AlertManager.on_event`.
* **Threads.**  Every public method of :class:`AlertManager` may be called
  from any thread.  Engine reads and callbacks run outside the manager's
  lock, so a callback may call ``states()``, ``events()`` or even
  ``evaluate()``; callbacks are never run concurrently with each other, and
  they see events in the order the passes produced them.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import math
import os
import re
import threading
import tomllib
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, cast

from . import _core
from .errors import ConfigError

__all__ = [
    "COMPARATORS",
    "DERIVED_METRICS",
    "SERVICE_METRICS",
    "SEVERITIES",
    "SOURCE_PREFIXES",
    "STATES",
    "AlertEvent",
    "AlertManager",
    "AlertRule",
    "AlertState",
    "Comparator",
    "MetricSource",
    "Severity",
    "State",
    "parse_rules",
]

logger = logging.getLogger(__name__)

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
#: ``sources["model"](name, metric, window)``.  A service whose own name
#: starts with one of these cannot be targeted by name.
SOURCE_PREFIXES: tuple[str, ...] = ("model",)

#: Longest ``for_s``/``keep_firing_for_s``/``repeat_s``/``cooldown_s``: a
#: bound that catches milliseconds typed as seconds.
MAX_DURATION_S = 30 * 86_400

_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_WINDOW_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_DAILY_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_MESSAGE_RE = re.compile(
    r"^(normal|pending|firing|recovering) -> (normal|pending|firing|recovering)( \(repeat\))?: "
    r"\[(info|warning|critical)\] "
)


class MetricSource(Protocol):
    """A value provider for prefixed targets (``"model:<name>"``): called as
    ``source(name, metric, window)``; returns the figure, or ``None`` when it
    has none.  Called outside the manager's lock; an exception is logged
    (once until it succeeds again) and counts as ``None``."""

    def __call__(self, name: str, metric: str, window: str | float, /) -> float | None: ...


class _Snapshots(Protocol):
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


def _window_seconds(window: str | float) -> int | None:
    """Seconds of a window as the engine reads it, or None if malformed."""
    if isinstance(window, bool):
        return None
    if isinstance(window, (int, float)):
        if not math.isfinite(window):
            return None
        seconds = float(window)
    else:
        m = _WINDOW_RE.match(window)
        if m is None:
            return None
        seconds = float(m.group(1)) * _UNIT_S[m.group(2) or "s"]
    return round(seconds) if seconds >= 1 else None


def _fmt_epoch(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


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
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise bad(key, "a finite number" + (" or nothing" if optional else ""))
            return float(v)

        t = self.target
        if not isinstance(t, str) or not t or not t.isprintable():
            raise bad("target", 'a service name, "*" or "model:<name>"')
        prefix = self.source_prefix
        if prefix is not None and t[len(prefix) + 1:] in ("", "*"):
            raise bad("target", f'"{prefix}:<name>" with a name ("*" fans out over services only)')
        m = self.metric
        if not isinstance(m, str) or not m:
            raise bad("metric", "a non-empty string")
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
        window_s = _window_seconds(self.window)
        if window_s is None:
            raise bad("window", 'a window such as "1m", "5m", "1h", "90s", "7d" or a number of seconds >= 1')
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
                  and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                          for x in entry))
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
        """``"model"`` for ``"model:<name>"`` targets, else None (a service or "*")."""
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
            return f"snoozed until {_fmt_epoch(self.snooze_until)}"
        for start, end in self._spans:
            if start <= at < end:
                return f"maintenance {_fmt_epoch(start)} to {_fmt_epoch(end)}"
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


def _rule_source_text(source: str | os.PathLike[str]) -> tuple[str, str]:
    """(TOML text, the name used in messages) of a path or of TOML text.

    A ``str`` holding a newline or ``[[`` is TOML text; any other ``str``
    and every path-like is a file name."""
    if isinstance(source, str) and ("\n" in source or "[[" in source):
        return source, "<alert rules>"
    path = Path(source).expanduser()
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such alert rules file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read: {e}") from None


def parse_rules(source: str | os.PathLike[str]) -> list[AlertRule]:
    """Rules from a TOML file or TOML text (``[[rule]]`` tables, keys as
    :class:`AlertRule` fields).  All or nothing: ``ConfigError`` naming the
    file, the rule and the field for unknown keys, missing keys, bad
    values, and names used twice."""
    text, where = _rule_source_text(source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: not valid TOML: {e}") from None
    unknown = sorted(set(data) - {"rule"})
    if unknown:
        raise ConfigError(f"{where}: unknown top-level key {unknown[0]!r}: expected [[rule]] tables")
    tables = data.get("rule", [])
    if not isinstance(tables, list):
        raise ConfigError(f"{where}: 'rule' must be an array of tables ([[rule]])")
    keys = [f.name for f in dataclasses.fields(AlertRule) if f.init]
    required = [f.name for f in dataclasses.fields(AlertRule)
                if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    rules: list[AlertRule] = []
    seen: set[str] = set()
    for i, table in enumerate(tables):
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: rule[{i}]: must be a table")
        label = f"rule[{i}] ({table['name']!r})" if isinstance(table.get("name"), str) else f"rule[{i}]"
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


@dataclass(frozen=True)
class AlertEvent:
    """One transition of one (rule, target), or a repeat notification
    (``from_state == to_state == "firing"``, ``kind == "repeat"``).

    ``at`` is the evaluation's time (epoch s); ``value`` the figure that
    caused it; ``threshold`` the one it was compared with: the recovery
    threshold for moves into ``recovering`` or ``normal`` from
    firing/recovering, the threshold otherwise (``None`` on an event
    restored for a rule that is no longer loaded).
    """

    at: float
    rule: str
    target: str
    from_state: State
    to_state: State
    value: float | None
    threshold: float | None
    severity: Severity
    message: str
    kind: Literal["transition", "repeat"] = "transition"

    def as_row(self) -> tuple[float, str, str, str, float | None, str]:
        """``(at_s, target, rule, state, value, message)`` for the storage
        table ``alert_events`` (``target`` maps to ``service_id``; ``state``
        is ``to_state``).  The message starts ``"<from> -> <to>: [severity]"``
        so :meth:`AlertManager.restore_events` can rebuild the event."""
        return (self.at, self.target, self.rule, self.to_state, self.value, self.message)


@dataclass(frozen=True)
class AlertState:
    """An active (pending, firing or recovering) alert of one (rule, target).

    ``since``: when it entered ``state``; ``value``/``updated_at``: the
    latest non-missing reading and when it was read; ``suppressed``: why
    it could not start at the last pass (maintenance or snooze), or None;
    ``message``: that of the event that led to ``state`` (or the last repeat).
    """

    rule: str
    target: str
    state: State
    since: float
    value: float | None
    updated_at: float | None
    threshold: float
    severity: Severity
    suppressed: str | None
    message: str


@dataclass
class _Track:
    """Mutable state of one (rule, target); guarded by the manager's lock."""

    state: State = "normal"
    since: float = 0.0
    value: float | None = None
    updated_at: float | None = None
    notified_at: float = -math.inf   # the firing transition or the last repeat
    cooldown_until: float = -math.inf
    suppressed: str | None = None
    message: str = ""


def _fmt(v: float | None) -> str:
    return "no data" if v is None else f"{v:.4g}"


def _event(rule: AlertRule, target: str, at: float, tr: _Track, to: State, value: float | None,
           detail: str, kind: Literal["transition", "repeat"] = "transition") -> AlertEvent:
    frm = tr.state
    resolving = to == "recovering" or (to == "normal" and frm in ("firing", "recovering"))
    threshold = rule.recovery_threshold if resolving else rule.threshold
    head = f"{frm} -> {to}{' (repeat)' if kind == 'repeat' else ''}: [{rule.severity}] {rule.name} on {target}"
    return AlertEvent(at, rule.name, target, frm, to, value, threshold, rule.severity, f"{head}: {detail}", kind)


def _step(rule: AlertRule, target: str, tr: _Track, at: float, value: float | None) -> list[AlertEvent]:
    """Advances one (rule, target) by one reading; returns its events."""
    if value is None:
        return []  # missing data: state, since and timers stay as they were
    tr.value, tr.updated_at = value, at
    sup = tr.suppressed = rule.suppression(at)
    bad = rule.breached(value)
    what = f"{rule.metric}[{rule.window}] = {_fmt(value)}"
    cond = f"{rule.comparator} {rule.threshold:g}"
    out: list[AlertEvent] = []

    def move(to: State, detail: str) -> None:
        out.append(_event(rule, target, at, tr, to, value, detail))
        tr.state, tr.since = to, at
        if to == "firing" and out[-1].from_state != "recovering":
            tr.notified_at = at
        if to == "normal" and out[-1].from_state in ("firing", "recovering"):
            tr.cooldown_until = at + rule.cooldown_s

    state = tr.state
    if state == "normal":
        if bad and sup is None:
            if rule.for_s == 0 and at >= tr.cooldown_until:
                move("firing", f"{what} {cond}")
            else:
                why = f"cooling down until {_fmt_epoch(tr.cooldown_until)}" if at < tr.cooldown_until else ""
                move("pending", f"{what} {cond}; fires after {rule.for_s:g} s" + (f", {why}" if why else ""))
    elif state == "pending":
        if not bad:
            move("normal", f"{what}, no longer {cond}")
        elif sup is not None:
            move("normal", f"{what} {cond} but {sup}")
        elif at - tr.since >= rule.for_s and at >= tr.cooldown_until:
            move("firing", f"{what} {cond} for {at - tr.since:g} s")
    elif state == "firing":
        if rule.recovered(value):
            rec = f"{what}, past the recovery threshold {rule.recovery_threshold:g}"
            if rule.keep_firing_for_s == 0:
                move("normal", f"resolved: {rec}")
            else:
                move("recovering", f"{rec}; resolves after {rule.keep_firing_for_s:g} s")
        elif rule.repeat_s > 0 and sup is None and at - tr.notified_at >= rule.repeat_s:
            out.append(_event(rule, target, at, tr, "firing", value,
                              f"still {what} {cond}, firing since {_fmt_epoch(tr.since)}", "repeat"))
            tr.notified_at = at
    elif state == "recovering":
        if bad:
            move("firing", f"{what} {cond} again")
        elif rule.recovered(value) and at - tr.since >= rule.keep_firing_for_s:
            move("normal", f"resolved: {what}, past the recovery threshold "
                           f"{rule.recovery_threshold:g}, {at - tr.since:g} s after recovery began")
    if out:
        tr.message = out[-1].message
    return out


# ---- the manager -----------------------------------------------------------


class AlertManager:
    """Evaluates rules over a monitor's snapshots and keeps alert states
    and a bounded event history.

    ``monitor``: a :class:`~movie_director_metrics.Monitor` (or the engine's
    ``_core.Monitor``).  ``sources``: providers for prefixed targets, e.g.
    ``{"model": llm_figures}`` (see :class:`MetricSource`).  ``max_events``:
    how many events :meth:`events` keeps.

    Nothing runs by itself: call :meth:`evaluate` from a timer (Blender
    does), or :meth:`start` a daemon thread that calls it every
    ``interval_s``.  Thread-safe; see the module documentation.
    """

    def __init__(
        self,
        monitor: _Snapshots,
        rules: Iterable[AlertRule] = (),
        *,
        sources: Mapping[str, MetricSource] | None = None,
        max_events: int = 1000,
    ) -> None:
        if isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 1:
            raise ConfigError(f"max_events = {max_events!r}: expected an integer >= 1")
        self._monitor = monitor
        self._sources: dict[str, MetricSource] = dict(sources or {})
        for prefix in self._sources:
            if prefix not in SOURCE_PREFIXES:
                raise ConfigError(f"sources[{prefix!r}]: expected a key from {', '.join(SOURCE_PREFIXES)}")
        self._lock = threading.Lock()              # rules, tracks, events, outbox, callbacks
        self._dispatch_lock = threading.Lock()     # held by the one thread running callbacks
        self._rules: dict[str, AlertRule] = {}
        self._tracks: dict[tuple[str, str], _Track] = {}
        self._events: deque[AlertEvent] = deque(maxlen=max_events)
        self._outbox: deque[AlertEvent] = deque()
        self._callbacks: list[Callable[[AlertEvent], object]] = []
        self._failing: set[tuple[str, str]] = set()  # sources that raised, logged once each
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        for rule in rules:
            self.add_rule(rule)

    # ---- rules -----------------------------------------------------------

    @property
    def rules(self) -> tuple[AlertRule, ...]:
        """The rules in the order they were added."""
        with self._lock:
            return tuple(self._rules.values())

    def _check(self, rule: AlertRule) -> None:
        """What a rule needs of this manager: its source, a window the monitor keeps."""
        if not isinstance(rule, AlertRule):
            raise ConfigError(f"expected an AlertRule, got {type(rule).__name__}")
        where = f"alert rule {rule.name!r}"
        prefix = rule.source_prefix
        if prefix is not None and prefix not in self._sources:
            raise ConfigError(f"{where}: target = {rule.target!r}: needs a {prefix!r} source; "
                              f"expected AlertManager(..., sources={{{prefix!r}: ...}})")
        if prefix is None:
            longest = max(r * s for r, s in self._monitor.tiers)
            if rule.window_s > longest:
                raise ConfigError(f"{where}: window = {rule.window!r}: expected at most {longest} s, "
                                  "the longest window this monitor keeps (open it with storage for 30d)")

    def add_rule(self, rule: AlertRule) -> None:
        """Adds a rule; ``ConfigError`` if its name is taken, its window is
        longer than the monitor keeps, or its target needs a missing source."""
        self._check(rule)
        with self._lock:
            if rule.name in self._rules:
                raise ConfigError(f"alert rule {rule.name!r}: name is already used; remove that rule first")
            self._rules[rule.name] = rule

    def remove_rule(self, name: str) -> bool:
        """Removes a rule and its states; returns whether it existed.  Each of
        its active alerts gets a last event to ``normal`` ("rule removed") so
        that notifiers close what they opened."""
        at = self._monitor.now()  # engine calls stay outside the lock
        with self._lock:
            rule = self._rules.pop(name, None)
            if rule is None:
                return False
            self._drop_tracks(rule, at, "rule removed")
        self._dispatch()
        return True

    def _drop_tracks(self, rule: AlertRule, at: float, why: str) -> None:
        """Lock held: forgets a rule's tracks, queueing closing events at ``at``."""
        for key in [k for k in self._tracks if k[0] == rule.name]:
            tr = self._tracks.pop(key)
            if tr.state != "normal":
                ev = _event(rule, key[1], at, tr, "normal", tr.value, why)
                self._events.append(ev)
                self._outbox.append(ev)

    def snooze(self, name: str, until: float | None) -> AlertRule:
        """Sets a rule's ``snooze_until`` (epoch s; None to unsnooze), keeping
        its states; returns the new rule.  ``KeyError`` for an unknown name."""
        with self._lock:
            rule = dataclasses.replace(self._rules[name], snooze_until=until)
            self._rules[name] = rule
            return rule

    def load_rules(self, source: str | os.PathLike[str], *, replace: bool = False) -> list[AlertRule]:
        """Adds the rules of a TOML file or TOML text (see :func:`parse_rules`);
        all or nothing.  With ``replace``, rules not in the file are removed
        (closing their alerts) and rules whose definition is unchanged keep
        their states.  ``ConfigError`` names the file, the rule and the field."""
        rules = parse_rules(source)
        where = "<alert rules>" if isinstance(source, str) and ("\n" in source or "[[" in source) else str(source)
        for rule in rules:
            try:
                self._check(rule)
            except ConfigError as e:
                raise ConfigError(f"{where}: {e}") from None
        at = self._monitor.now()
        with self._lock:
            if not replace:
                taken = [r.name for r in rules if r.name in self._rules]
                if taken:
                    raise ConfigError(f"{where}: alert rule {taken[0]!r}: name is already used; "
                                      "expected new names, or load_rules(..., replace=True)")
            else:
                new = {r.name: r for r in rules}
                for old in list(self._rules.values()):
                    if new.get(old.name) != old:
                        del self._rules[old.name]
                        self._drop_tracks(old, at, "rule removed" if old.name not in new else "rule changed")
            for rule in rules:
                if rule.name not in self._rules:  # an equal rule already there keeps its object and tracks
                    self._rules[rule.name] = rule
        self._dispatch()
        return rules

    # ---- evaluation --------------------------------------------------------

    def _source_value(self, rule: AlertRule, prefix: str) -> float | None:
        name = rule.target[len(prefix) + 1:]
        key = (rule.name, rule.target)
        try:
            v = self._sources[prefix](name, rule.metric, rule.window)
            value = None if v is None else float(v)
        except Exception:
            if key not in self._failing:
                self._failing.add(key)
                logger.exception("alert rule %r: source %r failed for %r; treated as no data",
                                 rule.name, prefix, rule.target)
            return None
        self._failing.discard(key)
        return value if value is None or math.isfinite(value) else None

    def evaluate(self, now: float | None = None) -> list[AlertEvent]:
        """One pass over every rule; returns the events it produced (also
        kept for :meth:`events` and handed to the callbacks before this
        returns, unless another thread is running callbacks: then that
        thread delivers them, in order).

        Reads one snapshot per distinct window.  ``now`` (epoch s, default
        the monitor's clock) stamps the events and drives the timers; the
        snapshot itself always ends at the monitor's present.
        """
        with self._lock:
            rules = list(self._rules.values())
        at = self._monitor.now() if now is None else float(now)
        windows = sorted({r.window_s for r in rules if r.source_prefix is None})
        snaps = {w: self._monitor.snapshot(w) for w in windows}
        readings: list[tuple[AlertRule, str, float | None]] = []
        for rule in rules:
            prefix = rule.source_prefix
            if prefix is not None:
                readings.append((rule, rule.target, self._source_value(rule, prefix)))
            elif rule.target == "*":
                read = rule._read
                readings.extend((rule, name, read(st)) for name, st in snaps[rule.window_s].items())
            else:
                st = snaps[rule.window_s].get(rule.target)
                readings.append((rule, rule.target, None if st is None else rule._read(st)))
        events: list[AlertEvent] = []
        with self._lock:
            for rule, target, value in readings:
                if self._rules.get(rule.name) is not rule:
                    continue  # removed or replaced while we read
                key = (rule.name, target)
                tr = self._tracks.get(key)
                if tr is None:
                    if value is None:
                        continue
                    tr = self._tracks[key] = _Track(since=at)
                events.extend(_step(rule, target, tr, at, value))
            self._events.extend(events)
            self._outbox.extend(events)
        self._dispatch()
        return events

    def _dispatch(self) -> None:
        """Runs callbacks for queued events, in order, in at most one thread.

        A thread that finds another one dispatching leaves its events in
        the outbox; the dispatcher drains it, and checks again after
        letting go of the dispatch lock so nothing queued meanwhile is
        stranded."""
        while True:
            if not self._dispatch_lock.acquire(blocking=False):
                return
            try:
                while True:
                    with self._lock:
                        if not self._outbox:
                            break
                        ev = self._outbox.popleft()
                        callbacks = list(self._callbacks)
                    for cb in callbacks:
                        try:
                            cb(ev)
                        except Exception:
                            logger.exception("alert callback %r failed on %s", cb, ev.message)
            finally:
                self._dispatch_lock.release()
            with self._lock:
                if not self._outbox:
                    return

    def on_event(self, callback: Callable[[AlertEvent], object]) -> Callable[[AlertEvent], object]:
        """Registers ``callback(event)`` for every later event; returns it
        (so it works as a decorator).  A callback that raises is logged and
        does not stop the others or the evaluation."""
        with self._lock:
            self._callbacks.append(callback)
        return callback

    def remove_callback(self, callback: Callable[[AlertEvent], object]) -> None:
        with self._lock:
            self._callbacks.remove(callback)

    # ---- reading state -------------------------------------------------------

    def states(self) -> list[AlertState]:
        """Active alerts (pending, firing, recovering), by rule order then target."""
        with self._lock:
            order = {name: i for i, name in enumerate(self._rules)}
            out = [
                AlertState(name, target, tr.state, tr.since, tr.value, tr.updated_at,
                           self._rules[name].threshold, self._rules[name].severity, tr.suppressed, tr.message)
                for (name, target), tr in self._tracks.items() if tr.state != "normal"
            ]
        out.sort(key=lambda s: (order[s.rule], s.target))
        return out

    def firing(self) -> list[AlertState]:
        """Alerts that are firing, recovering ones included (they still fire
        until ``keep_firing_for_s`` has passed)."""
        return [s for s in self.states() if s.state in ("firing", "recovering")]

    def events(self, since: float | None = None) -> list[AlertEvent]:
        """Kept events, oldest first; with ``since``, those strictly after it
        (so polling with the last event's ``at`` returns each event once,
        since one pass stamps all its events with the same time)."""
        with self._lock:
            evs = list(self._events)
        return evs if since is None else [e for e in evs if e.at > since]

    # ---- persistence ---------------------------------------------------------

    def restore_events(self, rows: Iterable[Sequence[Any]]) -> int:
        """Puts stored events back: ``rows`` of ``(at_s, target, rule, state,
        value, message)`` as :meth:`AlertEvent.as_row` gives them, in any
        order.  Returns how many were kept (rows with an unknown state are
        skipped).  No callbacks run.

        Events join the history (oldest dropped past ``max_events``).  For
        each (rule, target) of a loaded rule that has not been evaluated
        yet, the latest event restores its state, so an alert firing before
        a restart is not notified again (repeats continue from its last
        notification) and a resolve's cooldown still holds.
        """
        parsed: list[AlertEvent] = []
        with self._lock:
            rules = dict(self._rules)
        last: dict[tuple[str, str], State] = {}
        for row in sorted(rows, key=lambda r: float(r[0])):
            at_s, target, rule_name, state_text, value, message = row
            if state_text not in STATES:
                continue
            state = cast(State, state_text)
            at, key, text = float(at_s), (str(rule_name), str(target)), str(message or "")
            m = _MESSAGE_RE.match(text)
            rule = rules.get(key[0])
            if m is not None:
                frm, severity = cast(State, m.group(1)), cast(Severity, m.group(4))
            else:  # a row this module did not write: chain the states
                frm, severity = last.get(key, "normal"), rule.severity if rule is not None else "warning"
            kind: Literal["transition", "repeat"] = "repeat" if frm == state == "firing" else "transition"
            resolving = state == "recovering" or (state == "normal" and frm in ("firing", "recovering"))
            threshold = None if rule is None else (rule.recovery_threshold if resolving else rule.threshold)
            reading = None if value is None else float(value)
            parsed.append(AlertEvent(at, key[0], key[1], frm, state, reading, threshold, severity, text, kind))
            last[key] = state
        with self._lock:
            merged = sorted([*parsed, *self._events], key=lambda e: e.at)
            self._events.clear()
            self._events.extend(merged)
            for ev in parsed:
                rule = self._rules.get(ev.rule)
                key = (ev.rule, ev.target)
                if rule is None or (key in self._tracks and self._tracks[key].updated_at is not None):
                    continue
                tr = self._tracks.setdefault(key, _Track())
                tr.value, tr.message = ev.value, ev.message
                if ev.kind == "transition":
                    tr.state, tr.since = ev.to_state, ev.at
                    if ev.to_state == "normal" and ev.from_state in ("firing", "recovering"):
                        tr.cooldown_until = ev.at + rule.cooldown_s
                if ev.to_state == "firing" and ev.from_state != "recovering":
                    tr.notified_at = ev.at
        return len(parsed)

    # ---- a thread of its own (for the CLI) ------------------------------------

    def start(self, interval_s: float = 1.0) -> None:
        """Evaluates every ``interval_s`` seconds on a daemon thread until
        :meth:`stop` (a second call while running does nothing).  Errors of
        a pass are logged; the thread ends when the monitor is closed."""
        if isinstance(interval_s, bool) or not isinstance(interval_s, (int, float)) or not 0.01 <= interval_s <= 86_400:
            raise ConfigError(f"interval_s = {interval_s!r}: expected seconds from 0.01 to 86400")
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop = stop = threading.Event()
            self._thread = threading.Thread(target=self._run, args=(float(interval_s), stop),
                                            name="movie-director-metrics-alerts", daemon=True)
            self._thread.start()

    def _run(self, interval_s: float, stop: threading.Event) -> None:
        while not stop.is_set():
            if getattr(self._monitor, "closed", False):
                return
            try:
                self.evaluate()
            except Exception:
                logger.exception("alert evaluation failed; retrying in %g s", interval_s)
            stop.wait(interval_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stops the thread :meth:`start` began and waits for its pass to end."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    @property
    def running(self) -> bool:
        """Whether the evaluation thread is alive."""
        t = self._thread
        return t is not None and t.is_alive()

    def __repr__(self) -> str:
        with self._lock:
            active = sum(tr.state != "normal" for tr in self._tracks.values())
            return f"AlertManager({len(self._rules)} rules, {active} active)"
