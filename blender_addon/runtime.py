"""Lifetime of the engine, the collectors and the one persistent timer.

Threads and what they may touch:

- the **main thread** (the timer, operators, draw) owns everything ``bpy``
  and the :class:`Runtime` fields;
- a **lifecycle worker** opens/closes the ``Monitor`` (its history file is
  I/O) and starts/stops collectors (``stop`` joins their threads);
- **check workers** run ``check_once`` for "Test connection";
- **action workers** send one action each (interrupt, delete a pending
  prompt, free memory, skip, unload a model: ``run_action``), only after
  the user confirmed it; the answer shows under the backend's row;
- the collectors' own workers poll the backends.

Workers never touch ``bpy``: they get plain values (``BackendConfig``s,
paths) and hand results back through one ``queue.SimpleQueue`` that
:func:`tick` drains.  The tick itself does no file or network I/O: it reads
one engine snapshot (plus a few in-memory series for sparklines and the
job tracker's bounded reads), builds the :mod:`view` and tags the sidebar
for redraw only when the view changed.

The monitor is published to ``movie_director_metrics.shared()`` (the
lifecycle worker does it right after opening it, at enable and after every
reopen), so other add-ons and scripts in this Blender record into it
without looking for it; :meth:`Runtime.shutdown` withdraws it first thing
at disable, so their calls then drop (counted by ``shared()``, never
raising) instead of reaching a monitor being torn down.

While no 3D view shows the sidebar on the add-on's tab, the tick keeps the
engine, collectors and alerts going but builds no view (the engine reads,
the per-service series and the Compare rows are what a tick costs), and
nothing is tagged for redraw; the panels ask for an immediate refresh when
they draw a view built before the sidebar opened.  ``make bench-blender``
measures what is left.

Headless (``bpy`` as a module, ``blender -b``) timers never fire, so tests
and benchmarks call :func:`tick` directly; :func:`wait_idle` joins the
workers first.  Headless, nothing can be seen or not seen, so the view is
always built.
"""

from __future__ import annotations

import dataclasses
import math
import queue
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import bpy

from . import jobs_view as JV
from . import outages_view as OV
from . import view as V
from . import workers
from .alert_banner import NONE as NO_BANNER
from .alert_banner import AlertBanner, build_banner, tag_status_bars
from .config import SOURCE_FILE, Config, default_storage_path, read_config
from .file_config import FileConfig, FileWatcher, resolve_path
from .smoothing import BarSmoother

__all__ = ["Config", "Runtime", "default_storage_path", "get", "read_config", "register", "tick", "unregister", "wait_idle"]

#: Points in a service's sparkline.
SPARK_POINTS = 24
#: Names of the alert rules the add-on keeps in line with its thresholds.
RULE_SLOW, RULE_FAILING = "blender:slow", "blender:failing"
#: Engine services of the LLM tracker.
LLM_SERVICE_PREFIX = "llm:"
#: The sidebar tab of the panels (``bl_category``).
SIDEBAR_CATEGORY = "Movie Director"
#: ``Region.active_panel_category`` of a sidebar that has not drawn its
#: tabs yet (or has none): it may be showing our panels.
_UNKNOWN_CATEGORIES = ("", "UNSUPPORTED")
#: The Jobs table's statistics are read again when its range or grouping
#: changes, when a job finished, and at least this often (the range rolls
#: on); otherwise a tick reuses them (they are most of the panel's cost,
#: see jobs_view.read_stats).  Running and recent jobs are read every tick.
JOBS_STATS_EVERY_S = 10.0
#: The Outages panel is read again when a backend's state changes and at
#: least this often (deriving incidents reads the engine's health runs).
OUTAGES_EVERY_S = 5.0
#: Seconds to wait for workers at unregister (collectors join within 3 s;
#: a check is bounded by its connect + read timeouts).
SHUTDOWN_TIMEOUT_S = 8.0


# ---- the runtime ------------------------------------------------------------------


