"""Runs inside one real Blender 4.3 GUI process (scripts/bench_blender.sh
starts it): the add-on's cost to the user, measured in alternating phases
with the add-on enabled ("on") and disabled ("off").

One round is an on phase and an off phase, in ABBA order (on/off,
off/on, on/off, ...), so a slow drift of the machine (other jobs, thermal)
falls on both arms alike.  Each phase:

1. **settle**: enable the add-on (backends from the scenario) and wait until
   the engine is open and, with backends, every collector reports "up" and
   has recorded requests; or disable it and wait a moment.  The start-up
   burst (six threads probing and detecting their backend at once) is a
   once-per-session cost and is kept out of the figures;
2. **playback**: viewport animation playback for ``phase_s`` seconds; frame
   times are the intervals between ``frame_change_post`` calls (each
   includes one evaluated frame and one viewport redraw);
3. **render**: one small Cycles CPU render (``render.render``, blocking);
4. **python**: a Python-heavy operation: ``PY_OBJECTS`` objects created,
   linked, touched and removed through ``bpy.data``, ``PY_REPEATS`` times.

Trust checks (a failed one aborts the run; the JSON says why):

- on: the add-on module is loaded, its runtime has an open engine
  (``runtime.monitor``), its timer ticked during the phase, and with
  backends: one ``mdm-collector:*`` thread per backend is alive and every
  backend's service recorded more requests at the end of the phase than at
  its start;
- off: the add-on is not loaded and no ``mdm-*`` thread is left.

The add-on's own CPU time (per second of playback wall time) is:

- its threads: every thread of the process whose name starts with "mdm-"
  (Python threads by ``threading`` name, the engine's Rust sealer by its OS
  name in ``/proc/self/task/<tid>/comm``), read from
  ``/proc/self/task/<tid>/schedstat`` (nanoseconds on CPU, kernel
  scheduler accounting) at the start and end of the playback window;
- its main-thread timer: the add-on's ``runtime.tick`` is re-registered
  wrapped in a function that adds up ``time.thread_time()`` (this thread's
  CPU clock) around each call.

Panel drawing is not in that figure (the sidebar is closed, as in the
factory layout: the add-on only tags it for redraw when it is open).
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import sys
import threading
import time
import traceback
from typing import Any
from collections.abc import Iterator

import addon_utils
import bpy

MODULE = "bl_ext.user_default.movie_director_metrics_addon"
CONFIG = json.load(open(os.environ["MDM_BENCH_CONFIG"]))
OUT = CONFIG["out"]
PHASE_S = float(CONFIG["phase_s"])
ROUNDS = int(CONFIG["rounds"])
BACKENDS = CONFIG["backends"]  # [{name, kind, url}], empty for the idle scenario
PY_OBJECTS = int(CONFIG.get("py_objects", 5000))
PY_REPEATS = int(CONFIG.get("py_repeats", 3))
#: Longest wait for the engine and the collectors to come up after enable.
SETTLE_TIMEOUT_S = 30.0

result: dict[str, Any] = {
    "scenario": CONFIG["scenario"],
    "blender": bpy.app.version_string,
    "python": sys.version.split()[0],
    "config": {k: v for k, v in CONFIG.items() if k != "out"},
    "phases": [],
    "checks": [],
    "ok": False,
}


class BenchError(RuntimeError):
    """A trust check failed: the measurement cannot be believed."""


# ---- helpers ------------------------------------------------------------------------


def view3d() -> tuple[Any, Any]:
    win = bpy.context.window_manager.windows[0]
    area = next(a for a in win.screen.areas if a.type == "VIEW_3D")
    return win, area


def addon_loaded() -> bool:
    return MODULE in bpy.context.preferences.addons and MODULE in sys.modules


def runtime_module() -> Any:
    return sys.modules[MODULE + ".runtime"]


def mdm_tasks() -> dict[int, str]:
    """tid -> name of every thread of this process that belongs to the
    add-on or the engine ("mdm-" prefix)."""
    out = {t.native_id: t.name for t in threading.enumerate() if t.name.startswith("mdm-") and t.native_id}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                comm = f.read().strip()
        except OSError:  # ended meanwhile
            continue
        if comm.startswith("mdm-"):
            out.setdefault(int(tid), comm)
    return out


def task_cpu_ns(tid: int) -> int | None:
    try:
        with open(f"/proc/self/task/{tid}/schedstat") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def service_counts() -> dict[str, int]:
    mon = runtime_module().get().monitor
    if mon is None:
        return {}
    snap = mon.snapshot("1h")
    return {name: int(snap[name].count) for name in snap}


class TickMeter:
    """The add-on's timer, re-registered behind a wrapper that adds up the
    main thread's CPU time (and wall time) spent in it."""

    def __init__(self) -> None:
        self.calls = 0
        self.cpu_s = 0.0
        self.wall_s = 0.0
        self.max_wall_s = 0.0
        self.orig: Any = None
        # One function object: bpy.app.timers finds a timer by identity, and
        # every `self.call` is a new bound-method object.
        self.fn = self.call

    def install(self) -> None:
        rt = runtime_module()
        self.orig = rt.tick
        if not bpy.app.timers.is_registered(rt.tick):
            raise BenchError("the add-on's timer (runtime.tick) is not registered")
        bpy.app.timers.unregister(rt.tick)
        bpy.app.timers.register(self.fn, first_interval=0.0, persistent=True)

    def call(self) -> float | None:
        c0, w0 = time.thread_time(), time.perf_counter()
        nxt = self.orig()
        w = time.perf_counter() - w0
        self.cpu_s += time.thread_time() - c0
        self.wall_s += w
        self.max_wall_s = max(self.max_wall_s, w)
        self.calls += 1
        return nxt

    def remove(self) -> None:
        if bpy.app.timers.is_registered(self.fn):
            bpy.app.timers.unregister(self.fn)

    def reset(self) -> None:
        self.calls, self.cpu_s, self.wall_s, self.max_wall_s = 0, 0.0, 0.0, 0.0


