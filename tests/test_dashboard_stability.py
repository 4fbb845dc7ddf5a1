"""Smooth UI: nothing jumps between refreshes.

Terminal dashboard (``movie_director_metrics.dashboard``): consecutive
frames of changing data (values changing magnitude, a backend going down,
a service appearing, VRAM and queue jumping) keep their row order, column
positions and widths; numbers have fixed decimals and are right-aligned.

Blender add-on, without Blender (``blender_addon/view.py`` and
``smoothing.py`` are pure Python): fixed-format texts, first-seen row
order, service sections with the same rows whatever the data, and the bar
smoothing rule (converges; threshold crossings and new maxima show at
once).  The same properties inside real Blender are checked by the driver
(``tests/blender_helpers.py``: ``layout_stability``).
"""

from __future__ import annotations

import importlib.util
import io
import math
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from movie_director_metrics import Monitor
from movie_director_metrics.collectors.scheduler import BackendStatus

ADDON = Path(__file__).resolve().parents[1] / "blender_addon"

needs_rich = pytest.mark.skipif(importlib.util.find_spec("rich") is None, reason="rich (the cli extra) is not installed")


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"mdm_addon_{name}", ADDON / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


# ---- terminal dashboard ---------------------------------------------------------------------

CAPS = {"health": "GET /", "queue": "GET /queue", "processing": "GET /history", "resources": "GET /system_stats", "models": None}
CONFIG = (("comfyui", "comfyui"), ("ollama", "ollama"), ("render-farm", "http"))
NUMERIC = ("Req", "Avg ms", "p95 ms", "OK %", "Up %", "Queue", "Proc p95", "VRAM GiB")


def _status(name: str, kind: str, state: str = "up", error: str | None = None) -> BackendStatus:
    return BackendStatus(name, kind, f"http://127.0.0.1/{name}", state, dict(CAPS), last_error=error, last_error_type=error)


def _frames() -> list[tuple[dict[str, Any], dict[str, BackendStatus], dict[str, list[float]]]]:
    """Four refreshes of one live view, each changing something."""
    out = []
    with Monitor(manual_clock=True, start_time=1_800_000_000) as m:
        svc = {name: m.service(name) for name, _ in CONFIG}

        def refresh(statuses: dict[str, BackendStatus]) -> None:
            m.advance(2)
            snap = m.snapshot("5m")
            series = {n: [float(x) for x in m.series(n, "avg_ms", "5m", 30)[1]] for n in snap}
            out.append((snap, statuses, series))

        # 1. everything up, small numbers
        for name, lat in (("comfyui", 4.0), ("ollama", 120.0), ("render-farm", 900.0)):
            svc[name].record(lat)
            svc[name].health(True, 2.0)
        svc["comfyui"].set_queue(running=0, pending=0)
        svc["comfyui"].set_resource(vram_used_bytes=0.5 * 2**30, vram_total_bytes=24 * 2**30)
        refresh({n: _status(n, k) for n, k in CONFIG})
        # 2. magnitudes jump: 25 s requests, a long queue, VRAM nearly full
        for _ in range(20):
            svc["comfyui"].record(25_000.0)
        svc["comfyui"].set_queue(running=12, pending=340)
        svc["comfyui"].set_resource(vram_used_bytes=23.5 * 2**30, vram_total_bytes=24 * 2**30)
        svc["ollama"].record(3.0, ok=False, error="http_5xx")
        refresh({n: _status(n, k) for n, k in CONFIG})
        # 3. render-farm goes down (a long error), a service only the engine
        #    knows appears (a name longer than the others would widen the
        #    first column, once: names cannot be known before they come)
        svc["render-farm"].health(False, None)
        svc["render-farm"].record(30_000.0, ok=False, error="connection_refused")
        m.service("archive").record(50.0)
        statuses = {n: _status(n, k) for n, k in CONFIG}
        statuses["render-farm"] = _status("render-farm", "http", "down", "connection refused by 127.0.0.1 after 3 retries")
        refresh(statuses)
        # 4. back to small numbers, render-farm still down
        for name in ("comfyui", "ollama"):
            svc[name].record(7.5)
        refresh(statuses)
    return out


def _text(renderable: Any, width: int) -> str:
    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None).print(renderable)
    return buf.getvalue()


def _table(text: str) -> tuple[str, list[str]]:
    """The header line and the data rows of a frame."""
    lines = text.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("Backend"))
    rows = [line for line in lines[i + 2 :] if line.strip() and not line.startswith(("alerts:", " "))]
    return lines[i], rows