@dataclass
class Runtime:
    monitor: Any = None
    collectors: Any = None
    applied: Config | None = None
    view: V.DashboardView = V.EMPTY
    #: Bumped whenever ``view`` changes (charts cache on it).
    version: int = 0
    interval_s: float = 2.0
    storage_note: str = ""
    collector_note: str = ""
    error: str = ""
    checks: dict[str, tuple[Any, float]] = field(default_factory=dict)
    check_errors: dict[str, str] = field(default_factory=dict)
    checking: set[str] = field(default_factory=set)
    #: backend -> (action, target, ok, message, epoch) of the last action's answer.
    actions: dict[str, tuple[str, str | None, bool, str, float]] = field(default_factory=dict)
    #: backend -> label of the action being sent to it now.
    acting: dict[str, str] = field(default_factory=dict)
    #: The ``alerts.AlertManager`` the tick evaluates: the monitor's own
    #: (``monitor.alerts``) or, for an engine without one, the add-on's.
    alerts: Any = None
    engine_alerts: Any = None
    alerts_note: str = ""
    #: Firing alerts for the status bar and the top panel's header, built
    #: every tick (also while no sidebar shows the panels).
    banner: AlertBanner = NO_BANNER
    #: The ``alerts.Notifier`` sending the alert manager's events to the
    #: configured targets (its own worker thread); None without targets.
    notifier: Any = None
    _notify_key: Any = None
    #: ``monitor.llm`` (an ``llm.LlmTracker``), None when not available.
    llm: Any = None
    llm_note: str = ""
    #: ``monitor.jobs`` (a ``jobs.JobTracker``), None when not available.
    jobs: Any = None
    jobs_note: str = ""
    #: What backends.toml/alerts.toml said last (config source "file").
    file_config: FileConfig | None = None
    #: The worker reading those files; None while the list is the source.
    _watcher: FileWatcher | None = None
    #: Names of the rules loaded from alerts.toml into the alert manager.
    _file_rules: tuple[str, ...] = ()
    #: The manager those rules were loaded into.
    _rules_manager: Any = None
    #: Why the monitor is not published to ``shared()``, "" when it is.
    publish_note: str = ""
    _alerts_key: Any = None
    ticks: int = 0
    redraws: int = 0
    #: Ticks that built no view because no sidebar showed the panels.
    hidden_ticks: int = 0
    #: ``view`` was built before the panels became visible (see
    #: :meth:`request_refresh`).
    stale: bool = False
    #: No window can show anything (``bpy`` as a module, ``blender -b``):
    #: the view is always built, for the tests and benchmarks that read it.
    headless: bool = field(default_factory=lambda: bool(bpy.app.background))
    #: The one-shot timer request_refresh() registered and that has not run.
    _refresh_timer: Any = None
    _gen: int = 0
    _results: queue.SimpleQueue[Any] = field(default_factory=queue.SimpleQueue)
    _lifecycle: threading.Thread | None = None
    _check_threads: list[threading.Thread] = field(default_factory=list)
    _compare_key: Any = None
    #: (what they were read for, jobs_view.read_stats(...), monotonic time).
    _jobs_stats: Any = None
    #: (what they were read for, monitor.vram_fits(), monotonic time).
    _vram: Any = None
    #: (what they were read for, outages_view.OutagesView, monotonic time).
    _outages: Any = None
    _last_logged: str = ""
    #: Bar smoothing between ticks (see smoothing.py).
    _smoother: BarSmoother = field(default_factory=BarSmoother)
    #: First-seen order of the services not in the preferences, and of
    #: the LLM models: rows keep their place from one tick to the next.
    _seen_services: list[str] = field(default_factory=list)
    _seen_models: list[str] = field(default_factory=list)
    #: Services that have shown VRAM: the row stays when a reading is missing.
    _had_vram: set[str] = field(default_factory=set)
    stopped: bool = False

    # ---- worker results ---------------------------------------------------------

    def _drain(self) -> None:
        while True:
            try:
                msg = self._results.get_nowait()
            except queue.Empty:
                return
            if msg[0] == "opened":
                _, gen, monitor, collectors, note, cnote, error, extras = msg
                if gen != self._gen or self.stopped:  # superseded: close what it opened
                    workers.stop_collectors(collectors)
                    if monitor is not None and monitor is not self.monitor:
                        monitor.close()
                    continue
                self.monitor, self.collectors = monitor, collectors
                if extras is not None:  # a newly opened monitor
                    self.engine_alerts, self.llm, self.jobs = extras["alerts"], extras["llm"], extras["jobs"]
                    self.alerts_note, self.llm_note, self.jobs_note = extras["alerts_note"], extras["llm_note"], extras["jobs_note"]
                    self.publish_note = extras.get("publish_note", "")
                    self._alerts_key = None
                self.storage_note = note or self.storage_note
                self.collector_note, self.error = cnote, error
            elif msg[0] == "checked":
                _, names, statuses, at, error = msg
                self.checking.difference_update(names)
                for st in statuses:
                    self.checks[st.name] = (st, at)
                    self.check_errors.pop(st.name, None)
                if error:
                    for n in names:
                        self.check_errors[n] = error
            elif msg[0] == "file_config":
                fc = msg[1]
                if self._watcher is not None and fc.path == str(self._watcher.path):
                    self.file_config = fc
            elif msg[0] == "acted":
                _, name, action, target, ok, message, at = msg
                self.acting.pop(name, None)
                self.actions[name] = (action, target, ok, message, at)

    def _busy(self) -> bool:
        return self._lifecycle is not None and self._lifecycle.is_alive()

    def _apply(self, cfg: Config) -> None:
        """Starts the lifecycle worker that brings engine and collectors in
        line with ``cfg`` (one at a time; a later tick applies newer edits)."""
        if self._busy():
            return
        reopen = self.monitor is None or self.applied is None or self.applied.engine_key() != cfg.engine_key()
        if not reopen and self.applied is not None and self.applied.collector_key() == cfg.collector_key():
            self.applied = cfg  # thresholds, refresh: nothing to restart
            return
        self._gen += 1
        old_m, old_c = self.monitor, self.collectors
        if reopen or not hasattr(old_c, "update"):
            self.collectors = None  # stopped and replaced: nothing to show meanwhile
        if reopen:
            self.monitor = self.jobs = self._jobs_stats = self._vram = self._outages = None
        self.applied = cfg
        gen = self._gen
        self._lifecycle = threading.Thread(
            target=workers.lifecycle_job,
            args=(self._results, gen, old_m, old_c, reopen, cfg, lambda: gen == self._gen and not self.stopped),
            name="mdm-lifecycle",
            daemon=True,
        )
        self._lifecycle.start()

    # ---- the tick ---------------------------------------------------------------

    def update(self, context: Any) -> None:
        from . import preferences, properties

        self.ticks += 1
        self._drain()
        self._check_threads = [t for t in self._check_threads if t.is_alive()]
        if self.stopped:
            return
        prefs = preferences.get(context)
        if prefs is None:
            return
        try:
            import movie_director_metrics  # noqa: F401  (the bundled engine)
        except ImportError as e:
            self._set_view(context, V.DashboardView(status="error", message=f"Engine not installed: {e}"))
            return
        self._watch_file(prefs)
        cfg = read_config(prefs, self.file_config)
        self.interval_s = cfg.refresh_s
        if cfg != self.applied or self.monitor is None and not self._busy():
            self._apply(cfg)
        self._ensure_alerts(cfg)
        self._ensure_notifier(cfg)
        if self.alerts is not None:
            self.alerts.evaluate()
        self._update_banner(context)
        if not self.headless and not visible_sidebars(context):
            # Nobody can see a view: don't build one (it is most of a
            # tick's cost) and tag nothing.  The panels call
            # request_refresh() when they draw the stale one.
            self.stale = True
            self.hidden_ticks += 1
            return
        self.stale = False
        ws = properties.state(context)
        new = self._build_view(cfg, ws)
        self._set_view(context, new)
        if ws is not None:
            self._update_compare(ws)

    def _watch_file(self, prefs: Any) -> None:
        """Starts, moves or stops the worker that reads backends.toml and
        alerts.toml, as the preferences' configuration source says."""
        want = resolve_path(prefs.config_file) if prefs.config_source == SOURCE_FILE else None
        have = self._watcher.path if self._watcher is not None else None
        if want == have:
            return
        if self._watcher is not None:
            self._watcher.stop(timeout_s=0.0)  # it exits at its next look; not joined on the main thread
            self._check_threads.append(self._watcher.thread)
        self._watcher, self.file_config = None, None
        if want is not None:
            self._watcher = FileWatcher(want, self._results).start()

    def _load_file_rules(self, manager: Any, rules_text: str) -> None:
        """The rules of alerts.toml in the manager, in place of those the
        previous text loaded (a rule whose definition is unchanged keeps
        its state; the file was checked by the watcher)."""
        from movie_director_metrics.alerts import parse_rules

        rules = parse_rules(rules_text) if rules_text else []
        new = {r.name: r for r in rules}
        for name in self._file_rules:
            if name not in new or next((r for r in manager.rules if r.name == name), None) != new[name]:
                manager.remove_rule(name)
        have = {r.name for r in manager.rules}
        for rule in rules:
            if rule.name not in have:
                manager.add_rule(rule)
        self._file_rules = tuple(new)

    def _ensure_notifier(self, cfg: Config) -> None:
        """A notifier for ``cfg.notify`` attached to the alert manager; a
        new one when the targets or the manager change (targets of a
        running notifier are fixed), the old one closed on a worker (its
        close joins a thread that may be inside a request)."""
        key = (cfg.notify, id(self.alerts))
        if key == self._notify_key:
            return
        self._notify_key = key
        old, self.notifier = self.notifier, None
        if old is not None:
            t = threading.Thread(target=old.close, name="mdm-notify-close", daemon=True)
            self._check_threads.append(t)
            t.start()
        if not cfg.notify or self.alerts is None:
            return
        try:
            from movie_director_metrics.alerts import Notifier

            # Called on the thread that evaluates (this one): never from the
            # notifier's worker, which must not touch bpy.
            n = Notifier(cfg.notify, allow_remote=lambda: bool(bpy.app.online_access))
            n.attach(self.alerts)
            self.notifier = n
        except Exception as e:  # an engine without notifications, or a refused target
            self.alerts_note = f"notifications off: {type(e).__name__}: {e}"

    def applied_notify_errors(self) -> tuple[tuple[str, str], ...]:
        """Notification targets of the preferences that were refused."""
        return self.applied.notify_errors if self.applied is not None else ()

    def notify_test(self) -> str:
        """Queues a test event to every notification target (it goes out on
        the notifier's worker); returns what to report."""
        n = self.notifier
        if n is None:
            return "error: no notification target is set up (or none is enabled)"
        from movie_director_metrics.alerts import AlertEvent

        ev = AlertEvent(time.time(), "test", "Movie Director", "normal", "firing", None, None, "critical",
                        "normal -> firing: [critical] test on Movie Director: a test notification from Blender")
        n.submit(ev)
        return f"Test sent to {', '.join(t.name for t in n.targets)}: the result shows in the Alerts panel"

    def _update_banner(self, context: Any) -> None:
        """The firing alerts' banner; the status bars and sidebars are
        tagged for redraw only when it changed."""
        try:
            banner = build_banner(self.alerts.firing()) if self.alerts is not None else NO_BANNER
        except Exception:  # an engine whose alerts API differs: no banner
            banner = NO_BANNER
        if banner != self.banner:
            self.banner = banner
            self.redraws += tag_status_bars(context) + tag_sidebars(context)

    def _set_view(self, context: Any, new: V.DashboardView) -> None:
        if new != self.view:
            self.view = new
            self.version += 1
            self.redraws += tag_sidebars(context)

    def _ensure_alerts(self, cfg: Config) -> None:
        """Keeps the add-on's two rules in the alert manager in line with
        the thresholds in the preferences (p95 latency above the latency
        threshold, success rate below the minimum, each for a minute, on
        every service).  Other rules in the manager are left alone; a
        snooze survives (rules are compared without ``snooze_until``)."""
        key = (id(self.monitor), id(self.engine_alerts), cfg.default_threshold_ms, cfg.success_min, cfg.rules_text)
        if key == self._alerts_key:
            return
        self._alerts_key = key
        self.alerts = None
        if self.monitor is None:
            return
        try:
            from movie_director_metrics.alerts import AlertManager, AlertRule
        except ImportError:
            return
        try:
            manager = self.engine_alerts if self.engine_alerts is not None else AlertManager(self.monitor)
            wanted = [
                AlertRule(name=RULE_SLOW, target="*", metric="p95_ms", comparator=">",
                          threshold=cfg.default_threshold_ms, window="5m", for_s=60, keep_firing_for_s=60),
                AlertRule(name=RULE_FAILING, target="*", metric="success_rate", comparator="<",
                          threshold=cfg.success_min, window="5m", for_s=60, keep_firing_for_s=60),
            ]
            have = {r.name: r for r in manager.rules}
            for rule in wanted:
                old = have.get(rule.name)
                if old is not None and dataclasses.replace(old, snooze_until=None) == rule:
                    continue
                if old is not None:
                    manager.remove_rule(rule.name)
                manager.add_rule(dataclasses.replace(rule, snooze_until=getattr(old, "snooze_until", None)))
            if manager is not self._rules_manager:
                self._file_rules = ()  # a new manager holds none of them
            self._rules_manager = manager
            self._load_file_rules(manager, cfg.rules_text)
            self.alerts = manager
        except Exception as e:  # an engine whose alerts API differs: no alerts, said once
            self.alerts_note = f"{type(e).__name__}: {e}"
            print(f"movie_director_metrics: alerts disabled: {self.alerts_note}", file=sys.stderr)

    def effective_window(self, window: str) -> tuple[str, str]:
        if window in ("7d", "30d") and (self.monitor is None or self.monitor.storage_path is None):
            return "24h", f"{window} needs history storage (add-on preferences); showing 24h"
        return window, ""

    def _build_view(self, cfg: Config, ws: Any) -> V.DashboardView:
        mon = self.monitor
        blocked = dict(cfg.blocked)
        online_note = "" if cfg.allow_remote else "Remote hosts need Online Access"
        if mon is None:
            status = "error" if self.error else "starting"
            rows = tuple(V.build_backend_row(c, None, None, time.time(), blocked.get(c.name, "")) for c in cfg.backends)
            return V.DashboardView(status=status, message=self.error or "Starting the metrics engine…", backends=rows, online_note=online_note)
        window, window_note = self.effective_window(ws.window if ws is not None else "5m")
        snap = mon.snapshot(window)
        statuses = self.collectors.status() if self.collectors is not None else {}
        now = time.time()
        thresholds = dict(cfg.thresholds)
        kinds = {c.name: c.kind for c in cfg.backends}
        backends = []
        for c in cfg.backends:
            name = c.name
            reason = blocked.get(name, "")
            if not reason and name in self.check_errors:
                reason = f"check failed: {self.check_errors[name]}"
            backends.append(
                V.build_backend_row(c, statuses.get(name), snap.get(name), now, reason, self.checks.get(name), name in self.checking,
                                    self.actions.get(name), self.acting.get(name, ""))
            )
        for name, why in cfg.blocked:  # invalid entries: no BackendConfig
            if name not in kinds:
                backends.append(V.BackendRow(name=name, kind="?", url="", state="blocked", reason=why))
        # LLM models (engine services "llm:<provider>/<model>") have their
        # own section; Compare still lists them.  Rows: the preferences'
        # order, then the others in first-seen order.
        order = [c.name for c in cfg.backends if c.name in snap]
        order += _remember(self._seen_services, [n for n in snap if n not in kinds and not n.startswith(LLM_SERVICE_PREFIX)])
        self._smoother.begin((window, cfg.thresholds, cfg.default_threshold_ms, cfg.success_min), time.monotonic())
        services = []
        for name in order:
            stats = snap[name]
            _, values = mon.series(name, "avg_ms", window, SPARK_POINTS)
            s = V.build_service(
                name,
                kinds.get(name, "recorded"),
                stats,
                statuses.get(name),
                thresholds.get(name, cfg.default_threshold_ms),
                cfg.success_min,
                values.tolist(),
                keep_vram=name in self._had_vram,
            )
            if s.vram is not None:
                self._had_vram.add(name)
            services.append(self._smooth(s))
        self._smoother.end()
        llm = V.build_llm(self.llm, window, self.llm_note)
        if llm.models:
            rank = {m: i for i, m in enumerate(_remember(self._seen_models, [m.model for m in llm.models]))}
            llm = dataclasses.replace(llm, models=tuple(sorted(llm.models, key=lambda m: rank[m.model])))
        message = self.error or self.collector_note
        return V.DashboardView(
            status="error" if self.error else "running",
            message=message,
            window=window,
            window_note=window_note,
            storage_text=self.storage_note,
            online_note=online_note,
            backends=tuple(backends),
            services=tuple(services),
            llm=llm,
            alerts=V.build_alerts(self.alerts, now, format_metric, self.alerts_note, self._notify_status()),
            jobs=self._build_jobs(ws),
            outages=self._build_outages(tuple(backends)),
        )

    def _notify_status(self) -> Any:
        try:
            return self.notifier.status() if self.notifier is not None else {}
        except Exception:
            return {}

    def _build_jobs(self, ws: Any) -> JV.JobsView:
        """The Jobs panel: running, recent and the per-model/workflow table
        over the panel's own range (bounded reads of ``monitor.jobs``)."""
        window, note = self.effective_window(ws.jobs_window if ws is not None else "1h")
        by = ws.jobs_by if ws is not None else JV.BY_MODEL
        sort = ws.jobs_sort if ws is not None else JV.SORT_COUNT
        reverse = bool(ws.jobs_reverse) if ws is not None else False
        v = JV.build_jobs(self.jobs, window, by, sort, reverse, self.jobs_note, self.publish_note, self._job_stats(window, by),
                          self._vram_fits())
        return dataclasses.replace(v, window_note=note) if note else v

    def _job_stats(self, window: str, by: str) -> JV.Stats | None:
        """The table's statistics: read again only when they may differ
        (see JOBS_STATS_EVERY_S); None lets build_jobs read them itself
        (and say what failed)."""
        tracker = self.jobs
        if tracker is None:
            return None
        try:
            newest = tracker.recent(limit=1)
            key = (tracker, window, by, newest[0] if newest else None)
            now = time.monotonic()
            cached = self._jobs_stats
            if cached is not None and cached[0] == key and now - cached[2] < JOBS_STATS_EVERY_S:
                return cached[1]
            stats = JV.read_stats(tracker, window, by)
        except Exception:
            self._jobs_stats = None
            return None
        self._jobs_stats = (key, stats, now)
        return stats

    def _build_outages(self, backends: tuple[V.BackendRow, ...]) -> OV.OutagesView:
        """The Outages panel: read again when a backend's state changed or
        every OUTAGES_EVERY_S (memory only: the engine's health runs)."""
        mon = self.monitor
        names = [b.name for b in backends if b.kind != "?"]
        key = (id(mon), tuple((b.name, b.state) for b in backends))
        now = time.monotonic()
        cached = self._outages
        if cached is not None and cached[0] == key and now - cached[2] < OUTAGES_EVERY_S:
            return cached[1]
        has = mon is not None and hasattr(mon, "incidents") and hasattr(mon, "heartbeat")
        known = set(mon.services()) if has else set()
        view = OV.build_outages(
            names,
            (lambda n: mon.heartbeat(n, span_s=OV.SPAN_S, cells=OV.CELLS)) if has else None,
            (lambda: mon.incidents("24h", services=[n for n in names if n in known], history=False))
            if has
            else None,
            why_not="" if has else "not in this engine build",
        )
        self._outages = (key, view, now)
        return view

    def _vram_fits(self) -> Any:
        """``monitor.vram_fits()``, read again only when a job finished or
        every JOBS_STATS_EVERY_S (the gauges move; the per-job lookups are
        engine reads); () when the engine has none or it fails."""
        mon, tracker = self.monitor, self.jobs
        if mon is None or tracker is None or not hasattr(mon, "vram_fits"):
            return ()
        try:
            newest = tracker.recent(limit=1)
            key = (tracker, newest[0] if newest else None)
            now = time.monotonic()
            cached = self._vram
            if cached is not None and cached[0] == key and now - cached[2] < JOBS_STATS_EVERY_S:
                return cached[1]
            fits = tuple(mon.vram_fits())
        except Exception:
            self._vram = None
            return ()
        self._vram = (key, fits, now)
        return fits

    def _smooth(self, s: V.ServiceView) -> V.ServiceView:
        """``s`` with its bars' lengths smoothed (texts and levels as they are)."""

        def one(b: V.Bar) -> V.Bar:
            f = self._smoother.factor((s.name, b.label), b.factor, b.level)
            return b if f == b.factor else dataclasses.replace(b, factor=f)

        return dataclasses.replace(
            s,
            avg=one(s.avg),
            p95=one(s.p95),
            success=one(s.success),
            uptime=one(s.uptime),
            vram=None if s.vram is None else one(s.vram),
        )

    def _update_compare(self, ws: Any) -> None:
        """The Compare table's rows (a WindowManager collection, so a UIList
        can sort them); rewritten only when the ranking changed."""
        mon = self.monitor
        rows: list[tuple[str, float | None]] = []
        metric = ws.compare_metric
        if mon is not None:
            window, _ = self.effective_window(ws.compare_window)
            rows = mon.compare(metric, window)
        # as_pointer: a file load brings a new WindowManager with empty rows
        key = (ws.as_pointer(), metric, tuple((n, None if v is None else round(v, 6)) for n, v in rows))
        if key == self._compare_key:
            return
        self._compare_key = key
        finite = [v for _, v in rows if v is not None and math.isfinite(v)]
        top = max(finite) if finite else 0.0
        coll = ws.compare_rows
        while len(coll) > len(rows):
            coll.remove(len(coll) - 1)
        while len(coll) < len(rows):
            coll.add()
        for rank, ((name, value), item) in enumerate(zip(rows, coll), start=1):
            has = value is not None and math.isfinite(value)
            item.name = name
            item.rank = rank
            item.has_value = has
            item.value = float(value) if has else 0.0
            item.text = format_metric(metric, value)
            item.factor = (float(value) / top) if has and top > 0 else 0.0
        if ws.compare_index >= len(coll):
            ws.compare_index = max(0, len(coll) - 1)

    def request_refresh(self) -> None:
        """Called by the panels when they draw: a view built before the
        sidebar opened is refreshed at once (a one-shot timer: a draw
        callback may not change data itself) instead of at the next tick."""
        if not self.stale or self._refresh_timer is not None or self.stopped:
            return

        def once() -> None:
            self._refresh_timer = None
            refresh_now()

        self._refresh_timer = once
        bpy.app.timers.register(once, first_interval=0.0)

    def _cancel_refresh(self) -> None:
        # A timer left registered keeps a headless interpreter from exiting.
        timer, self._refresh_timer = self._refresh_timer, None
        if timer is not None and bpy.app.timers.is_registered(timer):
            bpy.app.timers.unregister(timer)

    # ---- actions from operators -------------------------------------------------

    def test_connection(self, names: list[str]) -> str:
        """Starts a check of ``names`` (all when empty) on a worker thread;
        the result shows in the Connection panel at the next tick.  Returns
        what to report, prefixed "error:" when nothing was started."""
        cfg = self.applied
        if cfg is None:
            return "error: the add-on has not started yet"
        configs = [c for c in cfg.backends if not names or c.name in names]
        if not configs:
            return f"error: no backend named {', '.join(names)}"
        names = [c.name for c in configs]
        busy = [n for n in names if n in self.checking]
        if busy:
            return f"error: already testing {', '.join(busy)}"
        self.checking.update(names)
        t = threading.Thread(
            target=workers.check_job,
            args=(self._results, names, configs, cfg.allow_remote, self.monitor),
            name="mdm-check",
            daemon=True,
        )
        self._check_threads.append(t)
        t.start()
        return f"Testing {', '.join(names)}…"

    def run_action(self, backend: str, kind: str, action: str, target: str = "") -> str:
        """Sends ``action`` to ``backend`` on a worker thread (one at a time
        per backend); its answer shows under the backend's row at the next
        tick.  Remote backends obey Online Access as the collectors do.
        Returns what to report, prefixed "error:" when nothing was started."""
        cfg = self.applied
        if cfg is None or self.stopped:
            return "error: the add-on has not started yet"
        bc = next((c for c in cfg.backends if c.name == backend), None)
        if bc is None:
            return f"error: no backend named {backend!r}"
        spec = V.action_spec(bc.kind, action)
        if spec is None or bc.kind != kind:
            have = ", ".join(a.action for a in V.actions_of(bc.kind)) or "none"
            return f"error: {backend} is a {bc.kind} backend: its actions are {have}"
        if not bc.enabled:
            return f"error: {backend} is disabled in the preferences"
        if spec.needs_target and not target:
            return f"error: {spec.label} needs a {spec.target}"
        if backend in self.acting:
            return f"error: already sending {self.acting[backend]} to {backend}"
        self.acting[backend] = spec.label
        t = threading.Thread(
            target=workers.action_job,
            args=(self._results, backend, bc, action, target or None, cfg.allow_remote),
            name="mdm-action",
            daemon=True,
        )
        self._check_threads.append(t)
        t.start()
        who = f"{spec.label} {V.short_target(target)}".strip()
        return f"{who} on {backend}: sent, the answer shows under its row"

    def action_targets(self, backend: str, spec: V.ActionSpec) -> list[str]:
        """What ``spec`` can act on at ``backend`` now, from the view: the
        prompt ids of its running (interrupt) or queued (delete) rows in
        the Jobs panel, the models its row says are loaded (unload)."""
        v = self.view
        if spec.target == "model":
            return next((list(b.models) for b in v.backends if b.name == backend), [])
        if spec.target == "prompt_id" and v.jobs is not None:
            state = "queued" if spec.action == "delete" else "running"
            return [r.job_id for r in v.jobs.running if r.service == backend and r.state == state and r.job_id]
        return []

    def threads(self) -> list[threading.Thread]:
        """Worker threads this runtime started that are still alive."""
        out = [t for t in self._check_threads if t.is_alive()]
        if self._lifecycle is not None and self._lifecycle.is_alive():
            out.append(self._lifecycle)
        return out

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """Joins the lifecycle, check and action workers (tests, benchmarks), then
        drains their results; True when none is left running."""
        deadline = time.monotonic() + timeout_s
        for t in self.threads():
            t.join(max(0.0, deadline - time.monotonic()))
        self._drain()
        return not self.threads()

    def shutdown(self) -> None:
        """Withdraws the monitor from ``shared()``, stops every worker and
        closes the engine (its history flushed).  Leaves no thread of ours
        running unless one ignores its timeout."""
        self.stopped = True
        self._gen += 1
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        if self.notifier is not None:
            self.notifier.close()
            self.notifier = None
        if self.monitor is not None and hasattr(self.monitor, "unpublish"):
            # First: other add-ons' calls drop from now on instead of
            # reaching a monitor whose collectors and file are going.
            self.monitor.unpublish()
        self._cancel_refresh()
        self.wait_idle(SHUTDOWN_TIMEOUT_S)
        workers.stop_collectors(self.collectors)
        if self.monitor is not None:
            self.monitor.close()
        self.monitor = self.collectors = self.alerts = self.engine_alerts = self.llm = self.jobs = None
        self._jobs_stats = self._vram = self._outages = None
        self.banner = NO_BANNER
        self._drain()  # a late "opened" is closed by _drain (gen mismatch)
        self.view = V.EMPTY


