"""``movie-director-metrics``: the command line.

::

    movie-director-metrics watch [--demo] [--config PATH] [--window 5m] [--refresh 2] [--once]
    movie-director-metrics check [--config PATH] [--allow-remote] [--json]
    movie-director-metrics export PATH [--format csv|json] [--window 24h | --start T [--end T]]
    movie-director-metrics serve [--host 127.0.0.1] [--port 9464] [--demo] [--config PATH] [--rules PATH]
    movie-director-metrics jobs [--window 24h] [--by model|workflow|service] [--service S] [--json]
    movie-director-metrics incidents [--window 24h | --start T [--end T]] [--service NAME] [--json]
    movie-director-metrics action BACKEND ACTION [TARGET] [--yes] [--config PATH] [--allow-remote]
    movie-director-metrics --version

``watch`` and ``serve`` poll the configured backends (``backends.toml``,
else the standard local ports) with the collectors and keep history in
the default file, falling back to memory with a warning when another
process holds it.  ``--demo`` watches two simulated backends on loopback
instead (history in memory unless ``--storage`` is given, so demo numbers
never mix with real ones).

Exit codes: 0 success (``check``: every enabled backend is up); 1 a
backend is not up, or an operation failed; 2 bad usage or a bad config
file.  The dashboard needs ``rich`` (the ``cli`` extra); nothing else here
does.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import json
import math
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal, TextIO

from .collectors.config import BackendConfig, default_alerts_path, default_config_path, load_config
from .errors import ConfigError, InvalidWindowError, MetricsError, StorageError, StorageLockedError
from ._core import ServiceStats, __version__
from .monitor import Monitor, StorageArg
from .paths import expand_user
from .net import is_loopback
from .storage import default_path

if TYPE_CHECKING:
    from .collectors.scheduler import BackendStatus, Collectors
    from .simulator import Simulator

__all__ = ["main"]

PROG = "movie-director-metrics"
#: What to tell a user whose environment lacks the dashboard's dependency.
RICH_MISSING = (
    "the live dashboard needs the 'rich' package: pip install \"movie-director-metrics[cli]\" "
    "(check, export and serve work without it)"
)
#: Sparkline: recent latency over this window, in this many points.
SPARK_WINDOW = "5m"
SPARK_POINTS = 30
SPARK_METRIC = "avg_ms"
#: The heartbeat strip under the table: 24 h in this many cells (30 minutes each).
HEARTBEAT_CELLS = 48

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


# --- argument parsing ----------------------------------------------------------


def _seconds_in(lo: float, hi: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not (math.isfinite(v) and lo <= v <= hi):
            raise argparse.ArgumentTypeError(f"{text} is out of range: expected {lo:g} to {hi:g} seconds")
        return v

    return parse


def _width(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of columns") from None
    if not 40 <= v <= 1000:
        raise argparse.ArgumentTypeError(f"{v} is out of range: expected 40 to 1000 columns")
    return v


def _port(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"{v} is out of range: expected 0 (any free port) to 65535")
    return v


def parse_time(text: str) -> float:
    """UTC epoch seconds from epoch seconds or ISO 8601 (``2025-06-01``,
    ``2025-06-01T12:00``, ``...Z``, ``...+02:00``); a time without an
    offset is UTC, as in the exports."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        t = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: expected epoch seconds or ISO 8601 such as 2025-06-01T12:00Z"
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    return t.timestamp()


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", metavar="PATH", type=Path,
        help=f"backends file (default: {default_config_path()}; the standard local ports if it does not exist)",
    )
    p.add_argument(
        "--allow-remote", action="store_true",
        help="contact backends on other hosts too (off: only loopback; remote ones show as blocked)",
    )