def _render_all(width: int, stateful: bool) -> list[str]:
    from movie_director_metrics.dashboard import DashboardState, render

    state = DashboardState() if stateful else None
    return [
        _text(render(snap, st, series, width=width, window="5m", now=1_800_000_000, state=state), width)
        for snap, st, series in _frames()
    ]


@needs_rich
@pytest.mark.parametrize("width", [160, 120, 100])
def test_terminal_rows_and_columns_stay_put(width: int) -> None:
    frames = _render_all(width, stateful=True)
    headers = [_table(f)[0] for f in frames]
    assert len(set(headers)) == 1, headers  # same columns, same positions, same widths
    header = headers[0]
    order = []
    for f in frames:
        _, rows = _table(f)
        assert len({len(r) for r in rows} | {len(header)}) == 1, rows  # every row as wide as the header
        order.append([r.split()[0] for r in rows])
    # configured backends in config order; the newcomer is appended and stays
    assert order[0] == ["comfyui", "ollama", "render-farm"]
    assert all(o == order[-1] for o in order[2:]) and order[-1] == [*order[0], "archive"]
    # right-aligned numbers end exactly where their header ends, in every frame
    for h in NUMERIC:
        if h not in header:
            continue  # dropped on a narrow terminal (the same in every frame)
        end = header.index(h) + len(h)
        for f in frames:
            for r in _table(f)[1]:
                assert r[end - 1] != " " and (end == len(r) or r[end] == " "), (h, r)
    # and the down backend says so in its own row, without moving anything
    down = next(r for r in _table(frames[2])[1] if r.startswith("render-farm"))
    assert "down" in down


@needs_rich
def test_terminal_numbers_have_fixed_decimals() -> None:
    frames = _render_all(160, stateful=True)
    header = _table(frames[0])[0]
    cells = {h: (header.index(h) + len(h)) for h in ("Avg ms", "p95 ms", "OK %")}
    seen = set()
    for f in frames:
        for r in _table(f)[1]:
            for h, end in cells.items():
                cell = r[:end].split()[-1]
                seen.add(cell)
                assert cell == "–" or re.fullmatch(r"[\d,]+\.\d", cell), (h, cell, r)
    assert {"4.0", "25,000.0", "100.0"} <= seen  # small and large in the same shape

    from movie_director_metrics import dashboard as d

    assert (d._ms(4.25), d._ms(182.44), d._ms(2500.0), d._ms(None)) == ("4.2", "182.4", "2,500.0", "–")
    assert (d._pct(99.95), d._pct(100.0), d._pct(0.0)) == ("99.9", "100.0", "0.0")
    assert d._pct(0.29 * 100) == "29.0"  # 28.999999999999996: truncated, not to 28.9


@needs_rich
@pytest.mark.parametrize("width", [160, 60])
def test_terminal_heartbeat_strips_stay_put(width: int) -> None:
    """The heartbeat strips under the table: one per row, in the rows'
    order, all starting in one column and as long in every frame, the
    table itself unchanged by them; the glyph says the state without
    colour, and a narrow terminal keeps the newest cells."""
    from movie_director_metrics.dashboard import HEARTBEAT_GLYPHS, DashboardState, render
    from movie_director_metrics.incidents import CellState

    frames = _frames()
    cells = [
        {"comfyui": [CellState.UP] * 48, "ollama": [CellState.UNKNOWN] * 47 + [CellState.UP]},
        {"comfyui": [CellState.UP] * 48, "ollama": [CellState.UNKNOWN] * 46 + [CellState.UP] * 2},
        {"comfyui": [CellState.UP] * 48, "ollama": [CellState.UP] * 48, "render-farm": [CellState.UP] * 47 + [CellState.DOWN]},
        {"comfyui": [CellState.UP] * 48, "ollama": [CellState.UP] * 48, "render-farm": [CellState.UP] * 46 + [CellState.PARTIAL, CellState.DOWN],
         "archive": [CellState.UP] * 48},
    ]
    state, plain = DashboardState(), DashboardState()
    strips: list[dict[str, str]] = []
    for (snap, st, series), hb in zip(frames, cells):
        text = _text(render(snap, st, series, width=width, window="5m", now=1_800_000_000, state=state, heartbeats=hb), width)
        bare = _text(render(snap, st, series, width=width, window="5m", now=1_800_000_000, state=plain), width)
        assert _table(text) == _table(bare)  # the strips move nothing in the table
        lines = text.splitlines()
        start = next(i for i, ln in enumerate(lines) if ln.startswith("  heartbeat 24h"))
        strips.append({ln.split()[0]: ln for ln in lines[start + 1:] if ln.strip()})
        assert all(len(ln) <= width for ln in lines)
    last = strips[-1]
    assert list(last) == ["comfyui", "ollama", "render-farm", "archive"]  # the rows' order
    assert len({len(ln) for ln in last.values()}) == 1  # one column, one length
    glyph = {c: HEARTBEAT_GLYPHS[c][0] for c in CellState}
    assert last["render-farm"].endswith(glyph[CellState.UP] + glyph[CellState.PARTIAL] + glyph[CellState.DOWN])
    assert strips[0]["ollama"].endswith(glyph[CellState.UNKNOWN] + glyph[CellState.UP])
    assert all(f["comfyui"] == last["comfyui"] for f in strips)  # same cells, same line, every frame
    # Wide: all 48 cells after the longest name; narrow: the newest that fit.
    assert len(last["comfyui"]) == min(width, 2 + len("render-farm") + 2 + 48)


