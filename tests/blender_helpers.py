"""Drives the Blender add-on headless, inside an interpreter that has the
``bpy`` wheel (Blender as a Python module), and writes what it saw to a
JSON report that ``tests/test_blender_addon.py`` asserts on.

Why a separate process: ``bpy`` is process-global (one Blender per
process, its own sys.path and extensions), it needs ``numpy<2`` while the
project venv has numpy 2, and a timer left registered hangs the
interpreter at exit — a hang here is a failed subprocess, not a stuck
pytest.

``bpy`` has no layout object outside a real draw (there is no headless
``UILayout``), so panels are drawn against :class:`RecordingLayout`, a
stand-in that records every ``row``/``label``/``prop``/``operator``/...
call and checks it against Blender's own RNA: keyword names against the
function's parameters, icons against the icon enum, ``prop`` names against
the data's properties, operator ids and their properties against the
registered operators, list types against registered UILists, progress
factors against 0…1.

Usage: python tests/blender_helpers.py --zip ADDON.zip --work DIR --report OUT.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import sys
import threading
import time
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ADDON_ID = "movie_director_metrics_addon"
MODULE = f"bl_ext.user_default.{ADDON_ID}"
N_SERVICES = 10


# ---- the recording layout ------------------------------------------------------------


class LayoutError(AssertionError):
    pass


class _RNA:
    """Blender's own description of UILayout, read once."""

    def __init__(self) -> None:
        import bpy

        fns = bpy.types.UILayout.bl_rna.functions
        self.params = {f.identifier: [p.identifier for p in f.parameters] for f in fns}
        self.icons = set(fns["label"].parameters["icon"].enum_items.keys())
        self.attrs = {p.identifier for p in bpy.types.UILayout.bl_rna.properties}


_rna: _RNA | None = None


def rna() -> _RNA:
    global _rna
    if _rna is None:
        _rna = _RNA()
    return _rna