def _add_storage(p: argparse.ArgumentParser, *, recording: bool) -> None:
    g = p.add_mutually_exclusive_group()
    where = f"default: {default_path()}"
    if recording:
        where += "; memory with --demo"
    g.add_argument("--storage", metavar="PATH", type=Path, help=f"history file ({where})")
    if recording:
        g.add_argument("--no-storage", action="store_true", help="keep history in memory only")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Health, latency, queue and resource metrics of AI generation backends "
        "(ComfyUI, A1111/Forge, Ollama, OpenAI-compatible servers).",
        epilog="Exit codes: 0 ok, 1 a backend is not up or an operation failed, 2 bad usage or config.",
    )
    # The one version: the Cargo workspace's, compiled into _core (pyproject takes it from Cargo too).
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    w = sub.add_parser("watch", help="live dashboard of the configured backends", description=(
        "Polls every configured backend and shows a live table: status, latency, success rate, "
        "uptime, queue, processing time, VRAM and recent latency.  Ctrl-C exits."))
    _add_config(w)
    w.add_argument("--demo", action="store_true", help="watch two simulated backends on loopback instead of the config")
    w.add_argument("--refresh", metavar="S", type=_seconds_in(1, 5), default=2.0, help="seconds between frames, 1 to 5 (default 2)")
    w.add_argument("--window", default="5m", help="statistics window: 1m, 5m, 15m, 1h, 24h, 7d ... (default 5m)")
    w.add_argument("--once", action="store_true", help="print one frame after a short warm-up and exit")
    w.add_argument("--warmup", metavar="S", type=_seconds_in(0, 60), default=3.0,
                   help="with --once: longest wait for first data, in seconds (default 3)")
    w.add_argument("--width", metavar="COLUMNS", type=_width, help="layout width (default: the terminal's, or $COLUMNS)")
    w.add_argument("--rules", metavar="PATH", type=Path,
                   help=f"alert rules and notify targets (TOML [[rule]] and [[notify]] tables; default: "
                        f"alerts.toml beside the backends file, {default_rules_path()}, if it exists; "
                        "with --demo, a demo rule)")
    _add_storage(w, recording=True)
    w.set_defaults(func=cmd_watch)

    c = sub.add_parser("check", help="probe every backend once and report", description=(
        "Probes every configured backend once, in parallel.  Exit code 0 when every enabled "
        "backend is up, 1 otherwise (down, blocked or not answering), 2 for a bad config file."))
    _add_config(c)
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.set_defaults(func=cmd_check)

    e = sub.add_parser("export", help="write recorded history to CSV or JSON", description=(
        "Writes statistics per service per time bucket from the history file.  Times are UTC."))
    e.add_argument("path", metavar="PATH", type=Path, help="file to write (replaced atomically)")
    e.add_argument("--format", choices=("csv", "json"), help="default: from PATH's suffix, else csv")
    rng = e.add_mutually_exclusive_group()
    rng.add_argument("--window", help="span ending now: 1h, 24h, 7d, 30d ... (default 24h)")
    rng.add_argument("--start", metavar="T", type=parse_time, help="start: epoch seconds or ISO 8601 (UTC unless an offset is given)")
    e.add_argument("--end", metavar="T", type=parse_time, help="end, with --start (default: now)")
    e.add_argument("--resolution", choices=("raw", "1m", "1h"), default="1m", help="bucket size (default 1m)")
    e.add_argument("--services", metavar="A,B", help="only these services (comma-separated)")
    e.add_argument("--jobs", action="store_true",
                   help="write the finished jobs (one row each, with model, workflow, queue wait, outcome, tags) "
                        "instead of the statistics per bucket")
    e.add_argument("--incidents", action="store_true",
                   help="write the outages (one row each: start, end, duration, cause) instead of the statistics "
                        "per bucket")
    _add_storage(e, recording=False)
    e.set_defaults(func=cmd_export)

    j = sub.add_parser("jobs", help="recent jobs and per-model / per-workflow statistics", description=(
        "Reads the history file: the last finished jobs (model, workflow, queue wait, processing "
        "time, outcome) and a table per model or workflow (count, success, processing and queue "
        "wait percentiles) over the window.  Queue wait is n/a where the start was not seen."))
    j.add_argument("--window", default="24h", help="statistics window: 15m, 1h, 24h, 7d, 30d ... (default 24h)")
    j.add_argument("--by", choices=("model", "workflow", "service"), default="model", help="table rows (default model)")
    j.add_argument("--service", metavar="NAME", help="only this service's jobs")
    j.add_argument("--limit", metavar="N", type=int, default=20, help="recent jobs listed (default 20; 0 for none)")
    j.add_argument("--json", action="store_true", help="machine-readable output")
    j.add_argument("--queue", action="store_true", help=(
        "also ask the configured backends for the jobs waiting and running on them now, with an ETA "
        "from the history's processing times, and the VRAM free for the next job of each model"))
    _add_config(j)
    _add_storage(j, recording=False)
    j.set_defaults(func=cmd_jobs)

    i = sub.add_parser("incidents", help="outages: start, end, duration and cause per backend", description=(
        "Reads the history file: every outage (a stretch of down health results) overlapping the range, "
        "newest first, with its start, end (or ongoing), duration and cause.  Times are UTC."))
    irng = i.add_mutually_exclusive_group()
    irng.add_argument("--window", help="span ending now: 1h, 24h, 7d, 30d ... (default 24h)")
    irng.add_argument("--start", metavar="T", type=parse_time, help="start: epoch seconds or ISO 8601 (UTC unless an offset is given)")
    i.add_argument("--end", metavar="T", type=parse_time, help="end, with --start (default: now)")
    i.add_argument("--service", metavar="NAME", help="only this service's outages")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    _add_storage(i, recording=False)
    i.set_defaults(func=cmd_incidents)

    a = sub.add_parser("action", help="interrupt, delete a pending job, free memory, unload a model", description=(
        "Sends one action to a configured backend after asking to confirm, and prints the server's "
        "answer.  ComfyUI: interrupt [PROMPT_ID], delete PROMPT_ID, free.  A1111/Forge: interrupt, skip.  "
        "Ollama: unload MODEL.  Exit code 0 when the server accepted it."))
    a.add_argument("backend", metavar="BACKEND", help="the backend's name in the config")
    a.add_argument("action", metavar="ACTION", help="interrupt, delete, free, skip or unload (what the kind has)")
    a.add_argument("target", metavar="TARGET", nargs="?", help="a prompt id (ComfyUI) or a model (Ollama unload)")
    a.add_argument("--yes", action="store_true", help="do not ask to confirm")
    _add_config(a)
    a.set_defaults(func=cmd_action)

    s = sub.add_parser("serve", help="serve Prometheus /metrics of the configured backends", description=(
        "Polls the configured backends and serves their metrics at /metrics (OpenMetrics or "
        "Prometheus text) until Ctrl-C."))
    _add_config(s)
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 exposes it)")
    s.add_argument("--port", type=_port, default=9464, help="port (default 9464; 0 picks a free one)")
    s.add_argument("--demo", action="store_true", help="serve two simulated backends on loopback instead of the config")
    s.add_argument("--rules", metavar="PATH", type=Path,
                   help=f"alert rules, evaluated every second, and notify targets (TOML [[rule]] and [[notify]] "
                        f"tables; default: {default_rules_path()} if it exists; --allow-remote for remote URLs)")
    _add_storage(s, recording=True)
    s.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; returns the exit code (see the module docs)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a usage error argparse already printed
        return e.code if isinstance(e.code, int) else EXIT_USAGE if e.code else EXIT_OK
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.command in ("export", "incidents") and args.end is not None and args.start is None:
        _err("--end needs --start (or use --window for a span ending now)")
        return EXIT_USAGE
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