@needs_rich
def test_terminal_without_state_keeps_numeric_columns() -> None:
    """Without a DashboardState numbers still sit in reserved widths: the
    columns up to the error column stay where they are while magnitudes
    change (only a new, longer name could widen the first column)."""
    frames = _render_all(160, stateful=False)
    first_two = [_table(f)[0].rstrip() for f in frames[:2]]
    assert first_two[0] == first_two[1]


@needs_rich
def test_terminal_state_forgets_widths_on_resize() -> None:
    from movie_director_metrics.dashboard import DashboardState, render

    snap, st, series = _frames()[1]
    state = DashboardState()
    render(snap, st, series, width=160, window="5m", state=state)
    wide = dict(state.widths)
    render(snap, st, series, width=70, window="5m", state=state)
    assert state.console_width == 70 and state.widths != wide
    assert all(w <= 70 for w in state.widths.values())


@needs_rich
def test_terminal_sparklines_are_raw() -> None:
    """A spike in the series shows in the very frame it arrives: the
    sparkline is the raw data, never smoothed."""
    from movie_director_metrics.dashboard import BLOCKS, sparkline

    calm = [100.0] * 29
    assert sparkline([*calm, 5000.0])[-1] == BLOCKS[-1]
    assert sparkline([*calm, 5000.0])[:-1] == BLOCKS[0] * 29


# ---- Blender add-on: view texts and order ---------------------------------------------------


@pytest.fixture(scope="module")
def view() -> Any:
    return _load("view")


@pytest.fixture(scope="module")
def smoothing() -> Any:
    return _load("smoothing")


def test_blender_texts_have_one_shape(view: Any) -> None:
    """Milliseconds always "x.y ms", percentages always "x.y %", VRAM
    always GiB: 5 ms and 25 s read alike, 99.95 % never reads 100 %."""
    for ms in (0.04, 4.25, 182.4, 2500.0, 25_000.0, 1_800_000.0):
        assert re.fullmatch(r"[\d,]+\.\d ms", view.fmt_ms(ms)), ms
    for frac in (0.0, 0.5, 0.9995, 1.0):
        assert re.fullmatch(r"\d+\.\d %", view.fmt_pct(frac)), frac
    assert view.fmt_pct(0.9995) == "99.9 %" and view.fmt_pct(1.0) == "100.0 %" and view.fmt_pct(0.29) == "29.0 %"
    bars = [view._latency_bar("avg", ms, 2000.0).text for ms in (4.0, 900.0, 25_000.0)]
    assert all(re.fullmatch(r"avg [\d,]+\.\d ms / 2,000\.0 ms", t) for t in bars), bars


def test_blender_rows_keep_first_seen_order(view: Any) -> None:
    seen: list[str] = []
    for names in (["b", "a"], ["a", "c", "b"], ["c", "b", "d", "a"]):
        order = view.stable_order(names, seen)
        seen += [n for n in order if n not in seen]
    assert order == ["b", "a", "c", "d"]
    # a name missing for a while comes back in its old place
    assert view.stable_order(["d", "b"], seen) == ["b", "d"]
    assert view.stable_order(["a", "d", "b"], seen) == ["b", "a", "d"]


def _stats(records: Callable[[Any], None]) -> Mapping[str, Any]:
    with Monitor(manual_clock=True, start_time=1_800_000_000) as m:
        records(m.service("svc"))
        m.advance(1)
        return m.snapshot("5m")


def _shape(s: Any) -> tuple[Any, ...]:
    """What a service section lays out (panels.draw_service): which rows
    exist, not what they say."""
    return (s.vram is not None, bool(s.requests_text), bool(s.queue_text), bool(s.processing_text), bool(s.errors_text))


