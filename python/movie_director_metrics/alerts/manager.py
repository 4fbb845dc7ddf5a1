"""The alert state machine and the manager that evaluates rules, keeps
events and runs callbacks (see the package docs)."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from ..atomic import write_atomic
from ..errors import ConfigError, InvalidWindowError
from ..windows import window_seconds

from .rules import (
    AlertRule,
    MetricSource,
    SOURCE_PREFIXES,
    SEVERITIES,
    STATES,
    Severity,
    Snapshots,
    State,
    fmt_epoch,
    logger,
    parse_rules,
)

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

    def as_row(self) -> tuple[Any, ...]:
        """The values of :data:`STORED_EVENT_COLUMNS`, for the history file's
        ``alert_events`` table (``state`` is ``to_state``)."""
        return (
            self.at, self.target, self.rule, self.from_state, self.to_state, self.value, self.threshold,
            self.severity, self.kind, self.message,
        )


#: Columns of the history file's ``alert_events`` table, in
#: :meth:`AlertEvent.as_row` order.
STORED_EVENT_COLUMNS: tuple[str, ...] = (
    "at_s", "target", "rule", "from_state", "state", "value", "threshold", "severity", "kind", "message",
)


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
                why = f"cooling down until {fmt_epoch(tr.cooldown_until)}" if at < tr.cooldown_until else ""
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
                              f"still {what} {cond}, firing since {fmt_epoch(tr.since)}", "repeat"))
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


#: Columns of :meth:`AlertManager.export_events`.
EVENT_COLUMNS = (
    "at", "at_epoch_s", "rule", "target", "from_state", "to_state", "kind", "value", "threshold", "severity", "message",
)


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
        monitor: Snapshots,
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
        # Built-in checks run by each evaluate(): now -> events (stuck jobs).
        self._checks: list[Callable[[float], list[AlertEvent]]] = []
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
            try:  # bounded as Monitor.stats bounds it (the given value, before rounding)
                window_seconds(rule.window, longest)
            except InvalidWindowError:
                raise ConfigError(f"{where}: window = {rule.window!r}: expected at most {longest} s, "
                                  "the longest window this monitor keeps (open it with storage for 30d)") from None

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
        for check in list(self._checks):
            try:
                events.extend(check(at))
            except Exception:
                logger.exception("built-in alert check %r failed", check)
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

    def add_check(self, check: Callable[[float], list[AlertEvent]]) -> None:
        """A built-in check that :meth:`evaluate` runs each pass: it is
        given the pass's time and returns events (e.g. ``job_stuck``), kept
        and dispatched like a rule's."""
        self._checks.append(check)

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

    def export_events(
        self, path: str | os.PathLike[str], format: Literal["csv", "json"] = "csv", since: float | None = None
    ) -> Path:
        """Writes the kept events (after ``since``) to ``path`` atomically,
        one per line/object: ``at`` (UTC ISO-8601), ``at_epoch_s``, ``rule``,
        ``target``, ``from_state``, ``to_state``, ``kind``, ``value``,
        ``threshold``, ``severity``, ``message``; returns the absolute path."""
        import csv
        import json

        from ..errors import InvalidValueError

        if format not in ("csv", "json"):
            raise InvalidValueError(f"format={format!r} is not supported: expected 'csv' or 'json'")
        rows = [
            {
                "at": _dt.datetime.fromtimestamp(e.at, _dt.UTC).isoformat().replace("+00:00", "Z"),
                "at_epoch_s": e.at, "rule": e.rule, "target": e.target, "from_state": e.from_state,
                "to_state": e.to_state, "kind": e.kind, "value": e.value, "threshold": e.threshold,
                "severity": e.severity, "message": e.message,
            }
            for e in self.events(since)
        ]
        out = Path(path).absolute()

        def write(f: Any) -> None:
            if format == "json":
                json.dump({"events": rows}, f, indent=1)
                return
            w = csv.DictWriter(f, fieldnames=EVENT_COLUMNS, lineterminator="\n")
            w.writeheader()
            for r in rows:
                w.writerow({k: "" if v is None else v for k, v in r.items()})

        write_atomic(out, write)
        return out

    # ---- persistence ---------------------------------------------------------

    def restore_events(self, rows: Iterable[Sequence[Any]]) -> int:
        """Puts stored events back: ``rows`` of :data:`STORED_EVENT_COLUMNS` as
        :meth:`AlertEvent.as_row` gives them, in any order.  Returns how many
        were kept (rows with an unknown state are skipped).  No callbacks run.

        Events join the history (oldest dropped past ``max_events``).  For
        each (rule, target) of a loaded rule that has not been evaluated
        yet, the latest event restores its state, so an alert firing before
        a restart is not notified again (repeats continue from its last
        notification) and a resolve's cooldown still holds.  A row without a
        from-state or severity (written by something else) chains from the
        previous event of its (rule, target) and takes the rule's severity.
        """
        parsed: list[AlertEvent] = []
        with self._lock:
            rules = dict(self._rules)
        last: dict[tuple[str, str], State] = {}
        for row in sorted(rows, key=lambda r: float(r[0])):
            at_s, target, rule_name, from_text, state_text, value, threshold, severity_text, kind_text, message = row
            if state_text not in STATES:
                continue
            state = cast(State, state_text)
            at, key, text = float(at_s), (str(rule_name), str(target)), str(message or "")
            rule = rules.get(key[0])
            frm = cast(State, from_text) if from_text in STATES else last.get(key, "normal")
            severity = (
                cast(Severity, severity_text) if severity_text in SEVERITIES
                else rule.severity if rule is not None else "warning"
            )
            kind: Literal["transition", "repeat"] = (
                "repeat" if kind_text == "repeat" or (kind_text is None and frm == state == "firing") else "transition"
            )
            if threshold is None and rule is not None:
                resolving = state == "recovering" or (state == "normal" and frm in ("firing", "recovering"))
                threshold = rule.recovery_threshold if resolving else rule.threshold
            reading = None if value is None else float(value)
            parsed.append(AlertEvent(at, key[0], key[1], frm, state, reading,
                                     None if threshold is None else float(threshold), severity, text, kind))
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