# --- shared helpers --------------------------------------------------------------


def _err(msg: str, *, kind: str = "error") -> None:
    print(f"{PROG}: {kind}: {msg}", file=sys.stderr)


def _configs(args: argparse.Namespace) -> tuple[list[BackendConfig], Simulator | None]:
    """The backends to watch: the simulator's with ``--demo``, else the
    config file's.  ``ConfigError`` propagates."""
    if getattr(args, "demo", False):
        from .simulator import Simulator

        sim = Simulator()
        return sim.configs(), sim
    return load_config(args.config), None


def _storage_arg(args: argparse.Namespace) -> StorageArg:
    if args.no_storage:
        return None
    if args.storage is not None:
        return Path(args.storage)
    return None if args.demo else True


def _open_monitor(storage: StorageArg) -> tuple[Monitor, str | None]:
    """A monitor with history in ``storage``; in memory, with a one-line
    warning (returned as a note too), when another process holds the file
    or it is from a newer version."""
    try:
        return Monitor(storage=storage), None
    except StorageError as e:  # StorageLockedError included
        note = f"history in memory only: {e}"
    _err(note, kind="warning")
    return Monitor(), note


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM ends ``watch``/``serve`` the way Ctrl-C does (a clean exit:
    collectors stopped, history flushed)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- watch ---------------------------------------------------------------------------