def test_blender_service_sections_keep_their_rows(view: Any) -> None:
    def up(svc: Any) -> None:
        svc.record(120.0)
        svc.health(True, 3.0)
        svc.set_resource(vram_used_bytes=2 * 2**30, vram_total_bytes=12 * 2**30)

    def down(svc: Any) -> None:  # no VRAM reading now, errors
        svc.record(30_000.0, ok=False, error="timeout")
        svc.record(30_000.0, ok=False, error="connection_refused")
        svc.record(30_000.0, ok=False, error="oom")
        svc.health(False, None)

    a = view.build_service("svc", "comfyui", _stats(up)["svc"], None, 2000.0, 0.95, [120.0])
    b = view.build_service("svc", "comfyui", _stats(down)["svc"], None, 2000.0, 0.95, [], keep_vram=True)
    assert _shape(a) == _shape(b)
    assert a.errors_text == "no errors" and b.vram.text == "VRAM n/a" and a.vram.text == "VRAM 2.0 / 12.0 GiB"
    assert b.errors_text.endswith("(+1 type)") and b.state == "down"


# ---- Blender add-on: bar smoothing -----------------------------------------------------------


def _run(smoothing: Any, targets: list[tuple[float, str]]) -> list[float]:
    st = None
    out = []
    for t, level in targets:
        st = smoothing.smooth_step(st, t, level)
        out.append(st.shown)
    return out


def test_smoothing_converges(smoothing: Any) -> None:
    shown = _run(smoothing, [(1.0, "ok")] + [(0.2, "ok")] * 12)
    glide = shown[1:]
    assert all(a > b for a, b in zip(glide, glide[1:]) if a != 0.2)  # monotone, no overshoot
    assert 0.2 < glide[0] < 1.0 and glide[0] == pytest.approx(0.6)  # alpha 0.5 per refresh
    settled = glide.index(0.2) + 1
    assert settled <= 7 and glide[-1] == 0.2  # lands exactly (no endless redraws)


def test_smoothing_shows_spikes_and_threshold_crossings_at_once(smoothing: Any) -> None:
    # a new maximum shows in the refresh it happens
    assert _run(smoothing, [(0.3, "ok")] * 5 + [(0.45, "ok")])[-1] == 0.45
    # a colour change shows at once, up or down
    assert _run(smoothing, [(0.3, "ok"), (0.2, "ok"), (0.25, "warn")])[-1] == 0.25
    assert _run(smoothing, [(0.9, "bad"), (0.3, "ok")])[-1] == 0.3
    # within one colour and under a recent high: glides
    shown = _run(smoothing, [(0.45, "ok"), (0.1, "ok"), (0.4, "ok")])
    assert shown[1] == pytest.approx(0.275) and 0.275 < shown[2] < 0.4
    # the "recent high" is the last PEAK_REFRESHES targets
    n = smoothing.PEAK_REFRESHES
    shown = _run(smoothing, [(0.45, "ok")] + [(0.1, "ok")] * n + [(0.4, "ok")])
    assert shown[-1] == 0.4


def test_smoothing_nan_and_bounds(smoothing: Any) -> None:
    assert _run(smoothing, [(math.nan, "none")]) == [0.0]
    assert _run(smoothing, [(1.7, "bad"), (-1.0, "bad")]) == [1.0, 0.5]


def test_bar_smoother_resets_with_context_and_forgets_old_bars(smoothing: Any) -> None:
    sm = smoothing.BarSmoother()
    sm.begin(("5m", 2000.0))
    assert sm.factor(("a", "p95"), 0.8, "ok") == 0.8
    sm.factor(("b", "p95"), 0.5, "ok")
    sm.end()
    sm.begin(("5m", 2000.0))
    assert sm.factor(("a", "p95"), 0.2, "ok") == pytest.approx(0.5)  # glides
    sm.end()
    assert len(sm) == 1  # "b" was not drawn: forgotten
    sm.begin(("1h", 2000.0))  # another range: drawn as is
    assert sm.factor(("a", "p95"), 0.2, "ok") == 0.2
    sm.end()


def test_bar_smoother_steps_once_per_refresh(smoothing: Any) -> None:
    """Ticks sooner than STEP_S apart (an edit refreshes at once) do not
    hurry a glide; a spike still shows at once."""
    sm = smoothing.BarSmoother(step_s=1.0)
    sm.begin(None, now=0.0)
    sm.factor("a", 0.8, "ok")
    sm.begin(None, now=1.0)
    assert sm.factor("a", 0.2, "ok") == pytest.approx(0.5)
    sm.begin(None, now=1.3)  # too soon: the glide waits
    assert sm.factor("a", 0.2, "ok") == pytest.approx(0.5)
    sm.begin(None, now=1.4)
    assert sm.factor("a", 0.95, "ok") == 0.95  # a new maximum does not wait
    sm.begin(None, now=2.0)
    assert sm.factor("a", 0.2, "ok") == pytest.approx(0.575)
