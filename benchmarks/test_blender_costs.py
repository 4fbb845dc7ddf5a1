"""Blender add-on costs with 10 services: one timer tick and one full draw
of every panel, measured inside headless Blender (``bpy`` 4.5 from PyPI, in
``.venv/bpy``) by the same driver the add-on tests use."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench_report import Report

SECTION = "Blender add-on (headless bpy 4.5, 10 services)"
ROOT = Path(__file__).resolve().parents[1]
BPY_PYTHON = ROOT / ".venv" / "bpy" / "bin" / "python"
DRIVER = ROOT / "tests" / "blender_helpers.py"
BUDGET_US = 2000.0


def test_tick_and_draw(report: Report, tmp_path: Path) -> None:
    if not BPY_PYTHON.exists():
        pytest.skip("no .venv/bpy: run `make bpy-venv` (bpy pins numpy<2, so it has its own venv)")
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from build_addon import fresh_zip  # rebuilt when a source is newer: never an old add-on
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    z = fresh_zip()
    out = tmp_path / "report.json"
    # The leak cycles belong to the add-on tests, not to these timings.
    run = subprocess.run([str(BPY_PYTHON), str(DRIVER), "--zip", str(z), "--work", str(tmp_path), "--report", str(out),
                          "--leak-cycles", "0"],
                         capture_output=True, text=True, timeout=420, cwd=tmp_path)
    data: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    t = data["timings"]
    assert "disable_s" in t and not data.get("errors"), (
        f"the Blender driver did not finish: {data.get('errors')}\n{run.stderr[-2000:]}"
    )
    rows = [
        ("timer tick: one snapshot, 10 sparklines, compare, alerts, LLM", "tick"),
        ("full draw of every panel, narrow sidebar (add-on code)", "draw_all_narrow_null"),
        ("full draw of every panel, wide sidebar (add-on code)", "draw_all_wide_null"),
    ]
    met_all = True
    for name, key in rows:
        s = t[key]
        met = s["median_us"] <= BUDGET_US
        met_all &= met
        report.target(SECTION, name, s["median_us"], "us", "<= 2 ms", met,
                      note=f"median of {s['n']}; p95 {s['p95_us']:.0f} us; Blender {data['info']['blender']}")
    for key in ("draw_all_narrow_recording", "draw_all_wide_recording"):
        s = t[key]
        report.add(SECTION, f"same draw through the checking layout ({key.split('_')[2]})", s["median_us"], "us",
                   note="every layout call checked against Blender's RNA: test overhead included")
    report.add(SECTION, "disable: stop workers, flush, unregister", t["disable_s"] * 1e3, "ms")
    report.enforce(met_all, f"Blender tick/draw over {BUDGET_US:.0f} us: {json.dumps({k: t[k] for _, k in rows})}")