def _plain(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return repr(v)


class _OperatorProps:
    """What ``layout.operator`` returns: property assignments are checked
    against the operator's RNA and recorded."""

    def __init__(self, entry: dict[str, Any], rna_props: set[str]) -> None:
        object.__setattr__(self, "_entry", entry)
        object.__setattr__(self, "_props", rna_props)

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self._props:
            raise LayoutError(f"operator {self._entry['operator']}: no property {name!r}")
        self._entry.setdefault("props", {})[name] = _plain(value)


class RecordingLayout:
    """A ``UILayout`` stand-in recording calls into ``log`` (a list of
    dicts with ``depth`` and ``fn``) after checking them."""

    _CONTAINERS = ("row", "column", "box", "split", "grid_flow", "column_flow")

    def __init__(self, log: list[dict[str, Any]] | None = None, depth: int = 0) -> None:
        object.__setattr__(self, "log", [] if log is None else log)
        object.__setattr__(self, "depth", depth)

    # ---- attributes (alert, enabled, scale_y, use_property_split, ...)
    def __setattr__(self, name: str, value: Any) -> None:
        if name not in rna().attrs:
            raise LayoutError(f"UILayout has no attribute {name!r}")
        self.log.append({"depth": self.depth, "fn": "set", "attr": name, "value": _plain(value)})

    def _record(self, fn: str, args: tuple[Any, ...], kw: dict[str, Any]) -> dict[str, Any]:
        params = rna().params.get(fn)
        if params is None:
            raise LayoutError(f"UILayout has no function {fn!r}")
        if len(args) > len(params):
            raise LayoutError(f"{fn}: {len(args)} positional arguments, takes {len(params)}")
        call = dict(zip(params, args))
        for k, v in kw.items():
            if k not in params:
                raise LayoutError(f"{fn}: unexpected keyword {k!r} (Blender takes {params})")
            if k in call:
                raise LayoutError(f"{fn}: {k!r} given twice")
            call[k] = v
        icon = call.get("icon")
        if icon is not None and icon not in rna().icons:
            raise LayoutError(f"{fn}: unknown icon {icon!r}")
        text = call.get("text")
        if text is not None and not isinstance(text, str):
            raise LayoutError(f"{fn}: text must be a str, got {type(text).__name__}")
        entry = {"depth": self.depth, "fn": fn}
        for k, v in call.items():
            if k in ("data", "dataptr", "active_dataptr"):
                entry[k] = type(v).__name__
            else:
                entry[k] = _plain(v)
        self.log.append(entry)
        return call

    def _child(self) -> RecordingLayout:
        return RecordingLayout(self.log, self.depth + 1)

    def row(self, *a: Any, **kw: Any) -> RecordingLayout:
        self._record("row", a, kw)
        return self._child()

    def column(self, *a: Any, **kw: Any) -> RecordingLayout:
        self._record("column", a, kw)
        return self._child()

    def box(self, *a: Any, **kw: Any) -> RecordingLayout:
        self._record("box", a, kw)
        return self._child()

    def split(self, *a: Any, **kw: Any) -> RecordingLayout:
        call = self._record("split", a, kw)
        if not 0.0 <= call.get("factor", 0.0) <= 1.0:
            raise LayoutError(f"split: factor {call['factor']} outside 0…1")
        return self._child()

    def grid_flow(self, *a: Any, **kw: Any) -> RecordingLayout:
        self._record("grid_flow", a, kw)
        return self._child()

    def column_flow(self, *a: Any, **kw: Any) -> RecordingLayout:
        self._record("column_flow", a, kw)
        return self._child()

    def panel(self, *a: Any, **kw: Any) -> tuple[RecordingLayout, RecordingLayout]:
        """Returns an open body, so closed-by-default sections are drawn too."""
        self._record("panel", a, kw)
        return self._child(), self._child()

    def label(self, *a: Any, **kw: Any) -> None:
        self._record("label", a, kw)

    def separator(self, *a: Any, **kw: Any) -> None:
        self._record("separator", a, kw)

    def progress(self, *a: Any, **kw: Any) -> None:
        call = self._record("progress", a, kw)
        f = call.get("factor", 0.0)
        if not (isinstance(f, (int, float)) and 0.0 <= f <= 1.0):
            raise LayoutError(f"progress: factor {f!r} outside 0…1")
        if call.get("type", "BAR") not in ("BAR", "RING", "PIE"):
            raise LayoutError(f"progress: type {call.get('type')!r}")

    def prop(self, *a: Any, **kw: Any) -> None:
        call = self._record("prop", a, kw)
        data, name = call["data"], call["property"]
        if name not in data.bl_rna.properties:
            raise LayoutError(f"prop: {type(data).__name__} has no property {name!r}")

    def operator(self, *a: Any, **kw: Any) -> _OperatorProps:
        import bpy

        call = self._record("operator", a, kw)
        idname = call["operator"]
        mod, _, name = idname.partition(".")
        try:
            rna_type = getattr(getattr(bpy.ops, mod), name).get_rna_type()
        except (AttributeError, KeyError, RuntimeError) as e:
            raise LayoutError(f"operator {idname!r} is not registered ({e})") from None
        return _OperatorProps(self.log[-1], {p.identifier for p in rna_type.properties})

    def template_list(self, *a: Any, **kw: Any) -> None:
        import bpy

        call = self._record("template_list", a, kw)
        if not hasattr(bpy.types, call["listtype_name"]):
            raise LayoutError(f"template_list: UIList {call['listtype_name']!r} is not registered")
        for data_key, prop_key in (("dataptr", "propname"), ("active_dataptr", "active_propname")):
            if call[prop_key] not in call[data_key].bl_rna.properties:
                raise LayoutError(f"template_list: {type(call[data_key]).__name__} has no {call[prop_key]!r}")

    def template_icon(self, *a: Any, **kw: Any) -> None:
        self._record("template_icon", a, kw)

    def __getattr__(self, name: str) -> Any:
        if name in rna().params:
            return lambda *a, **kw: self._record(name, a, kw)
        raise AttributeError(f"UILayout has no attribute {name!r}")


class NullLayout:
    """Accepts every layout call and does nothing: times the add-on's own
    draw code without the recorder's checks."""

    def __getattr__(self, name: str) -> Any:
        return self._call

    def __setattr__(self, name: str, value: Any) -> None:
        pass

    def _call(self, *a: Any, **kw: Any) -> Any:
        return self

    def panel(self, *a: Any, **kw: Any) -> tuple[NullLayout, NullLayout]:
        return self, self


def texts(log: list[dict[str, Any]]) -> list[str]:
    return [e["text"] for e in log if isinstance(e.get("text"), str) and e["text"]]


def draw_context(width: int) -> Any:
    import bpy

    return SimpleNamespace(
        region=SimpleNamespace(width=width),
        preferences=bpy.context.preferences,
        window_manager=bpy.context.window_manager,
    )


def draw_all(mod: Any, layout_factory: Any, width: int) -> dict[str, Any]:
    """Draws every panel (header included) into its own layout."""
    ctx = draw_context(width)
    out = {}
    for cls, _fn in mod.panels.DRAWS:
        layout = layout_factory()
        panel = SimpleNamespace(layout=layout)
        if hasattr(cls, "draw_header"):
            cls.draw_header(panel, ctx)
        cls.draw(panel, ctx)
        out[cls.bl_idname] = layout
    return out


# ---- demo data -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def record_demo(monitor: Any, names: list[str], seed: int = 7) -> None:
    """Requests, failures, health, queue, processing and VRAM for each of
    ``names``, straight into the add-on's engine."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for i, name in enumerate(names):
        svc = monitor.service(name)
        lat = rng.lognormal(math.log(80 + 120 * i), 0.4, 400)
        ok = rng.random(400) > 0.01 * i
        svc.record_many(lat, ok, error="timeout" if i % 2 else "http_5xx")
        svc.record(30_000.0, ok=False, error="oom")
        svc.health(True, 4.0 + i)
        svc.set_queue(running=i % 3, pending=i)
        for _ in range(5):
            svc.record_processing(float(rng.lognormal(math.log(1500), 0.3)))
        svc.set_resource(vram_used_bytes=(2 + i * 0.7) * 2**30, vram_total_bytes=12 * 2**30)


# ---- the run -----------------------------------------------------------------------------


class Report:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {"checks": {}, "timings": {}, "draws": {}, "info": {}, "errors": []}

    def check(self, name: str, ok: Any, detail: Any = "") -> bool:
        self.data["checks"][name] = {"ok": bool(ok), "detail": str(detail)[:4000]}
        print(f"[{'ok' if ok else 'FAIL'}] {name}: {str(detail)[:300]}", flush=True)
        return bool(ok)


def isolate(work: Path) -> None:
    """Every Blender user directory under ``work`` (set before ``import bpy``)."""
    user = work / "blender-user"
    for var, sub in (
        ("BLENDER_USER_RESOURCES", ""),
        ("BLENDER_USER_CONFIG", "config"),
        ("BLENDER_USER_SCRIPTS", "scripts"),
        ("BLENDER_USER_EXTENSIONS", "extensions"),
        ("BLENDER_USER_DATAFILES", "datafiles"),
    ):
        p = user / sub if sub else user
        p.mkdir(parents=True, exist_ok=True)
        os.environ[var] = str(p)
    os.environ.pop("MOVIE_DIRECTOR_METRICS_DB", None)
    os.environ.pop("MOVIE_DIRECTOR_METRICS_CONFIG", None)


def timed(fn: Any, n: int) -> dict[str, float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e6)
    samples.sort()
    return {
        "n": n,
        "median_us": statistics.median(samples),
        "p95_us": samples[int(0.95 * (n - 1))],
        "min_us": samples[0],
    }


def run(zip_path: Path, work: Path, rep: Report) -> None:
    import bpy  # first: it puts Blender's scripts/modules on sys.path
    import addon_utils

    check = rep.check
    rep.data["info"]["blender"] = bpy.app.version_string
    rep.data["info"]["online_access"] = bool(bpy.app.online_access)
    threads_before = {t.ident for t in threading.enumerate()}
    handlers_before = {
        n: len(getattr(bpy.app.handlers, n)) for n in dir(bpy.app.handlers) if isinstance(getattr(bpy.app.handlers, n), list)
    }

    # ---- install and enable through Blender's own extension operator
    result = bpy.ops.extensions.package_install_files(filepath=str(zip_path), repo="user_default", enable_on_install=True)
    check("install", result == {"FINISHED"}, result)
    installed = Path(bpy.utils.user_resource("EXTENSIONS", path="user_default")) / ADDON_ID
    check("installed_files", (installed / "blender_manifest.toml").is_file() and (installed / "__init__.py").is_file(), installed)
    check("enabled", MODULE in bpy.context.preferences.addons and addon_utils.check(MODULE)[1], MODULE)
    mod = sys.modules[MODULE]
    rt_mod = mod.runtime
    check("timer_registered", bpy.app.timers.is_registered(rt_mod.tick), "persistent tick registered at enable")

    import movie_director_metrics as mdm

    local = Path(bpy.utils.user_resource("EXTENSIONS", path=".local")).resolve()
    engine_file = Path(mdm.__file__).resolve()
    check("engine_bundled", local in engine_file.parents, f"{engine_file} (wheel dir {local})")
    rep.data["info"]["engine_file"] = str(engine_file)

    # ---- demo backends and preferences
    prefs = bpy.context.preferences.addons[MODULE].preferences
    sim = None
    try:
        from movie_director_metrics.simulator import Simulator

        sim = Simulator(latency_ms=15.0, error_rate=0.0, queue=3, job_s=0.5, seed=3)
        demo = [(c.name, c.kind, c.url) for c in sim.configs()]
        rep.data["info"]["backends_from"] = "movie_director_metrics.simulator.Simulator"
    except ImportError:
        demo = []
        rep.data["info"]["backends_from"] = "none (no simulator in this engine build)"
    dead_port = free_port()
    backends = demo + [
        ("render-farm", "http", f"http://127.0.0.1:{dead_port}"),
        ("cloud-llm", "openai", "https://api.example.invalid"),
    ]
    storage = work / "history" / "metrics.sqlite3"
    prefs.storage_path = str(storage)
    prefs.refresh_interval_s = 1.0
    for name, kind, url in backends:
        item = prefs.backends.add()
        item.name, item.kind, item.url = name, kind, url
    rt = rt_mod.get()
    rt_mod.tick()
    check("lifecycle_idle", rt.wait_idle(20.0), rt.threads())
    rt_mod.tick()
    check("engine_running", rt.monitor is not None and not rt.error, rt.error or rt.monitor)
    check("storage_in_use", rt.monitor is not None and rt.monitor.storage_path == storage, getattr(rt.monitor, "storage_path", None))
    default = rt_mod.default_storage_path(create=False)
    check("default_storage_under_extension_dir", "extensions" in default.parts and ADDON_ID in default.parts, default)

    recorded = [f"svc-{i:02d}" for i in range(N_SERVICES - len(backends))]
    record_demo(rt.monitor, recorded)
    rep.data["info"]["llm_note"] = rt.llm_note
    if rt.llm is not None:
        for i in range(20):
            rt.llm.record("openai", "gpt-4o-mini", {"prompt_tokens": 1200 + i, "completion_tokens": 300}, latency_ms=800.0 + 10 * i, ttft_ms=240.0)
        for i in range(5):
            rt.llm.record("ollama", "llama3.1:8b", {"prompt_tokens": 900, "completion_tokens": 200}, latency_ms=1500.0, ttft_ms=90.0,
                          base_url="http://127.0.0.1:11434")
    # let the collectors poll a few rounds
    deadline = time.monotonic() + 12.0
    while time.monotonic() < deadline:
        rt_mod.tick()
        states = {b.name: b.state for b in rt.view.backends}
        if not demo or (states.get(demo[0][0]) == "up" and states.get("render-farm") == "down"):
            break
        time.sleep(0.25)
    rt_mod.tick()
    v = rt.view
    states = {b.name: (b.state, b.reason, b.error_text) for b in v.backends}
    rep.data["info"]["backend_states"] = states
    if demo:
        check("backend_up", states[demo[0][0]][0] == "up", states)
    check("backend_down", states["render-farm"][0] == "down", states["render-farm"])
    check(
        "remote_blocked_with_reason",
        states["cloud-llm"][0] == "blocked" and "Online Access" in states["cloud-llm"][1],
        states["cloud-llm"],
    )
    check("ten_services", len(v.services) == N_SERVICES, [s.name for s in v.services])
    check("tick_no_errors", not rt.error and not rt._last_logged, rt.error or rt._last_logged)

    # ---- the .blend stays clean: save, then monitor, draw, export
    # bpy.data.is_dirty cannot tell here: in bpy-as-a-module it stays True
    # even right after save_as_mainfile (measured, 4.5).  So: no operator
    # of the add-on pushes undo (what marks a file modified), and the
    # data-blocks and their custom properties are unchanged at the end.
    ops_with_undo = [c.bl_idname for c in mod.operators.classes if "UNDO" in getattr(c, "bl_options", set())]
    check("no_undo_operators", not ops_with_undo, ops_with_undo)
    fingerprint_before = data_fingerprint(bpy)
    rep.data["info"]["is_dirty_after_save_in_bpy_module"] = _is_dirty_after_save(bpy, work)

    # ---- timings (10 services)
    # Show the sidebar of the 3D viewports (hidden in the factory layout)
    # so tag_redraw has regions to tag.
    sidebars = 0
    for area in bpy.context.window_manager.windows[0].screen.areas:
        if area.type == "VIEW_3D":
            area.spaces.active.show_region_ui = True
            sidebars += 1
    version0, redraws0 = rt.version, rt.redraws
    rep.data["timings"]["tick"] = timed(rt_mod.tick, 300)
    rep.data["info"]["view_changes_in_300_ticks"] = rt.version - version0
    check("redraw_only_on_change", rt.version - version0 < 100, f"{rt.version - version0} view changes, {rt.redraws - redraws0} region tags in 300 ticks")
    same = rt.redraws
    rt._set_view(bpy.context, rt.view)
    unchanged = rt.redraws - same
    rt._set_view(bpy.context, mod.view.DashboardView(status="running", message="changed"))
    changed = rt.redraws - same
    rt_mod.tick()
    check("tag_only_when_changed", unchanged == 0 and changed == sidebars >= 1, f"same view: {unchanged} tags; changed view: {changed} tags for {sidebars} sidebars")
    for width, label in ((250, "narrow"), (500, "wide")):
        rep.data["timings"][f"draw_all_{label}_recording"] = timed(lambda: draw_all(mod, RecordingLayout, width), 100)
        rep.data["timings"][f"draw_all_{label}_null"] = timed(lambda: draw_all(mod, NullLayout, width), 300)

    # ---- draw every panel (narrow and wide) against the recording layout
    ws = bpy.context.window_manager.movie_director
    ws.compare_metric = "avg_ms"
    for width, label in ((250, "narrow"), (500, "wide")):
        try:
            layouts = draw_all(mod, RecordingLayout, width)
            rep.data["draws"][label] = {k: lay.log for k, lay in layouts.items()}
            check(f"draw_{label}", True, {k: len(lay.log) for k, lay in layouts.items()})
        except Exception as e:
            check(f"draw_{label}", False, f"{type(e).__name__}: {e}\n{traceback.format_exc()}")

    # preferences panel
    try:
        rec = RecordingLayout()
        mod.preferences.draw_preferences(prefs, rec, draw_context(600))
        rep.data["draws"]["preferences"] = rec.log
        check("draw_preferences", True, len(rec.log))
    except Exception as e:
        check("draw_preferences", False, f"{type(e).__name__}: {e}\n{traceback.format_exc()}")

    # ---- compare table: the engine's ranking, sortable by name, reversible
    rt_mod.tick()
    rows = [(r.name, r.rank, r.text) for r in ws.compare_rows]
    ranked = [n for n, _ in rt.monitor.compare("avg_ms", "1h")]
    check("compare_rows", [n for n, _, _ in rows] == ranked and len(rows) >= N_SERVICES, rows)
    flag = 1 << 30
    ws.compare_sort = "NAME"
    _, order = mod.panels.compare_order(ws.compare_rows, ws, "", flag)
    by_name = [n for _, n in sorted(zip(order, [r.name for r in ws.compare_rows]))]
    ws.compare_reverse = True
    _, rev = mod.panels.compare_order(ws.compare_rows, ws, "", flag)
    by_name_rev = [n for _, n in sorted(zip(rev, [r.name for r in ws.compare_rows]))]
    check("compare_sort_name", by_name == sorted(by_name) and by_name_rev == sorted(by_name, reverse=True), by_name)
    ws.compare_sort, ws.compare_reverse = "RANK", False

    # ---- time ranges: 7d/30d with storage
    ws.window = "7d"
    check("window_7d_with_storage", rt.view.window == "7d" and not rt.view.window_note, (rt.view.window, rt.view.window_note))
    ws.window = "5m"

    # ---- history chart
    rec = RecordingLayout()
    mod.operators.draw_history(rec, "svc-00", "avg_ms", "1h", 2000.0)
    check("history_draw", any("svc-00" in t for t in texts(rec.log)) and any(t.startswith("max ") for t in texts(rec.log)), texts(rec.log))
    px = mod.charts.rasterize([1.0, 2.0, float("nan"), 4.0], 64, 32, threshold=3.0)
    check("chart_raster", px.shape == (32, 64, 4) and px.dtype.name == "float32" and px[..., 3].max() > 0, px.shape)
    icon_id = mod.charts.icon("test", [1.0, 2.0, 3.0], ("sig",), 32, 16)
    rep.data["info"]["preview_icon_id_background"] = icon_id

    # ---- test connection (worker thread, reported back through the tick)
    try:
        r1 = bpy.ops.movie_director.test_connection(backend="render-farm")
        names = [demo[0][0]] if demo else []
        r2 = bpy.ops.movie_director.test_connection(backend=names[0]) if names else {"FINISHED"}
        rt.wait_idle(15.0)
        rt_mod.tick()
        checks = {b.name: b.check_text for b in rt.view.backends}
        ok = r1 == {"FINISHED"} and r2 == {"FINISHED"} and checks["render-farm"].startswith("down")
        if names:
            ok = ok and checks[names[0]].startswith("up")
        check("test_connection", ok, checks)
    except Exception as e:
        check("test_connection", False, f"{type(e).__name__}: {e}")

    # ---- export through the operator
    exports = {}
    for fmt, window, ext in (("CSV", "1h", "csv"), ("JSON", "24h", "json")):
        path = work / f"export.{ext}"
        try:
            res = bpy.ops.movie_director.export_metrics(filepath=str(path), format=fmt, window=window)
            exports[fmt] = str(path)
            check(f"export_{ext}", res == {"FINISHED"} and path.is_file(), res)
        except Exception as e:
            check(f"export_{ext}", False, f"{type(e).__name__}: {e}")
    rep.data["info"]["exports"] = exports
    try:
        bpy.ops.movie_director.export_metrics(filepath=str(work / "no" / "such" / "dir" / "x.csv"), format="CSV", window="1h")
        check("export_error_reported", False, "no error for a missing directory")
    except RuntimeError as e:  # an operator's ERROR report raises here
        check("export_error_reported", "Export failed" in str(e), e)

    # ---- alerts and LLM sections
    v = rt.view
    rep.data["info"]["alerts"] = [v.alerts.available, v.alerts.note, [a.name for a in v.alerts.rows]]
    rep.data["info"]["llm"] = [v.llm.available, v.llm.note]
    if rt.llm is not None:
        check("llm_section", v.llm.available and [m.model for m in v.llm.models] == ["openai/gpt-4o-mini", "ollama/llama3.1:8b"], v.llm)
    else:
        check("llm_section", v.llm.note.startswith("LLM tracking not available"), v.llm)
    check("alerts_section", v.alerts.available or "not available" in v.alerts.note, v.alerts)
    if v.alerts.available:
        # svc-05 (p95 ~ 1.5 s) against a 100 ms threshold: pending at once
        prefs.default_threshold_ms = 100.0
        rt_mod.tick()
        pending = [a for a in rt.view.alerts.rows if a.rule == rt_mod.RULE_SLOW and a.state in ("pending", "firing")]
        check("alert_pending", len(pending) >= 5, rt.view.alerts)
        try:
            res = bpy.ops.movie_director.snooze_alert(rule=rt_mod.RULE_SLOW, minutes=30)
            rt_mod.tick()
            # a snooze stops alerts from starting: the pending ones go back to normal
            still = [a for a in rt.view.alerts.rows if a.rule == rt_mod.RULE_SLOW and a.state == "pending"]
            listed = [r for r, _ in rt.view.alerts.snoozed]
            check("alert_snooze", res == {"FINISHED"} and not still and listed == [rt_mod.RULE_SLOW], rt.view.alerts)
        except Exception as e:
            check("alert_snooze", False, f"{type(e).__name__}: {e}")
        rec = RecordingLayout()
        mod.panels.draw_alerts(rec, draw_context(500))
        rep.data["draws"]["alerts_active"] = rec.log
        prefs.default_threshold_ms = 2000.0
        rt_mod.tick()

    # ---- preferences changes
    prefs.refresh_interval_s = 3.0
    check("refresh_interval_applied", rt_mod.tick() == 3.0, rt.interval_s)
    prefs.refresh_interval_s = 9.0  # clamped by the property to 5
    check("refresh_interval_clamped", rt_mod.tick() == 5.0 and prefs.refresh_interval_s == 5.0, prefs.refresh_interval_s)
    gen = rt._gen
    prefs.default_threshold_ms = 100.0
    rt_mod.tick()
    svc = next(s for s in rt.view.services if s.name == "svc-03")
    check("threshold_applied_without_restart", svc.threshold_ms == 100.0 and svc.avg.level == "bad" and rt._gen == gen, (svc.threshold_ms, svc.avg))
    prefs.backends["render-farm"].enabled = False
    rt.wait_idle(15.0)
    rt_mod.tick()
    check("backend_disabled", {b.name: b.state for b in rt.view.backends}["render-farm"] == "disabled", rt.view.backends)
    prefs.use_storage = False
    rt.wait_idle(15.0)
    rt_mod.tick()
    check("storage_off_reopens", rt.monitor is not None and rt.monitor.storage_path is None, rt.view.storage_text)
    ws.window = "30d"
    check("window_30d_needs_storage", rt.view.window == "24h" and "storage" in rt.view.window_note, rt.view.window_note)
    ws.window = "5m"
    check("history_flushed_on_reopen", storage.is_file() and storage.stat().st_size > 0, storage)
    prefs.use_storage = True
    rt.wait_idle(15.0)
    rt_mod.tick()

    after = data_fingerprint(bpy)
    diff = {k: (fingerprint_before.get(k), v) for k, v in after.items() if fingerprint_before.get(k) != v}
    check("blend_data_untouched", not diff, diff or "after ticks, draws, compare, exports and preference edits")

    # ---- disable: nothing left behind
    if sim is not None:
        sim.close()
    tick_fn = rt_mod.tick
    t0 = time.perf_counter()
    bpy.ops.preferences.addon_disable(module=MODULE)
    rep.data["timings"]["disable_s"] = time.perf_counter() - t0
    _check_clean(rep, bpy, mod, tick_fn, threads_before, handlers_before, "disable")

    # ---- enable again (symmetry), then disable again
    bpy.ops.preferences.addon_enable(module=MODULE)
    mod2 = sys.modules[MODULE]
    check("reenable_timer", bpy.app.timers.is_registered(mod2.runtime.tick), "")
    mod2.runtime.tick()
    ok = mod2.runtime.get().wait_idle(20.0)
    mod2.runtime.tick()
    prefs = bpy.context.preferences.addons[MODULE].preferences
    rt2 = mod2.runtime.get()
    # Blender drops an add-on's preferences when it is disabled: enabled
    # again, it starts from the defaults (no backends, the default file).
    check(
        "reenable_runs",
        ok and rt2.monitor is not None and rt2.monitor.storage_path == mod2.runtime.default_storage_path(create=False),
        (ok, rt2.monitor, rt2.error, rt2.view.status, len(prefs.backends)),
    )
    bpy.ops.preferences.addon_disable(module=MODULE)
    _check_clean(rep, bpy, mod2, mod2.runtime.tick, threads_before, handlers_before, "redisable")


def data_fingerprint(bpy: Any) -> dict[str, Any]:
    """Every data-block (by collection) with its custom-property keys, less
    the window managers (runtime-only, where this add-on keeps its UI state)."""
    out = {}
    for attr in dir(bpy.data):
        if attr.startswith("_") or attr == "window_managers":
            continue
        coll = getattr(bpy.data, attr, None)
        if isinstance(coll, bpy.types.bpy_prop_collection):
            out[attr] = sorted((i.name, tuple(sorted(i.keys()))) for i in coll if hasattr(i, "keys"))
    return out


def _is_dirty_after_save(bpy: Any, work: Path) -> bool:
    bpy.ops.wm.save_as_mainfile(filepath=str(work / "scene.blend"))
    return bool(bpy.data.is_dirty)


def _check_clean(rep: Report, bpy: Any, mod: Any, tick_fn: Any, threads_before: set[int | None], handlers_before: dict[str, int], tag: str) -> None:
    check = rep.check
    check(f"{tag}_addon_off", MODULE not in bpy.context.preferences.addons, "")
    check(f"{tag}_no_timer", not bpy.app.timers.is_registered(tick_fn), "")
    deadline = time.monotonic() + 5.0
    extra: list[threading.Thread] = []
    while time.monotonic() < deadline:
        extra = [t for t in threading.enumerate() if t.ident not in threads_before and t.is_alive()]
        if not extra:
            break
        time.sleep(0.05)
    check(f"{tag}_no_threads", not extra, [t.name for t in extra])
    handlers = {
        n: len(getattr(bpy.app.handlers, n)) for n in dir(bpy.app.handlers) if isinstance(getattr(bpy.app.handlers, n), list)
    }
    check(f"{tag}_no_handlers", handlers == handlers_before, {k: (handlers_before.get(k), v) for k, v in handlers.items() if handlers_before.get(k) != v})
    left = [n for n in ("VIEW3D_PT_mdm_connection", "VIEW3D_PT_mdm_health", "MDM_UL_compare") if hasattr(bpy.types, n)]
    check(f"{tag}_classes_gone", not left and not hasattr(bpy.types.WindowManager, "movie_director"), left)
    check(f"{tag}_charts_freed", mod.charts.is_clear(), "")
    check(f"{tag}_runtime_gone", mod.runtime._runtime is None, "")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--zip", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--report", required=True)
    args = ap.parse_args()
    work = Path(args.work)
    isolate(work)
    rep = Report()
    try:
        run(Path(args.zip), work, rep)
    except Exception as e:
        rep.data["errors"].append(f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
        print(traceback.format_exc(), file=sys.stderr)
    finally:
        # Never leave a timer registered: the interpreter would hang at exit.
        import bpy

        m = sys.modules.get(MODULE)
        if m is not None and bpy.app.timers.is_registered(m.runtime.tick):
            rep.data["errors"].append("timer still registered at the end; unregistered by the driver")
            m.runtime.unregister()
        Path(args.report).write_text(json.dumps(rep.data, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
