"""The Blender add-on (blender_addon/), tested headless with the ``bpy``
wheel from PyPI (Blender as a Python module).

Blender runs in its own venvs, one per Blender line the add-on supports
(``bpy`` 4.5 needs numpy<2 and this venv has numpy 2, which pandas needs;
``bpy`` 5.1+ needs CPython 3.13):

- ``.venv/bpy``: ``bpy==4.5.*`` on CPython 3.11 (``make bpy-venv``),
- ``.venv/bpy5``: ``bpy==5.*`` on CPython 3.13 (``make bpy5-venv``).

Each is created here when missing and its CPython is found (~370-400 MB
download each); a line whose CPython is not on this machine is skipped,
with the reason.  ``$MDM_BPY_PYTHON`` names one interpreter to use instead
of both.  ``tests/blender_helpers.py`` runs once per interpreter:
it installs the built zip through ``bpy.ops.extensions.package_install_files``
into a throw-away user directory, enables it, starts demo backends on
loopback, calls the timer tick directly (timers never fire without a
window), draws every panel against a recording layout, exports, edits
preferences, disables and re-enables, enables and disables 50 more times
counting what could leak, and writes a JSON report that the tests below
assert on.  Every test against the report runs once per Blender line.

Run with ``-s`` to see the driver's log, including the per-cycle figures of
the leak check.
"""

from __future__ import annotations

import csv
import glob
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
ADDON = ROOT / "blender_addon"
DRIVER = Path(__file__).with_name("blender_helpers.py")


# ---- pure parts first: these run without bpy ---------------------------------------------