TICKS = TickMeter()


def enable_addon() -> None:
    addon_utils.enable(MODULE, default_set=True)
    if not addon_loaded():
        raise BenchError(f"addon_utils.enable({MODULE!r}) did not load the add-on")
    prefs = bpy.context.preferences.addons[MODULE].preferences
    # The add-on's defaults (refresh interval, history file in its user
    # directory) except the backends; the collectors poll at their default
    # 1 s interval.
    for b in BACKENDS:
        item = prefs.backends.add()
        item.name, item.kind, item.url = b["name"], b["kind"], b["url"]
    TICKS.install()


def disable_addon() -> None:
    TICKS.remove()
    addon_utils.disable(MODULE, default_set=True)


def settled_on() -> str:
    """'' when the engine and every collector run; else what is missing."""
    rt = runtime_module().get()
    if rt.monitor is None:
        return "engine not open"
    if not BACKENDS:
        return ""
    if rt.collectors is None:
        return "collectors not started"
    status = rt.collectors.status()
    down = [n for n in (b["name"] for b in BACKENDS) if getattr(status.get(n), "state", None) != "up"]
    if down:
        return f"not up: {down}"
    counts = service_counts()
    none = [b["name"] for b in BACKENDS if counts.get(b["name"], 0) == 0]
    return f"no requests recorded: {none}" if none else ""


def check(ok: bool, what: str) -> None:
    result["checks"].append({"ok": bool(ok), "check": what})
    if not ok:
        raise BenchError(what)


# ---- the measured parts --------------------------------------------------------------