def _series(monitor: Monitor, names: Sequence[str]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for name in names:
        try:
            _, values = monitor.series(name, SPARK_METRIC, SPARK_WINDOW, SPARK_POINTS)
        except MetricsError:  # not a service (yet), or a window the tiers lack
            continue
        out[name] = [float(v) for v in values]
    return out


def _warm_up(monitor: Monitor, collectors: Collectors, window: str, limit_s: float) -> None:
    """Waits (at most ``limit_s``) until every backend that can be contacted
    has been probed, and each up one has reported every signal it says it
    has, so a single frame shows real numbers rather than dashes."""
    signal_ready: dict[str, Callable[[ServiceStats], bool]] = {
        "queue": lambda st: st.queue_running is not None or st.queue_pending is not None,
        "processing": lambda st: st.processing_count > 0,
        "resources": lambda st: bool(st.resources),
    }
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        time.sleep(0.1)
        statuses = collectors.status()
        if any(s.state == "unknown" for s in statuses.values()):
            continue
        snap = monitor.snapshot(window)
        settled = True
        for name, s in statuses.items():
            if s.state != "up":
                continue
            st = snap.get(name)
            if st is None or st.count == 0:
                settled = False
                break
            for sig, ready in signal_ready.items():
                if s.capabilities.get(sig) is not None and not ready(st):
                    settled = False
        # Past one second the engine has sealed the first requests' second.
        if settled and time.monotonic() - start >= 1.2:
            return


def _between_frames(seconds: float) -> None:
    """The wait between frames (Ctrl-C lands here most of the time); a
    seam for tests."""
    time.sleep(seconds)


def default_rules_path(config: Path | None = None) -> Path:
    """``alerts.toml`` next to the backends file (``--config``'s when one
    was given): the same file the Blender add-on reads with Configuration
    = backends.toml."""
    return default_alerts_path(config)


#: With --demo and no rules file: one rule that the simulators trip now and
#: then, so a first look shows what an alert looks like.
DEMO_RULES = """
[[rule]]
name = "demo-slow"
target = "*"
metric = "p95_ms"
comparator = ">"
threshold = 75
recovery_threshold = 60
window = "1m"
for_s = 5
"""


def _alert_lines(manager: Any, now: float) -> list[str]:
    """Pending, firing and recovering alerts, for the dashboard's footer."""
    out = []
    for st in manager.states():
        if st.state == "normal":
            continue
        value = "" if st.value is None else f" = {st.value:.4g}"
        out.append(f"{st.state.upper()} {st.rule} on {st.target}{value} ({now - st.since:.0f} s)")
    return out


def _load_alerts(monitor: Any, args: argparse.Namespace, demo: bool) -> tuple[Any, Any]:
    """The monitor's alert manager with the rules asked for (or None) and a
    started ``Notifier`` for the file's ``[[notify]]`` targets (or None).
    ``ConfigError`` for a bad file, before anything starts."""
    from .alerts import Notifier, load_alerts_file

    path = args.rules if args.rules is not None else default_rules_path(getattr(args, "config", None))
    if args.rules is None and not path.exists():
        if not demo:
            return None, None
        monitor.alerts.load_rules(DEMO_RULES)
        return monitor.alerts, None
    loaded = load_alerts_file(path)  # the whole file checked, rules and targets, before either is used
    monitor.alerts.load_rules(path)
    notifier = None
    if loaded.targets:
        notifier = Notifier(loaded.targets, allow_remote=args.allow_remote)
        notifier.attach(monitor.alerts)
    return monitor.alerts, notifier


def _announce_alerts(alerts: Any, notifier: Any, out: TextIO) -> None:
    """What ``serve``/``watch`` say at start about their rules and notify
    targets (URLs redacted), and a warning per target that cannot send."""
    if alerts is None:
        return
    targets = notifier.status() if notifier is not None else {}
    shown = ", ".join(f"{s.name} ({s.kind}{f' {s.url}' if s.url else ''})" for s in targets.values())
    print(f"alerts: {len(alerts.rules)} rules, {len(targets)} notify targets" + (f": {shown}" if shown else ""),
          file=out, flush=True)
    for s in targets.values():
        if s.state == "blocked":
            _err(f"notify target {s.name!r} ({s.url}) is not on this machine: blocked without --allow-remote",
                 kind="warning")
        elif s.state == "unavailable":
            _err(f"notify target {s.name!r}: no desktop notifier on this machine (notify-send, osascript or "
                 "PowerShell)", kind="warning")


def _close_notifier(notifier: Any) -> None:
    """Gives queued notifications (a resolve at exit) a moment, then stops."""
    if notifier is not None:
        notifier.flush(2.0)
        notifier.close()


def cmd_watch(args: argparse.Namespace) -> int:
    try:
        from rich.console import Console
        from rich.live import Live

        from . import dashboard
    except ImportError:
        _err(RICH_MISSING)
        return EXIT_FAIL
    try:
        configs, sim = _configs(args)
    except ConfigError as e:
        _err(str(e))
        return EXIT_USAGE
    try:
        monitor, note = _open_monitor(_storage_arg(args))
        try:
            try:
                monitor.snapshot(args.window)
            except InvalidWindowError as e:
                _err(f"--window {args.window}: {e}")
                return EXIT_USAGE
            try:
                alerts, notifier = _load_alerts(monitor, args, sim is not None)
            except (ConfigError, OSError) as e:
                _err(f"alert rules: {e}")
                return EXIT_USAGE
            if args.rules is not None or default_rules_path(args.config).exists():  # a file, not the demo rule
                _announce_alerts(alerts, notifier, sys.stderr)
            collectors = monitor.start_collectors(configs, allow_remote=args.allow_remote)
            try:
                console = Console(width=args.width) if args.width else Console()
                title = f"{PROG} (demo)" if sim is not None else PROG
                layout = dashboard.DashboardState()  # rows and columns stay put between frames

                def frame() -> Any:
                    snap = monitor.snapshot(args.window)
                    statuses = collectors.status()
                    names = list(statuses) + [n for n in snap if n not in statuses]
                    lines = None
                    if alerts is not None:
                        alerts.evaluate()
                        lines = _alert_lines(alerts, monitor.now())
                    tracker = monitor.existing_jobs()
                    return dashboard.render(
                        snap, statuses, _series(monitor, names),
                        width=console.width, window=args.window, title=title, note=note, alerts=lines, state=layout,
                        jobs=tracker.outlook() if tracker is not None else (),
                        heartbeats={n: monitor.heartbeat(n, cells=HEARTBEAT_CELLS) for n in names},
                    )

                with _sigterm_as_interrupt():
                    if args.once:
                        _warm_up(monitor, collectors, args.window, args.warmup)
                        console.print(frame())
                        return EXIT_OK
                    with Live(frame(), console=console, auto_refresh=False, redirect_stderr=False) as live:
                        while True:
                            _between_frames(args.refresh)
                            live.update(frame(), refresh=True)
            except KeyboardInterrupt:
                return EXIT_OK
            finally:
                collectors.stop()
                _close_notifier(notifier)
        finally:
            monitor.close()
    finally:
        if sim is not None:
            sim.close()


# --- check ---------------------------------------------------------------------------

_VERDICT = {"up": "UP", "down": "DOWN", "loading": "LOADING", "blocked": "BLOCKED", "disabled": "DISABLED", "unknown": "UNKNOWN"}


def _describe_source(args: argparse.Namespace) -> str:
    if args.config is not None:
        return str(args.config)
    path = default_config_path()
    return str(path) if path.exists() else f"built-in defaults (no {path})"


def _print_check(results: Sequence[BackendStatus], source: str, out: TextIO) -> None:
    print(f"config: {source}", file=out)
    if not results:
        print("no backends configured", file=out)
        return
    name_w = max(len(r.name) for r in results)
    kind_w = max(len(r.kind) for r in results)
    url_w = max(len(r.url) for r in results)
    for r in results:
        verdict = _VERDICT.get(r.state, r.state.upper())
        head = f"{verdict:<8}  {r.name:<{name_w}}  {r.kind:<{kind_w}}  {r.url:<{url_w}}"
        if r.state == "up":
            detail = f"{r.last_latency_ms:.1f} ms" if r.last_latency_ms is not None else ""
            if r.version:
                detail += f"  version {r.version}"
            if r.detail.get("sleeping"):
                detail += f"  sleeping: {r.detail['sleeping']}"
        elif r.state in ("down", "loading"):
            # First line only: a collector bug's message carries a traceback.
            detail = f"{r.cause or r.last_error_type or 'error'}: {(r.last_error or 'no answer').splitlines()[0]}"
        elif r.state == "blocked":
            detail = f"{r.url} is not on this machine: not contacted (--allow-remote allows it)"
        elif r.state == "disabled":
            detail = "enabled = false in the config"
        else:
            detail = (r.last_error or "no answer yet").splitlines()[0]
        print(f"{head}  {detail}".rstrip(), file=out)
        if r.state != "up" and r.hint:
            print(f"{'':10}fix: {r.hint}", file=out)
        if r.state in ("up", "down", "loading") and r.missing:
            # Signals this backend cannot report, grouped by the reason.
            by_reason: dict[str, list[str]] = {}
            for sig, why in r.missing.items():
                by_reason.setdefault(why, []).append(sig)
            for why, sigs in by_reason.items():
                print(f"{'':10}n/a: {', '.join(sigs)} ({why})", file=out)
    enabled = [r for r in results if r.state != "disabled"]
    up = sum(1 for r in enabled if r.state == "up")
    print(f"{up} of {len(enabled)} enabled backends up", file=out)


def cmd_check(args: argparse.Namespace) -> int:
    try:
        configs = load_config(args.config)
    except ConfigError as e:
        _err(str(e))
        return EXIT_USAGE
    from .collectors.scheduler import check_once

    results = check_once(configs, allow_remote=args.allow_remote)
    ok = all(r.state == "up" for r in results if r.state != "disabled")
    if args.json:
        doc = {"ok": ok, "config": _describe_source(args), "backends": [dataclasses.asdict(r) for r in results]}
        print(json.dumps(doc, indent=2))
    else:
        _print_check(results, _describe_source(args), sys.stdout)
    return EXIT_OK if ok else EXIT_FAIL


# --- export ----------------------------------------------------------------------------


def _snapshot_copy(db: Path, into: Path) -> Path:
    """A consistent copy of a history file another process holds (SQLite's
    online backup through a read-only connection; the owner keeps writing)."""
    dest = into / db.name
    src = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
    try:
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()
    return dest


def _open_history(db: Path, tmp: Path, doing: str, tiers: Sequence[tuple[int, int]] | None = None) -> Monitor | None:
    """A monitor reading ``db``; from a snapshot copy when another process
    holds the file.  None (after a message) when it cannot be read."""
    try:
        return Monitor(storage=db, tiers=tiers)
    except StorageLockedError as e:
        print(f"{PROG}: note: {e.path} is in use by {e.owner}; {doing} from a copy of its last flush", file=sys.stderr)
        try:
            return Monitor(storage=_snapshot_copy(db, tmp), tiers=tiers)
        except (MetricsError, sqlite3.Error, OSError) as e2:
            _err(f"cannot read {db}: {e2}")
            return None
    except (MetricsError, OSError) as e:
        _err(f"cannot open {db}: {e}")
        return None


def cmd_export(args: argparse.Namespace) -> int:
    db = expand_user(args.storage, "--storage", ValueError) if args.storage is not None else default_path()
    if not db.exists():
        _err(f"no history file at {db}: `{PROG} watch` or `serve` records one (or pass --storage PATH)")
        return EXIT_FAIL
    fmt: Literal["csv", "json"] = args.format or ("json" if args.path.suffix.lower() == ".json" else "csv")
    services = [s.strip() for s in args.services.split(",") if s.strip()] if args.services else None
    window = args.window if args.start is None and args.window is not None else None
    if args.start is None and window is None:
        window = "24h"
    with tempfile.TemporaryDirectory(prefix="mdm-export-") as tmp:
        monitor = _open_history(db, Path(tmp), "exporting")
        if monitor is None:
            return EXIT_FAIL
        try:
            if args.incidents:
                out = monitor.export_incidents(args.path, fmt, window=window, start=args.start, end=args.end,
                                               services=services)
            elif args.jobs:
                out = monitor.export_jobs(args.path, fmt, window=window, start=args.start, end=args.end,
                                          services=services)
            else:
                out = monitor.export(
                    args.path, fmt, window=window, start=args.start, end=args.end,
                    services=services, resolution=args.resolution,
                )
        except (MetricsError, ValueError, OSError) as e:
            _err(f"export failed: {e}")
            return EXIT_FAIL
        finally:
            monitor.close()
    print(f"wrote {out}")
    return EXIT_OK


# --- jobs --------------------------------------------------------------------------------

#: Tiers of a monitor that only reads a history file for ``jobs``: the
#: persisted ones, so every window up to 30 days is answered from them.
READ_TIERS = ((60, 1440), (3600, 720))


def fmt_duration(ms: float | None) -> str:
    """A duration for a table: "n/a" when unknown, never a 0 that looks real."""
    if ms is None:
        return "n/a"
    if ms < 0.1:
        return "<0.1 ms"
    if ms < 10:
        return f"{ms:.1f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1e3:.1f} s"
    return f"{int(ms // 60_000)}m {ms % 60_000 / 1e3:02.0f}s"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    for line in (header, *rows):
        print("  " + "  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip(), file=out)


def _print_jobs(stats: Sequence[Any], recent: Sequence[Any], by: str, window: str, out: TextIO) -> None:
    print(f"Jobs by {by} over {window}", file=out)
    if not stats:
        print("  (no jobs in the window)", file=out)
    else:
        _table(
            ("service", by if by != "service" else "", "jobs", "ok %", "proc p50", "p95", "p99", "wait p50", "p95",
             "errors"),
            [
                (
                    s.service,
                    s.label,
                    str(s.count),
                    "n/a" if s.success_rate is None else f"{100 * s.success_rate:.1f}",
                    fmt_duration(s.processing_p50_ms),
                    fmt_duration(s.processing_p95_ms),
                    fmt_duration(s.processing_p99_ms),
                    fmt_duration(s.queue_wait_p50_ms),
                    fmt_duration(s.queue_wait_p95_ms),
                    ", ".join(f"{k} {v}" for k, v in list(s.error_counts.items())[:3]),
                )
                for s in stats
            ],
            out,
        )
    if recent:
        print("\nRecent jobs (newest first)", file=out)
        _table(
            ("finished (UTC)", "service", "model", "workflow", "wait", "processing", "outcome"),
            [
                (
                    _dt.datetime.fromtimestamp(r.finished_at, _dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
                    r.service,
                    r.model or "",
                    r.workflow or "",
                    fmt_duration(r.queue_wait_ms),
                    fmt_duration(r.processing_ms),
                    "ok" if r.ok else (r.error or "error"),
                )
                for r in recent
            ],
            out,
        )


def cmd_jobs(args: argparse.Namespace) -> int:
    db = expand_user(args.storage, "--storage", ValueError) if args.storage is not None else default_path()
    if not db.exists():
        _err(f"no history file at {db}: record jobs with a monitor that has storage (or pass --storage PATH)")
        return EXIT_FAIL
    if args.limit < 0:
        _err(f"--limit {args.limit}: expected 0 or more")
        return EXIT_USAGE
    with tempfile.TemporaryDirectory(prefix="mdm-jobs-") as tmp:
        monitor = _open_history(db, Path(tmp), "reading", tiers=READ_TIERS)
        if monitor is None:
            return EXIT_FAIL
        try:
            stats = monitor.jobs.stats(args.window, by=args.by, service=args.service)
            recent = monitor.jobs.recent(args.limit, service=args.service) if args.limit else []
            queue = _live_queue(monitor, args) if args.queue else None
            fits = monitor.vram_fits(service=args.service)
        except (InvalidWindowError, MetricsError) as e:  # ConfigError (a bad --config) is a MetricsError
            _err(str(e))
            return EXIT_USAGE
        finally:
            monitor.close()
    if args.json:
        doc = {
            "window": args.window,
            "by": args.by,
            "stats": [s.as_dict() for s in stats],
            "recent": [r.as_dict() for r in recent],
            "vram": [f.as_dict() for f in fits],
        }
        if queue is not None:
            doc["queue"] = [o.as_dict() for o in queue]
        json.dump(doc, sys.stdout, indent=1, allow_nan=False)
        print()
    else:
        _print_jobs(stats, recent, args.by, args.window, sys.stdout)
        if queue is not None:
            _print_queue(queue, sys.stdout)
        _print_vram(fits, sys.stdout)
    return EXIT_OK


#: Longest wait for the backends' first answers with ``jobs --queue``.
QUEUE_WARMUP_S = 5.0


def _live_queue(monitor: Monitor, args: argparse.Namespace) -> list[Any]:
    """The configured backends' waiting and running jobs with their ETA
    (the processing percentiles of the history over ``--window``): the
    collectors poll once (at most QUEUE_WARMUP_S), and the outlook is read
    before they stop (stopping withdraws what they reported)."""
    configs = [c for c in load_config(args.config) if args.service is None or c.name == args.service]
    collectors = monitor.start_collectors(configs, allow_remote=args.allow_remote)
    try:
        _warm_up(monitor, collectors, "1m", QUEUE_WARMUP_S)
        return [o for o in monitor.jobs.outlook(args.window) if args.service is None or o.job.service == args.service]
    finally:
        collectors.stop()


def _eta_text(o: Any) -> str:
    if o.eta is None:
        return "n/a"
    (a, b) = o.eta.finish_in_s
    return f"done in {a:.0f}–{b:.0f} s ({o.eta.basis} p50–p90)"


def _print_queue(queue: Sequence[Any], out: TextIO) -> None:
    print("\nWaiting and running now (ETA from the history; n/a: fewer than 5 finished jobs)", file=out)
    if not queue:
        print("  (no job waiting or running)", file=out)
        return
    _table(
        ("service", "state", "pos", "model", "elapsed", "ETA", "stuck"),
        [
            (o.job.service, o.job.state, str(o.position), o.job.model or "", f"{o.job.elapsed_s():.0f} s", _eta_text(o),
             o.stuck or "")
            for o in queue
        ],
        out,
    )


def _gib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 2**30:.1f} GiB"


def _print_vram(fits: Sequence[Any], out: TextIO) -> None:
    if not fits:
        return
    print("\nVRAM for the next job (need: the most a recent job grew by; free: the latest reading)", file=out)
    _table(
        ("service", "model", "jobs", "peak", "need", "free", "total", "verdict"),
        [
            (f.service, f.model, str(f.jobs), _gib(f.peak_bytes), _gib(f.need_bytes), _gib(f.free_bytes), _gib(f.total_bytes),
             f.verdict)
            for f in fits
        ],
        out,
    )


# --- incidents ---------------------------------------------------------------------------


def _clock(epoch_s: float) -> str:
    return _dt.datetime.fromtimestamp(epoch_s, _dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _span(seconds: float) -> str:
    """A duration for the incidents table: whole seconds, minutes, hours."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def _print_incidents(incidents: Sequence[Any], label: str, out: TextIO) -> None:
    print(f"Incidents over {label} (newest first, UTC)", file=out)
    if not incidents:
        print("  (no outages in the range)", file=out)
        return
    _table(
        ("service", "start", "end", "duration", "cause", "detail"),
        [
            (
                i.service,
                _clock(i.start),
                "ongoing" if i.end is None else _clock(i.end) + (" (results stopped)" if i.ended_by == "gap" else ""),
                _span(i.duration_s),
                i.cause,
                (i.detail or "")[:60],
            )
            for i in incidents
        ],
        out,
    )


def cmd_incidents(args: argparse.Namespace) -> int:
    db = expand_user(args.storage, "--storage", ValueError) if args.storage is not None else default_path()
    if not db.exists():
        _err(f"no history file at {db}: `{PROG} watch` or `serve` records one (or pass --storage PATH)")
        return EXIT_FAIL
    window = args.window if args.start is None else None
    with tempfile.TemporaryDirectory(prefix="mdm-incidents-") as tmp:
        monitor = _open_history(db, Path(tmp), "reading", tiers=READ_TIERS)
        if monitor is None:
            return EXIT_FAIL
        try:
            found = monitor.incidents(window, start=args.start, end=args.end,
                                      services=[args.service] if args.service else None)
        except (InvalidWindowError, MetricsError) as e:
            _err(str(e))
            return EXIT_USAGE
        finally:
            monitor.close()
    label = (window or "24h") if args.start is None else f"{_clock(args.start)} to {_clock(args.end) if args.end else 'now'}"
    if args.json:
        doc = {"window": label, "incidents": [i.as_dict() for i in found]}
        json.dump(doc, sys.stdout, indent=1, allow_nan=False)
        print()
    else:
        _print_incidents(found, label, sys.stdout)
    return EXIT_OK


# --- action ------------------------------------------------------------------------------


def cmd_action(args: argparse.Namespace) -> int:
    from .collectors.actions import ACTIONS, run_action

    try:
        configs = {c.name: c for c in load_config(args.config)}
    except ConfigError as e:
        _err(str(e))
        return EXIT_USAGE
    cfg = configs.get(args.backend)
    if cfg is None:
        _err(f"no backend named {args.backend!r}: the config has {', '.join(configs) or 'none'}")
        return EXIT_USAGE
    act = ACTIONS.get(cfg.kind, {}).get(args.action)
    if act is None:
        _err(f"{args.action!r}: a {cfg.kind} backend has these actions: {', '.join(ACTIONS.get(cfg.kind, {})) or 'none'}")
        return EXIT_USAGE
    what = f"{act.title} on {cfg.name} ({cfg.url})" + (f" for {args.target}" if args.target else "")
    if not args.yes:
        if not sys.stdin.isatty():
            _err(f"{what}: {act.confirm}; pass --yes to confirm without a terminal")
            return EXIT_USAGE
        answer = input(f"{what}: {act.confirm}. Go ahead? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing sent")
            return EXIT_FAIL
    try:
        result = run_action(cfg, args.action, args.target, allow_remote=args.allow_remote)
    except ValueError as e:
        _err(str(e))
        return EXIT_USAGE
    print(f"{'ok' if result.ok else 'failed'}: {what}: {result.message}")
    return EXIT_OK if result.ok else EXIT_FAIL


# --- serve -------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        configs, sim = _configs(args)
    except ConfigError as e:
        _err(str(e))
        return EXIT_USAGE
    try:
        monitor, _ = _open_monitor(_storage_arg(args))
        try:
            try:
                alerts, notifier = _load_alerts(monitor, args, demo=False)
            except (ConfigError, OSError) as e:
                _err(f"alert rules: {e}")
                return EXIT_USAGE
            try:
                server = monitor.serve_metrics(args.host, args.port)
            except OSError as e:
                _close_notifier(notifier)
                _err(f"cannot listen on {args.host}:{args.port}: {e}")
                return EXIT_FAIL
            collectors = monitor.start_collectors(configs, allow_remote=args.allow_remote)
            try:
                if not is_loopback(args.host):
                    _err(f"{server.url} is reachable from other machines", kind="warning")
                where = monitor.storage_path or "memory"
                print(f"serving {server.url} for {len(configs)} backends; history: {where} (Ctrl-C stops)", flush=True)
                _announce_alerts(alerts, notifier, sys.stdout)
                if alerts is not None:
                    alerts.start(interval_s=1.0)  # its own thread: a slow pass never delays /metrics
                with _sigterm_as_interrupt():
                    stop = threading.Event()
                    while not stop.wait(0.5):
                        pass
            except KeyboardInterrupt:
                pass
            finally:
                if alerts is not None:
                    alerts.stop()
                server.close()
                collectors.stop()
                _close_notifier(notifier)
        finally:
            monitor.close()
    finally:
        if sim is not None:
            sim.close()
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