def _remember(seen: list[str], names: list[str]) -> list[str]:
    """``names`` in first-seen order; ``seen`` (kept across ticks) learns
    the new ones."""
    order = V.stable_order(names, seen)
    known = set(seen)
    seen.extend(n for n in order if n not in known)
    return order


def format_metric(metric: str, value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    if metric.endswith("_ms"):
        return V.fmt_ms(value)
    if metric == "success_rate" or metric == "error_rate":
        return V.fmt_pct(value)
    if metric == "uptime_pct" or metric.endswith("_pct"):
        return V.fmt_pct(value / 100.0)
    if metric.endswith("_bytes"):
        return V.fmt_bytes(value)
    if metric in ("rpm",):
        return f"{value:.1f}/min"
    return f"{value:.2f}"


def visible_sidebars(context: Any) -> list[Any]:
    """The sidebars (UI regions of 3D viewports) that may be showing the
    panels: open, and on the add-on's tab or on a tab not known yet.  A
    sidebar on another tab draws none of our panels."""
    out = []
    wm = getattr(context, "window_manager", None)
    for win in getattr(wm, "windows", ()):
        screen = win.screen
        if screen is None:
            continue
        for area in screen.areas:
            if area.type != "VIEW_3D" or not getattr(area.spaces.active, "show_region_ui", True):
                continue
            for region in area.regions:
                if region.type != "UI":
                    continue
                category = getattr(region, "active_panel_category", "")
                if category == SIDEBAR_CATEGORY or category in _UNKNOWN_CATEGORIES:
                    out.append(region)
    return out


def tag_sidebars(context: Any) -> int:
    """Tags the sidebars that may show the panels for redraw; returns how
    many were tagged."""
    regions = visible_sidebars(context)
    for region in regions:
        region.tag_redraw()
    return len(regions)


# ---- module-level entry points ------------------------------------------------------

_runtime: Runtime | None = None


def get() -> Runtime:
    """The running :class:`Runtime` (a stopped, empty one when unregistered)."""
    return _runtime if _runtime is not None else Runtime(stopped=True)


def tick() -> float | None:
    """The persistent timer: one engine read, a view, a redraw when it
    changed.  Returns the next interval; None (stop) once unregistered.
    Never raises: an error is shown in the panel and printed once."""
    rt = _runtime
    if rt is None or rt.stopped:
        return None
    try:
        rt.update(bpy.context)
    except Exception as e:
        msg = f"{type(e).__name__}: {e}"
        if msg != rt._last_logged:
            rt._last_logged = msg
            print(f"movie_director_metrics: timer tick failed: {msg}", file=sys.stderr)
            traceback.print_exc()
        rt.error = f"Internal error: {msg}"
    return rt.interval_s


def refresh_now() -> None:
    """Runs the tick now (a changed range or preference shows at once)."""
    if _runtime is not None and not _runtime.stopped:
        tick()


def config_changed() -> None:
    refresh_now()


def wait_idle(timeout_s: float = 10.0) -> bool:
    return get().wait_idle(timeout_s)


def register() -> None:
    global _runtime
    _runtime = Runtime()
    # Persistent: keeps running across File › Open; the first tick applies
    # the preferences (they exist only after registration finishes).
    bpy.app.timers.register(tick, first_interval=0.1, persistent=True)


def unregister() -> None:
    global _runtime
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)
    rt, _runtime = _runtime, None
    if rt is not None:
        rt.shutdown()