def playback(phase_s: float, out: dict[str, Any]) -> Iterator[float]:
    """Plays the animation for ``phase_s`` s; puts the frame times (ms)
    and the add-on's CPU over that window into ``out``."""
    stamps: list[float] = []

    def on_frame(scene: Any, depsgraph: Any = None) -> None:
        stamps.append(time.perf_counter())

    win, area = view3d()
    tasks0 = mdm_tasks()
    cpu0 = {tid: task_cpu_ns(tid) for tid in tasks0}
    TICKS.reset()
    ticks0 = runtime_module().get().ticks if addon_loaded() else 0
    redraws0 = runtime_module().get().redraws if addon_loaded() else 0
    gc0 = [s["collections"] for s in gc.get_stats()]
    bpy.app.handlers.frame_change_post.append(on_frame)
    w0 = time.perf_counter()
    with bpy.context.temp_override(window=win, area=area):
        bpy.ops.screen.animation_play()
    try:
        yield phase_s
    finally:
        with bpy.context.temp_override(window=win, area=area):
            bpy.ops.screen.animation_cancel(restore_frame=False)
        bpy.app.handlers.frame_change_post.remove(on_frame)
    wall = time.perf_counter() - w0
    tasks1 = mdm_tasks()
    thread_cpu_ns = 0
    per_thread: dict[str, float] = {}
    for tid, name in tasks1.items():
        end = task_cpu_ns(tid)
        start = cpu0.get(tid) or 0  # a thread started inside the window counts whole
        if end is not None:
            thread_cpu_ns += end - start
            per_thread[name] = per_thread.get(name, 0.0) + (end - start) / 1e6
    frames = [(b - a) * 1e3 for a, b in zip(stamps, stamps[1:])]
    out.update({
        "wall_s": wall,
        "frames": len(frames),
        "fps": len(frames) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0,
        "frame_ms_median": statistics.median(frames) if frames else None,
        # below 100 frames (a quick run) this is the largest-ish, not a p99
        "frame_ms_p99": statistics.quantiles(frames, n=100)[98] if len(frames) >= 2 else None,
        "frame_ms_max": max(frames) if frames else None,
        "addon_threads": sorted(set(tasks0.values()) | set(tasks1.values())),
        "addon_thread_cpu_ms": thread_cpu_ns / 1e6,
        "addon_thread_cpu_ms_by_name": {k: round(v, 3) for k, v in sorted(per_thread.items())},
        "timer_calls": TICKS.calls,
        "timer_cpu_ms": TICKS.cpu_s * 1e3,
        "timer_wall_ms": TICKS.wall_s * 1e3,
        "timer_max_ms": TICKS.max_wall_s * 1e3,
        "addon_ticks": (runtime_module().get().ticks - ticks0) if addon_loaded() else 0,
        "addon_redraw_tags": (runtime_module().get().redraws - redraws0) if addon_loaded() else 0,
        "gc_collections": [b - a for a, b in zip(gc0, [s["collections"] for s in gc.get_stats()])],
    })


def render_once() -> float:
    t0 = time.perf_counter()
    bpy.ops.render.render()
    return time.perf_counter() - t0


def python_op() -> float:
    """Median seconds of PY_REPEATS rounds of create/link/touch/remove."""
    times = []
    for _ in range(PY_REPEATS):
        t0 = time.perf_counter()
        coll = bpy.data.collections.new("mdm_bench_tmp")  # not linked to the scene: no redraw of it
        objs = []
        for i in range(PY_OBJECTS):
            o = bpy.data.objects.new(f"mdm_bench_{i}", None)
            coll.objects.link(o)
            o.location = (i * 0.01, 0.0, 0.0)
            o["k"] = i
            objs.append(o)
        total = sum(o.location.x + o["k"] for o in coll.objects)
        assert total > 0
        bpy.data.batch_remove(objs + [coll])
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ---- the run -------------------------------------------------------------------------


