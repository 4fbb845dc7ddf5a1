"""Threshold alerts with a pending period, hysteresis, repeats, cooldown,
maintenance windows and snoozes, evaluated over the monitor's windows.

One rule watches one figure of one target::

    [[rule]]
    name = "comfyui-slow"
    target = "comfyui"          # a service, "*" for every service, "model:<name>" or "provider:<name>"
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

Notifications: ``[[notify]]`` tables in the same file
(:class:`NotifyTarget`, :func:`parse_notify`, :func:`load_alerts_file`)
and a :class:`Notifier` that sends the events of an attached manager to
webhooks, ntfy, Discord, Slack or the desktop from its own thread (see
:mod:`.notify`).
"""

from __future__ import annotations

from .manager import AlertEvent, AlertManager, AlertState
from .notify import Notifier, NotifyStatus
from .rules import (
    COMPARATORS,
    DERIVED_METRICS,
    LLM_METRICS,
    SERVICE_METRICS,
    SEVERITIES,
    SOURCE_PREFIXES,
    STATES,
    AlertRule,
    Comparator,
    MetricSource,
    Severity,
    State,
    parse_rules,
)
from .targets import (
    NOTIFY_KINDS,
    NOTIFY_STATES,
    AlertsFile,
    NotifyKind,
    NotifyTarget,
    load_alerts_file,
    parse_notify,
    parse_notify_tables,
    redact_url,
)

__all__ = [
    "COMPARATORS",
    "DERIVED_METRICS",
    "LLM_METRICS",
    "NOTIFY_KINDS",
    "NOTIFY_STATES",
    "SERVICE_METRICS",
    "SEVERITIES",
    "SOURCE_PREFIXES",
    "STATES",
    "AlertEvent",
    "AlertManager",
    "AlertRule",
    "AlertState",
    "AlertsFile",
    "Comparator",
    "MetricSource",
    "Notifier",
    "NotifyKind",
    "NotifyStatus",
    "NotifyTarget",
    "Severity",
    "State",
    "load_alerts_file",
    "parse_notify",
    "parse_notify_tables",
    "parse_rules",
    "redact_url",
]
