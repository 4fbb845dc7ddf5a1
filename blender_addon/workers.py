"""What runs on worker threads: opening/closing the engine (its history
file is I/O), publishing it to ``movie_director_metrics.shared()``,
starting/stopping collectors (``stop`` joins threads), "Test
connection" probes and the actions on a backend (interrupt, delete a
pending prompt, free memory, skip, unload a model).

Nothing here imports or touches ``bpy``: workers get plain values
(:class:`config.Config`, ``BackendConfig``) and hand results back through
the runtime's queue, which the main-thread timer drains.
"""

from __future__ import annotations

import queue
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # a type only: this module never imports bpy, even indirectly
    from .config import Config


def open_monitor(cfg: Config) -> tuple[Any, str]:
    from movie_director_metrics import Monitor, Retention
    from movie_director_metrics.errors import MetricsError

    if cfg.storage:
        try:
            Path(cfg.storage).parent.mkdir(parents=True, exist_ok=True)
            m = Monitor(storage=cfg.storage, retention=Retention(*cfg.retention))
            return m, f"History: {cfg.storage}"
        except (MetricsError, OSError) as e:
            return Monitor(), f"History off ({type(e).__name__}: {e}); 5m/1h/24h from memory"
    return Monitor(), "History off: 5m/1h/24h from memory"


def start_collectors(monitor: Any, cfg: Config) -> tuple[Any, str]:
    configs = list(cfg.backends)  # disabled ones too: their status reads "disabled"
    if not any(c.enabled for c in configs):
        return None, ""
    try:
        if hasattr(monitor, "start_collectors"):
            return monitor.start_collectors(configs, allow_remote=cfg.allow_remote), ""
        from movie_director_metrics.collectors.scheduler import Collectors  # type: ignore[attr-defined]
    except ImportError:
        return None, "Collectors are not in this engine build: showing recorded data only"
    c = Collectors(monitor, configs, allow_remote=cfg.allow_remote)
    c.start()
    return c, ""


def stop_collectors(c: Any) -> None:
    if c is not None:
        c.stop(timeout_s=3.0)


def engine_extras(monitor: Any) -> dict[str, Any]:
    """The monitor's alert manager, LLM tracker and job tracker
    (``monitor.alerts``, ``monitor.llm``, ``monitor.jobs``: created on
    first use, reloading their history from storage, so touched here on
    the worker, never in the tick).  A part this engine build lacks or
    that fails is None, with the reason."""
    out: dict[str, Any] = {}
    for name in ("alerts", "llm", "jobs"):
        try:
            out[name] = getattr(monitor, name, None)
            out[f"{name}_note"] = "" if out[name] is not None else "not in this engine build"
        except Exception as e:
            out[name] = None
            out[f"{name}_note"] = f"{type(e).__name__}: {e}"
    return out


def publish(monitor: Any, is_current: Callable[[], bool]) -> str:
    """Makes ``monitor`` the one ``movie_director_metrics.shared()``
    records into (other add-ons and scripts in this Blender), unless the
    runtime moved on meanwhile (disabled, or a newer reopen): a monitor
    nobody will show is never published.  Returns why it was not
    published, "" when it was."""
    if not hasattr(monitor, "publish"):
        return "shared() is not in this engine build"
    if not is_current():
        return "superseded"
    try:
        monitor.publish()
    except Exception as e:  # shown in the Jobs panel; recording elsewhere just drops
        return f"{type(e).__name__}: {e}"
    if not is_current():  # disabled while publishing: withdraw at once
        monitor.unpublish()
        return "superseded"
    return ""


def lifecycle_job(
    out: queue.SimpleQueue[Any],
    gen: int,
    old_monitor: Any,
    old_collectors: Any,
    reopen: bool,
    cfg: Config,
    is_current: Callable[[], bool] = lambda: True,
) -> None:
    """Brings engine and collectors in line with ``cfg``.  A reopen closes
    the old monitor first (which withdraws it from ``shared()`` and flushes
    its history, jobs included), then opens and publishes the new one, so
    what the history file kept is counted again by the new monitor; jobs
    still running stay with ``shared()`` and finish into the new one.
    Between the two, ``shared()`` has no monitor and counts what it drops
    (``dropped["no_monitor"]``): the time to flush and reopen the file."""
    monitor, note, collectors, cnote, error, extras = old_monitor, "", None, "", "", None
    try:
        if not reopen and hasattr(old_collectors, "update") and any(c.enabled for c in cfg.backends):
            # Same monitor: only the backends that changed restart (a hosted
            # API polled every 300 s is not probed again for another's edit).
            old_collectors.update(list(cfg.backends), allow_remote=cfg.allow_remote)
            out.put(("opened", gen, monitor, old_collectors, note, cnote, error, extras))
            return
        stop_collectors(old_collectors)
        if reopen:
            if old_monitor is not None:
                old_monitor.close()
            monitor = None
            monitor, note = open_monitor(cfg)
            extras = engine_extras(monitor)
            extras["publish_note"] = publish(monitor, is_current)
        collectors, cnote = start_collectors(monitor, cfg)
    except Exception as e:  # shown in the panel; the worker never raises out
        error = f"{type(e).__name__}: {e}"
        traceback.print_exc()
    out.put(("opened", gen, monitor, collectors, note, cnote, error, extras))


def check_job(out: queue.SimpleQueue[Any], names: list[str], configs: list[Any], allow_remote: bool, monitor: Any) -> None:
    try:
        try:
            from movie_director_metrics.collectors.scheduler import check_once  # type: ignore[attr-defined]
        except ImportError:
            from movie_director_metrics.collectors import check_once  # type: ignore[attr-defined,no-redef]
        statuses = check_once(configs, allow_remote=allow_remote, monitor=monitor)
        out.put(("checked", names, list(statuses), time.time(), ""))
    except Exception as e:
        out.put(("checked", names, [], time.time(), f"{type(e).__name__}: {e}"))



def action_job(
    out: queue.SimpleQueue[Any], name: str, config: Any, action: str, target: str | None, allow_remote: bool
) -> None:
    """Sends one action (``collectors.actions.run_action``: one request,
    never raising for what the server or the network does) and hands the
    answer back as ("acted", backend, action, target, ok, message, epoch)."""
    try:
        from movie_director_metrics.collectors.actions import run_action

        r = run_action(config, action, target, allow_remote=allow_remote)
        out.put(("acted", name, action, target, bool(r.ok), r.message, time.time()))
    except Exception as e:  # an engine without actions, a usage error: shown on the row
        out.put(("acted", name, action, target, False, f"{type(e).__name__}: {e}", time.time()))