def phase(arm: str, rnd: int) -> Iterator[float]:
    rec: dict[str, Any] = {"round": rnd, "arm": arm}
    t_settle = time.perf_counter()
    # ABBA puts two phases of one arm back to back: the add-on is toggled
    # only when the arm changes (each toggle then costs both arms alike).
    if arm == "on":
        if not addon_loaded():
            enable_addon()
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while (why := settled_on()) and time.monotonic() < deadline:
            yield 0.25
        check(not why, f"round {rnd} on: engine/collectors running after enable ({why or 'ok'})")
        yield 1.0  # past the first poll burst
        counts0 = service_counts()
    else:
        if addon_loaded():
            disable_addon()
        yield 1.0
        check(not addon_loaded(), f"round {rnd} off: add-on not loaded")
        left = mdm_tasks()
        check(not left, f"round {rnd} off: no add-on thread left ({sorted(left.values())})")
    rec["settle_s"] = time.perf_counter() - t_settle
    gc.collect()  # garbage of the previous phase is not this phase's cost
    yield 0.1
    yield from playback(PHASE_S, rec)
    yield 0.2  # let the window settle after playback stops
    rec["render_s"] = render_once()
    yield 0.2
    rec["python_op_s"] = python_op()
    if arm == "on":
        rt = runtime_module().get()
        check(rt.monitor is not None, f"round {rnd} on: engine open at the end of the phase")
        check(rec["timer_calls"] > 0, f"round {rnd} on: the add-on's timer ticked during playback ({rec['timer_calls']})")
        if BACKENDS:
            alive = [t.name for t in threading.enumerate() if t.name.startswith("mdm-collector:") and t.is_alive()]
            check(len(alive) == len(BACKENDS), f"round {rnd} on: {len(BACKENDS)} collector threads alive ({len(alive)})")
            counts1 = service_counts()
            grew = {b["name"]: counts1.get(b["name"], 0) - counts0.get(b["name"], 0) for b in BACKENDS}
            rec["requests_recorded"] = grew
            check(all(v > 0 for v in grew.values()), f"round {rnd} on: every backend recorded requests during the phase {grew}")
    rec["dirty_after"] = bool(bpy.data.is_dirty)
    result["phases"].append(rec)
    print(
        f"[bench] {result['scenario']} round {rnd} {arm:>3}: {rec['fps']:.1f} fps, p99 {rec['frame_ms_p99']:.2f} ms, "
        f"render {rec['render_s']:.2f} s, python {rec['python_op_s']:.3f} s, "
        f"add-on threads {rec['addon_thread_cpu_ms']:.1f} ms + timer {rec['timer_cpu_ms']:.1f} ms CPU "
        f"({rec['timer_calls']} ticks, {rec['addon_redraw_tags']} redraw tags)",
        flush=True,
    )


def run() -> Iterator[float]:
    yield 2.0  # the window and the first draws
    import gpu

    # Runtime only (--factory-startup: preferences are not saved).  With
    # the 8-sample default, llvmpipe drew ~12 fps; see bench_blender_scene.py.
    bpy.context.preferences.system.viewport_aa = "OFF"
    result["gpu"] = f"{gpu.platform.backend_type_get()} {gpu.platform.renderer_get()}"
    win, area = view3d()
    check(area.spaces.active.show_region_ui is False, "the 3D view's sidebar is closed (factory layout)")
    result["window"] = [win.width, win.height]
    result["dirty_at_start"] = bool(bpy.data.is_dirty)
    check(bpy.context.scene.render.engine == "CYCLES", "the bench scene (Cycles, animated cube) is loaded")
    # Warm-up, not counted: first playback frames, kernel/scene caches of
    # the first render, Python's first object creation; and one
    # enable/disable so the engine's modules are imported before round 0.
    yield from playback(3.0, {})
    render_once()
    python_op()
    enable_addon()
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while settled_on() and time.monotonic() < deadline:
        yield 0.25
    disable_addon()
    yield 1.0
    for rnd in range(ROUNDS):
        for arm in ("on", "off") if rnd % 2 == 0 else ("off", "on"):
            yield from phase(arm, rnd)
    if addon_loaded():
        disable_addon()
    result["dirty_at_end"] = bool(bpy.data.is_dirty)
    result["ok"] = True


def finish(code: int) -> None:
    with open(OUT, "w") as f:
        json.dump(result, f, indent=1)
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit: no "save changes?" prompt, no shutdown path that could hang
    # a benchmark; the add-on was disabled above (history flushed).
    os._exit(code)


_steps = run()


def step() -> float | None:
    try:
        return next(_steps)
    except StopIteration:
        finish(0)
    except Exception as e:
        result["error"] = f"{type(e).__name__}: {e}"
        result["traceback"] = traceback.format_exc()
        print(f"[bench] FAILED: {result['error']}\n{result['traceback']}", file=sys.stderr, flush=True)
        try:
            if addon_loaded():
                disable_addon()
        except Exception:
            pass
        finish(1)
    return None


bpy.context.preferences.view.show_splash = False
bpy.app.timers.register(step, first_interval=1.0)