def _load_view() -> Any:
    spec = importlib.util.spec_from_file_location("mdm_addon_view", ADDON / "view.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


def test_view_levels_and_formatting() -> None:
    v = _load_view()
    # green < 50 %, yellow < 80 %, red beyond
    assert [v.level_of(f) for f in (0.0, 0.49, 0.5, 0.79, 0.8, 3.0, None)] == ["ok", "ok", "warn", "warn", "bad", "bad", "none"]
    # one fixed format per quantity (smooth UI: no unit or decimals switching)
    assert v.fmt_ms(None) == "n/a" and v.fmt_ms(4.25) == "4.2 ms" and v.fmt_ms(182.4) == "182.4 ms" and v.fmt_ms(2500) == "2,500.0 ms"
    assert v.fmt_bytes(6 * 2**30) == "6.0 GiB" and v.fmt_pct(0.995) == "99.5 %" and v.fmt_pct(1.0) == "100.0 %"
    assert v.fmt_pct(0.99951) == "99.9 %" and v.fmt_pct(0.0) == "0.0 %" and v.fmt_gib(6 * 2**30) == "6.0"
    assert v.fmt_age(5.9) == "5 s ago" and v.fmt_age(125) == "2 min ago" and v.fmt_age(None) == ""
    assert v.sparkline([0, 1, 2, 3, 4, 5, 6]) == "▁▂▃▄▅▆▇"
    assert v.sparkline([float("nan"), 1.0]) == "·▇" and v.sparkline([]) == ""
    bar = v._latency_bar("p95", 1600.0, 2000.0)
    assert (bar.level, bar.breach, bar.factor) == ("bad", False, 0.8)
    bar = v._latency_bar("p95", 2500.0, 2000.0)
    assert (bar.level, bar.breach, bar.factor) == ("bad", True, 1.0)
    # success 97 % against a 95 % minimum: 60 % of the allowed shortfall used
    s = v._ratio_bar("success", 0.97, 0.95)
    assert s.level == "warn" and not s.breach and s.text == "success 97.0 %"
    assert v.build_llm(None, "5m").note == "LLM tracking not available"
    assert not v.build_alerts(None, 0.0).available


def test_manifest() -> None:
    m = tomllib.loads((ADDON / "blender_manifest.toml").read_text(encoding="utf-8"))
    assert m["schema_version"] == "1.0.0" and m["type"] == "add-on"
    assert m["id"].isidentifier() and m["id"] != "movie_director_metrics"  # never shadows the engine module
    assert m["blender_version_min"] == "4.2.0" and "blender_version_max" not in m
    assert set(m["permissions"]) == {"network", "files"}
    for reason in m["permissions"].values():
        assert 0 < len(reason) <= 64 and not reason.endswith(".")
    assert len(m["wheels"]) == 1 and re.fullmatch(r"\./wheels/movie_director_metrics-[^-]+-cp311-abi3-[^-]+\.whl", m["wheels"][0])
    assert m["platforms"] == ["linux-x64"]


def test_relative_imports_only() -> None:
    """Installed, the add-on is ``bl_ext.<repo>.<id>``: it may import its
    own modules only relatively, and bpy only on the main thread's side."""
    for py in ADDON.glob("*.py"):
        text = py.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(from|import)\s+blender_addon\b", text, re.M), py.name
    for pure in ("view.py", "workers.py", "smoothing.py"):  # what the panels show; worker threads; bar smoothing
        assert not re.search(r"^\s*(import bpy|from bpy)", (ADDON / pure).read_text(encoding="utf-8"), re.M), pure
    init = (ADDON / "__init__.py").read_text(encoding="utf-8")
    assert re.findall(r"^def (\w+)", init, re.M) == ["register", "unregister"]


# ---- headless Blender -----------------------------------------------------------------------


@dataclass(frozen=True)
class BlenderLine:
    """One supported Blender line: its ``bpy`` wheel, the CPython it needs
    and the venv it lives in (what ``make bpy-venv``/``bpy5-venv`` build)."""

    id: str
    spec: str
    python: str  # "3.11"
    venv: Path

    def base_python(self) -> str | None:
        """A CPython to build the venv with: this one, one under pyenv, or
        one on PATH, whichever runs (a pyenv shim on PATH may not)."""
        if sys.version_info[:2] == tuple(int(x) for x in self.python.split(".")):
            return sys.executable
        exe = f"python{self.python}"
        candidates = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{self.python}.*/bin/{exe}")), reverse=True)
        candidates += [p for p in (shutil.which(exe),) if p]
        for c in candidates:
            try:
                if subprocess.run([c, "--version"], capture_output=True, timeout=30).returncode == 0:
                    return c
            except (OSError, subprocess.SubprocessError):
                continue
        return None


BLENDER_LINES = (
    BlenderLine("bpy4.5", "bpy==4.5.*", "3.11", ROOT / ".venv" / "bpy"),
    BlenderLine("bpy5", "bpy==5.*", "3.13", ROOT / ".venv" / "bpy5"),
)


def _bpy_python(line: BlenderLine | None) -> Path:
    """An interpreter that can ``import bpy``: ``$MDM_BPY_PYTHON`` (``line``
    None), else the line's venv, created when missing and its CPython is
    here; skips with the reason otherwise."""
    if line is None:
        py = Path(os.environ["MDM_BPY_PYTHON"])
    else:
        py = line.venv / "bin" / "python"
        if not py.exists():
            base = line.base_python()
            if base is None:
                pytest.skip(f"{line.spec} needs CPython {line.python}: none found (PATH, ~/.pyenv); see `make bpy-venv`/`bpy5-venv`")
            try:
                subprocess.run([base, "-m", "venv", str(line.venv)], check=True, timeout=300)
                subprocess.run(
                    [str(py), "-m", "pip", "install", "--quiet", "--no-cache-dir", line.spec], check=True, timeout=1800
                )
                (line.venv / ".installed").touch()  # what the make target leaves
            except (OSError, subprocess.SubprocessError) as e:
                pytest.skip(f"cannot install {line.spec} into {line.venv}: {e}")
    r = subprocess.run([str(py), "-c", "import bpy; print(bpy.app.version_string)"], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        pytest.skip(f"{py} cannot import bpy: {r.stderr.strip().splitlines()[-1:]}")
    return py


def _newest_source_mtime() -> float:
    paths = [*ADDON.rglob("*.py"), ADDON / "blender_manifest.toml", ROOT / "scripts" / "build_addon.py"]
    paths += [*(ROOT / "python").rglob("*.py"), *(ROOT / "crates").rglob("*.rs"), ROOT / "pyproject.toml"]
    paths += list((ROOT / "crates").rglob("Cargo.toml"))
    return max(p.stat().st_mtime for p in paths if p.is_file())


def _addon_zip() -> Path:
    m = tomllib.loads((ADDON / "blender_manifest.toml").read_text(encoding="utf-8"))
    z = ROOT / "dist" / f"{m['id']}-{m['version']}.zip"
    if z.is_file() and z.stat().st_mtime >= _newest_source_mtime():
        return z  # fresh: nothing changed since it was built
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_addon.py"), "--quiet"], capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, f"scripts/build_addon.py failed:\n{r.stdout}\n{r.stderr}"
    assert z.is_file(), r.stdout
    return z


_LINES: tuple[BlenderLine | None, ...] = (None,) if os.environ.get("MDM_BPY_PYTHON") else BLENDER_LINES


@pytest.fixture(scope="module", params=_LINES, ids=[line.id if line else "MDM_BPY_PYTHON" for line in _LINES])
def bpy_python(request: pytest.FixtureRequest) -> Path:
    return _bpy_python(request.param)


@pytest.fixture(scope="module")
def report(bpy_python: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    zip_path = _addon_zip()
    work = tmp_path_factory.mktemp("blender")
    out = work / "report.json"
    try:
        r = subprocess.run(
            [str(bpy_python), str(DRIVER), "--zip", str(zip_path), "--work", str(work), "--report", str(out)],
            capture_output=True,
            text=True,
            timeout=420,
            cwd=work,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the Blender driver hung (a timer left registered hangs bpy at exit):\n{e.stdout}\n{e.stderr}")
    assert out.is_file(), f"no report (exit {r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    data = json.loads(out.read_text(encoding="utf-8"))
    print(f"\n---- Blender {data['info'].get('blender')} ({bpy_python}) ----\n{r.stdout}")
    data["_stdout"] = r.stdout
    data["_returncode"] = r.returncode
    return data


def _checks(report: dict[str, Any], *names: str) -> None:
    missing = [n for n in names if n not in report["checks"]]
    failed = {n: report["checks"][n]["detail"] for n in names if n in report["checks"] and not report["checks"][n]["ok"]}
    assert not missing and not failed, f"missing: {missing}\nfailed: {json.dumps(failed, indent=1)}\nerrors: {report['errors']}"


def test_driver_ran_cleanly(report: dict[str, Any]) -> None:
    assert report["_returncode"] == 0 and not report["errors"], report["errors"]


def test_install_enable_and_bundled_engine(report: dict[str, Any]) -> None:
    _checks(report, "install", "installed_files", "enabled", "timer_registered", "engine_bundled")
    assert "/extensions/.local/" in report["info"]["engine_file"]


def test_icons_and_apis_exist_in_this_blender(report: dict[str, Any]) -> None:
    """Every icon named in the add-on's source, and the Blender functions it
    calls outside draws, exist in this Blender (run per Blender line)."""
    _checks(report, "icons_exist", "apis_exist")


def test_backends_status_and_online_access(report: dict[str, Any]) -> None:
    _checks(
        report,
        "lifecycle_idle",
        "engine_running",
        "storage_in_use",
        "default_storage_under_extension_dir",
        "backend_down",
        "remote_blocked_with_reason",
        "ten_services",
        "tick_no_errors",
    )
    if report["info"]["backends_from"].startswith("movie_director_metrics.simulator"):
        _checks(report, "backend_up")


def test_update_loop_tags_sidebar_only_on_change(report: dict[str, Any]) -> None:
    _checks(report, "redraw_only_on_change", "tag_only_when_changed")


def test_update_loop_builds_no_view_while_no_sidebar_shows_it(report: dict[str, Any]) -> None:
    # The idle cost of the add-on in a GUI session (make bench-blender):
    # with every sidebar closed a tick builds no view and tags nothing; the
    # panels, once drawn, get the view refreshed at once.
    _checks(report, "hidden_no_view", "refresh_when_drawn_stale")


def _panel(report: dict[str, Any], width: str, panel: str) -> list[dict[str, Any]]:
    return report["draws"][width][panel]


def _texts(log: list[dict[str, Any]]) -> list[str]:
    return [e["text"] for e in log if isinstance(e.get("text"), str) and e["text"]]


def test_panels_draw(report: dict[str, Any]) -> None:
    _checks(report, "draw_narrow", "draw_wide", "draw_preferences")
    conn = _panel(report, "narrow", "VIEW3D_PT_mdm_connection")
    names = {e.get("text"): e.get("icon") for e in conn if e["fn"] == "label"}
    assert names["render-farm"] == "COLORSET_01_VEC"  # red: connection refused
    assert names["cloud-llm"] == "INTERNET_OFFLINE"  # blocked, with its reason below
    assert any("Online Access is off" in t for t in _texts(conn))
    assert any("connection refused" in t and "ago" in t for t in _texts(conn))  # last error with its age
    tests = [e for e in conn if e["fn"] == "operator" and e["operator"] == "movie_director.test_connection"]
    assert {t["props"]["backend"] for t in tests} >= {"render-farm", "cloud-llm", ""}

    health = _panel(report, "narrow", "VIEW3D_PT_mdm_health")
    sections = [e["idname"] for e in health if e["fn"] == "panel"]
    assert len(sections) == 10 and all(e["default_closed"] for e in health if e["fn"] == "panel")
    bars = [e for e in health if e["fn"] == "progress"]
    assert bars and all(0.0 <= b["factor"] <= 1.0 and b["type"] == "BAR" for b in bars)
    t = _texts(health)
    for needle in ("avg ", "p95 ", "success ", "uptime ", "queue ", "VRAM "):
        assert any(x.startswith(needle) for x in t), needle
    assert any(set(x) <= set("▁▂▃▄▅▆▇·") for x in t)  # a sparkline
    assert {e["icon"] for e in health if e["fn"] == "label" and e.get("icon", "").startswith("COLORSET")} >= {"COLORSET_03_VEC"}
    assert any(e["fn"] == "prop" and e["property"] == "window" and e.get("expand") for e in health)
    assert any(e["fn"] == "operator" and e["operator"] == "movie_director.export_metrics" for e in health)

    wide = _panel(report, "wide", "VIEW3D_PT_mdm_health")
    assert len(wide) > len(health)  # the wide sidebar adds columns
    assert any(x.startswith("processing ") for x in _texts(wide))
    assert any(e["fn"] == "grid_flow" for e in wide) and not any(e["fn"] == "grid_flow" for e in health)

    llm = _texts(_panel(report, "narrow", "VIEW3D_PT_mdm_llm"))
    if report["info"]["llm"][0]:  # the engine has monitor.llm: per-model rows
        assert any("gpt-4o-mini" in t for t in llm) and any(e["fn"] == "progress" for e in _panel(report, "wide", "VIEW3D_PT_mdm_llm"))
    else:
        assert any(t.startswith("LLM tracking not available") for t in llm)
    alerts = _texts(_panel(report, "narrow", "VIEW3D_PT_mdm_alerts"))
    assert alerts, "the Alerts panel draws its state or a note"
    cmp_ = _panel(report, "narrow", "VIEW3D_PT_mdm_compare")
    assert any(e["fn"] == "template_list" and e["listtype_name"] == "MDM_UL_compare" for e in cmp_)


def test_compare_history_and_charts(report: dict[str, Any]) -> None:
    _checks(report, "compare_rows", "compare_sort_name", "window_7d_with_storage", "history_draw", "chart_raster")


def test_test_connection_reports_through_the_tick(report: dict[str, Any]) -> None:
    _checks(report, "test_connection")


def test_export_operator(report: dict[str, Any]) -> None:
    _checks(report, "export_csv", "export_json", "export_error_reported")
    from movie_director_metrics.export import CSV_COLUMNS, SCHEMA_PATH

    exports = report["info"]["exports"]
    with open(exports["CSV"], newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows and tuple(rows[0].keys()) == CSV_COLUMNS
    assert {r["service"] for r in rows} >= {"svc-00", "svc-05"}
    doc = json.loads(Path(exports["JSON"]).read_text(encoding="utf-8"))
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(doc, json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))


def test_preferences_changes(report: dict[str, Any]) -> None:
    _checks(
        report,
        "refresh_interval_applied",
        "refresh_interval_clamped",
        "threshold_applied_without_restart",
        "backend_disabled",
        "storage_off_reopens",
        "window_30d_needs_storage",
        "history_flushed_on_reopen",
        "llm_section",
        "alerts_section",
    )
    if report["info"]["alerts"][0]:
        _checks(report, "alert_pending", "alert_snooze")


def test_blend_not_modified(report: dict[str, Any]) -> None:
    _checks(report, "no_undo_operators", "blend_data_untouched")


def test_disable_leaves_nothing_and_reenables(report: dict[str, Any]) -> None:
    for tag in ("disable", "redisable"):
        _checks(
            report,
            f"{tag}_addon_off",
            f"{tag}_no_timer",
            f"{tag}_no_threads",
            f"{tag}_no_handlers",
            f"{tag}_classes_gone",
            f"{tag}_charts_freed",
            f"{tag}_runtime_gone",
        )
    _checks(report, "reenable_timer", "reenable_runs")


def test_costs_were_measured(report: dict[str, Any]) -> None:
    """The timings the benchmark suite reports (benchmarks/test_blender_costs.py)
    are present: a tick and both draws ran at least 20 times each."""
    t = report["timings"]
    for key in ("tick", "draw_all_narrow_null", "draw_all_wide_null"):
        assert t[key]["n"] >= 20, key


def test_layout_does_not_move_between_refreshes(report: dict[str, Any]) -> None:
    """Three refreshes (values changing magnitude, new error types, a
    backend going down): Connection and Health draw the same rows, sections
    and bars in the same order, narrow and wide."""
    names = ["rows_keep_their_order"] + [
        f"layout_stable_{w}_{p}" for w in ("narrow", "wide") for p in ("VIEW3D_PT_mdm_connection", "VIEW3D_PT_mdm_health")
    ]
    if report["info"]["backends_from"].startswith("movie_director_metrics.simulator"):
        names.append("layout_stable_backend_went_down")
    _checks(report, *names)


def test_enable_disable_cycles_leak_nothing(report: dict[str, Any]) -> None:
    """50 enable/disable cycles (demo backends polled, demo data recorded,
    a tick, a connection test, every panel drawn, a chart preview): after
    each disable no add-on timer, thread (Python or OS), file descriptor,
    handler, preview collection, WindowManager property or class is left,
    and Python objects and traced memory stay flat after warm-up (bounds
    and why: LEAK_* in tests/blender_helpers.py).  ``-s`` prints the
    per-cycle figures."""
    leak = report["leak"]
    rows = leak["cycles"]
    print(f"\nleak check, Blender {report['info']['blender']}: baseline {leak['base']}")
    print(" cycle  objects  traced KiB  register_class KiB  rss MiB  threads py/os  fds  handlers  previews  wm_props  ms")
    for r in rows:
        print(
            f" {r['cycle']:5d}  {r['objects']:7d}  {r['traced_kib']:10.1f}  {r['register_kib']:18.1f}  {r['rss_mib']:7.1f}"
            f"  {r['py_threads']:>6}/{r['os_threads']:<6}  {r['fds']:3d}  {r['handlers']:8d}  {r['previews']:8d}  {r['wm_props']:8d}"
            f"  {r['cycle_ms']:4.0f}"
        )
    assert len(rows) == 50
    if report["info"]["backends_from"].startswith("movie_director_metrics.simulator"):
        assert leak["demo_backends"], "the demo backends did not start for the leak check"
    _checks(report, "leak_cycles_ran", "leak_nothing_left", "leak_objects", "leak_traced_memory", "leak_register_class_levels_off")
