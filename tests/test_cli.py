"""The command line against real servers on loopback: ``check`` verdicts
and exit codes, a ``watch --demo`` frame, ``export`` from a history file,
``serve`` answering /metrics, and the dashboard's rendering rules."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from movie_director_metrics import Monitor, cli
from movie_director_metrics.collectors.scheduler import BackendStatus
from movie_director_metrics.simulator import Simulator

# The dashboard needs the `cli` extra; without it those tests skip (shown by -ra)
# and check/export/serve are still tested.
needs_rich = pytest.mark.skipif(
    importlib.util.find_spec("rich") is None, reason="rich (the cli extra) is not installed"
)


@pytest.fixture(autouse=True)
def _private_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never the user's history or config: both point into tmp_path."""
    monkeypatch.setenv("MOVIE_DIRECTOR_METRICS_DB", str(tmp_path / "metrics.sqlite3"))
    monkeypatch.setenv("MOVIE_DIRECTOR_METRICS_CONFIG", str(tmp_path / "backends.toml"))


@pytest.fixture(scope="module")
def sim() -> Any:
    with Simulator(latency_ms=5, error_rate=0, seed=11) as s:
        yield s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(path: Path, backends: list[dict[str, Any]]) -> Path:
    lines = []
    for b in backends:
        lines.append("[[backend]]")
        for k, v in b.items():
            lines.append(f"{k} = {json.dumps(v)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


# --- check ---------------------------------------------------------------------------


def test_check_verdicts_and_exit_code(tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]) -> None:
    refused = f"http://127.0.0.1:{free_port()}"
    cfg = write_config(tmp_path / "b.toml", [
        {"name": "comfy", "kind": "comfyui", "url": sim.comfyui.url},
        {"name": "llm", "kind": "openai", "url": sim.llm.url},
        {"name": "forge", "kind": "a1111", "url": refused},
        {"name": "cloud", "kind": "openai", "url": "http://192.0.2.10:8000"},  # TEST-NET: never contacted
        {"name": "old", "kind": "http", "url": refused, "enabled": False},
    ])
    rc, out, err = run(["check", "--config", str(cfg)], capsys)
    assert rc == 1, out + err
    lines = {line.split()[1]: line for line in out.splitlines() if line[:1].isupper() and len(line.split()) > 1}
    assert lines["comfy"].startswith("UP") and "version 0.3.64" in lines["comfy"]
    assert lines["llm"].startswith("UP")
    # The cause, then a line with what to do about it.
    assert lines["forge"].startswith("DOWN") and "refused: GET /internal/ping: connection refused" in lines["forge"]
    after = out.splitlines()[out.splitlines().index(lines["forge"]) + 1]
    assert after.strip().startswith("fix: nothing listens at 127.0.0.1:") and "7860" in after
    assert lines["cloud"].startswith("BLOCKED") and "--allow-remote" in lines["cloud"]
    assert lines["old"].startswith("DISABLED")
    # What the LLM server cannot report is listed, with why.
    assert re.search(r"n/a: processing \(.+\)", out) and re.search(r"n/a: resources \(.+\)", out)
    assert "2 of 4 enabled backends up" in out
    assert f"config: {cfg}" in out


def test_check_all_up_is_exit_0(tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path / "b.toml", [
        {"name": "comfy", "kind": "comfyui", "url": sim.comfyui.url},
        {"name": "old", "kind": "http", "url": f"http://127.0.0.1:{free_port()}", "enabled": False},
    ])
    rc, out, _ = run(["check", "--config", str(cfg)], capsys)
    assert rc == 0, out
    assert "1 of 1 enabled backends up" in out


def test_check_json(tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path / "b.toml", [
        {"name": "llm", "kind": "openai", "url": sim.llm.url},
        {"name": "gone", "kind": "ollama", "url": f"http://127.0.0.1:{free_port()}"},
    ])
    rc, out, _ = run(["check", "--config", str(cfg), "--json"], capsys)
    doc = json.loads(out)
    assert rc == 1 and doc["ok"] is False
    by_name = {b["name"]: b for b in doc["backends"]}
    assert by_name["llm"]["state"] == "up" and by_name["llm"]["capabilities"]["processing"] is None
    assert by_name["gone"]["state"] == "down" and by_name["gone"]["last_error_type"] == "connection_refused"


def test_check_bad_config_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path / "bad.toml", [{"name": "x", "kind": "comfy", "url": "http://127.0.0.1:1"}])
    rc, out, err = run(["check", "--config", str(cfg)], capsys)
    assert rc == 2 and out == ""
    assert str(cfg) in err and ".kind" in err and "comfyui" in err
    rc, _, err = run(["check", "--config", str(tmp_path / "missing.toml")], capsys)
    assert rc == 2 and "no such config file" in err
    (tmp_path / "broken.toml").write_text("[[backend]\n")
    rc, _, err = run(["check", "--config", str(tmp_path / "broken.toml")], capsys)
    assert rc == 2 and "not valid TOML" in err


# --- watch ---------------------------------------------------------------------------


@needs_rich
def test_watch_demo_once_renders_real_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(["watch", "--demo", "--once", "--width", "120"], capsys)
    assert rc == 0, err
    lines = out.splitlines()
    assert all(len(line) <= 120 for line in lines)
    assert "window 5m" in lines[0] and "2/2 up" in lines[0]
    header = next(line for line in lines if line.startswith("Backend"))
    for col in ("Status", "Avg ms", "p95 ms", "OK %", "Up %", "Queue", "Proc p95", "VRAM GiB", "Latency 5m"):
        assert col in header
    comfy = next(line for line in lines if line.startswith("comfyui-demo"))
    llm = next(line for line in lines if line.startswith("llm-demo"))
    # comfyui: up, latency numbers, queue r/p, processing time and VRAM used/total.
    # (The kind suffix is the first thing to go when an error type needs room.)
    # Fixed decimals: milliseconds and percentages with one ("100.0", "57.1").
    assert re.search(r"comfyui-demo(\s+comfyui)?\s+up\s+\d+\s+[\d,]+\.\d\s+[\d,]+\.\d\s+[\d.]+\s+100\.0\s+\d+/\d+\s+[\d,]+\.\d\s+[\d.]+/24\.0", comfy), comfy
    # The LLM server has no processing or VRAM figures: n/a, not dashes or zeros.
    # (Queue may read n/a: the openai collector gives up on /metrics when the
    # demo's random 500 lands on it during detection.)
    assert re.search(r"llm-demo(\s+openai)?\s+up\s+\d+\s+[\d,]+\.\d\s+[\d,]+\.\d\s+[\d.]+\s+100\.0\s+(\d+/\d+|n/a)\s+n/a\s+n/a", llm), llm
    assert any(ch in comfy for ch in "▁▂▃▄▅▆▇█")


@needs_rich
def test_watch_shows_firing_alerts_from_a_rules_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "alerts.toml"
    rules.write_text(
        '[[rule]]\nname = "any-traffic"\ntarget = "comfyui-demo"\nmetric = "count"\ncomparator = ">"\n'
        "threshold = 0\nwindow = \"5m\"\n",
        encoding="utf-8",
    )
    rc, out, err = run(["watch", "--demo", "--once", "--width", "140", "--rules", str(rules)], capsys)
    assert rc == 0, err
    assert re.search(r"alerts: FIRING any-traffic on comfyui-demo = \d+", out), out
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nname = "x"\nmetric = "p95_ms"\n', encoding="utf-8")
    rc, _, err = run(["watch", "--demo", "--once", "--rules", str(bad)], capsys)
    assert rc == 2 and "bad.toml" in err and "alert rules" in err


@needs_rich
def test_watch_ctrl_c_exits_0_and_releases_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_between_frames", interrupt)
    db = tmp_path / "watch.sqlite3"
    rc, out, err = run(["watch", "--demo", "--storage", str(db), "--width", "100"], capsys)
    assert rc == 0, err
    assert "comfyui-demo" in out
    # Closed: the history file is flushed and its lock released.
    with Monitor(storage=db) as m:
        assert set(m.services()) == {"comfyui-demo", "llm-demo"}


@needs_rich
def test_watch_locked_storage_falls_back_to_memory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "held.sqlite3"
    with Monitor(storage=db):
        rc, out, err = run(["watch", "--demo", "--once", "--warmup", "0", "--storage", str(db)], capsys)
    assert rc == 0
    assert err.count("\n") == 1 and "warning" in err and "history in memory only" in err and "in use by" in err
    assert "history in memory only" in out  # and under the table


@needs_rich
def test_watch_usage_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, _, err = run(["watch", "--refresh", "9"], capsys)
    assert rc == 2 and "expected 1 to 5 seconds" in err
    rc, _, err = run(["watch", "--demo", "--once", "--window", "5 minutes"], capsys)
    assert rc == 2 and "--window 5 minutes" in err
    rc, _, err = run(["watch", "--config", str(tmp_path / "nope.toml"), "--once"], capsys)
    assert rc == 2 and "nope.toml" in err
    assert run(["--help"], capsys)[0] == 0
    assert run([], capsys)[0] == 2


def test_watch_without_rich_says_how_to_install(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for mod in ("rich", "rich.console", "rich.live"):
        monkeypatch.setitem(sys.modules, mod, None)
    rc, _, err = run(["watch", "--demo", "--once"], capsys)
    assert rc == 1 and 'pip install "movie-director-metrics[cli]"' in err


def test_rich_stays_out_of_the_core_import_path() -> None:
    code = (
        "import sys, movie_director_metrics, movie_director_metrics.cli, movie_director_metrics.simulator;"
        "print('rich' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# --- dashboard -------------------------------------------------------------------------


@needs_rich
def test_sparkline() -> None:
    from movie_director_metrics.dashboard import BLOCKS, sparkline

    nan = math.nan
    assert sparkline([1.0, 2.0, nan, 8.0]) == "▁▂ █"
    assert sparkline([0.0, 7.0]) == "▁█"
    assert sparkline([5.0, 5.0, nan]) == "▄▄ "
    assert sparkline([nan, nan]) == "  "
    assert sparkline([]) == ""
    line = sparkline([float(i) for i in range(8)])
    assert line == BLOCKS


def frame_text(renderable: Any, width: int = 120) -> str:
    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None).print(renderable)
    return buf.getvalue()


@needs_rich
def test_dashboard_na_vs_no_data() -> None:
    from movie_director_metrics.dashboard import render

    with Monitor(manual_clock=True, start_time=1_800_000_000) as m:
        for name in ("ollama", "fresh"):
            s = m.service(name)
            s.record(120.0)
            s.health(True, 2.0)
        m.advance(2)
        snap = m.snapshot("5m")
    caps = {"health": "GET /", "queue": None, "processing": None, "resources": None, "models": "GET /api/tags"}
    statuses = {
        # Detected: queue/processing/VRAM cannot be reported -> n/a.
        "ollama": BackendStatus("ollama", "ollama", "http://127.0.0.1:11434", "up", dict(caps),
                                missing={"queue": "no queue endpoint", "processing": "none", "resources": "none"}),
        # Not detected yet: capabilities are None but nothing is known to be missing -> dashes.
        "fresh": BackendStatus("fresh", "comfyui", "http://127.0.0.1:8188", "unknown", {s: None for s in caps}),
        "cloud": BackendStatus("cloud", "openai", "https://api.example.com", "blocked", {s: None for s in caps},
                               missing={s: "remote host" for s in caps}),
    }
    text = frame_text(render(snap, statuses, {}, width=120, window="5m", now=1_800_000_002))
    rows = {line.split()[0]: line for line in text.splitlines() if line.split() and line.split()[0] in statuses}
    assert rows["ollama"].count("n/a") == 3 and "–" not in rows["ollama"].split("up", 1)[1].split("n/a")[0]
    assert "n/a" not in rows["fresh"] and rows["fresh"].count("–") >= 3 and "waiting" in rows["fresh"]
    assert "blocked" in rows["cloud"]
    assert "1/3 up" in text


@needs_rich
def test_dashboard_fits_narrow_terminals() -> None:
    from movie_director_metrics.dashboard import render

    with Monitor(manual_clock=True, start_time=1_800_000_000) as m:
        s = m.service("comfyui-a-rather-long-name")
        for i in range(40):
            if i % 9:
                s.record(100.0 + i)
            else:
                s.record(100.0 + i, ok=False, error="connection_refused")
            s.set_queue(1, 2)
            m.advance(1)
        snap = m.snapshot("5m")
        series = {n: m.series(n, "avg_ms", "5m", points=30)[1] for n in m.services()}
    for width in (60, 80, 100, 120, 160):
        text = frame_text(render(snap, {}, series, width=width, window="5m"), width)
        assert all(len(line) <= width for line in text.splitlines()), (width, text)
        assert "comfyui-a-rather-long-name" in text or "comfyui-a-rather-long-…" in text
    wide = frame_text(render(snap, {}, series, width=160, window="5m"), 160)
    assert "Latency 5m" in wide and "Req" in wide
    narrow = frame_text(render(snap, {}, series, width=60, window="5m"), 60)
    assert "Avg ms" in narrow and "Latency 5m" not in narrow


@needs_rich
def test_dashboard_alerts_footer_only_when_firing() -> None:
    from movie_director_metrics.dashboard import render

    assert "alerts:" not in frame_text(render({}, {}, {}, width=80, window="5m"))
    text = frame_text(render({}, {}, {}, width=80, window="5m", alerts=["comfyui p95 > 2000 ms"]))
    assert "alerts: comfyui p95 > 2000 ms" in text and "no backends configured" in text


# --- export ----------------------------------------------------------------------------


def _history(db: Path) -> None:
    with Monitor(storage=db) as m:
        a, b = m.service("comfyui"), m.service("ollama")
        for i in range(30):
            a.record(100.0 + i)
        a.record(5000.0, ok=False, error="timeout")
        b.record(42.0)


def test_export_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "h.sqlite3"
    _history(db)
    out = tmp_path / "out.json"
    rc, stdout, err = run(["export", str(out), "--storage", str(db), "--window", "1h"], capsys)
    assert rc == 0, err
    assert stdout.strip() == f"wrote {out}"
    doc = json.loads(out.read_text())
    by = {s["service"]: s for s in doc["services"]}
    assert by["comfyui"]["summary"]["requests"] == 31 and by["comfyui"]["summary"]["errors"] == 1
    assert by["ollama"]["summary"]["requests"] == 1
    csv_out = tmp_path / "out.csv"
    rc, _, err = run(["export", str(csv_out), "--storage", str(db), "--services", "ollama",
                      "--start", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))], capsys)
    assert rc == 0, err
    rows = csv_out.read_text().splitlines()
    assert rows[0].startswith("service,") and len(rows) >= 2 and all(r.startswith("ollama,") for r in rows[1:])


def test_export_while_another_process_holds_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "h.sqlite3"
    _history(db)
    with Monitor(storage=db):  # as a running `watch` would
        rc, _, err = run(["export", str(tmp_path / "o.json"), "--storage", str(db)], capsys)
    assert rc == 0, err
    assert "in use by" in err and "copy" in err
    doc = json.loads((tmp_path / "o.json").read_text())
    assert {s["service"] for s in doc["services"]} == {"comfyui", "ollama"}


def test_export_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(["export", str(tmp_path / "o.csv")], capsys)  # default file: none yet
    assert rc == 1 and "no history file at" in err and str(tmp_path / "metrics.sqlite3") in err
    db = tmp_path / "h.sqlite3"
    _history(db)
    rc, _, err = run(["export", str(tmp_path / "no-dir" / "o.csv"), "--storage", str(db)], capsys)
    assert rc == 1 and "does not exist" in err
    rc, _, err = run(["export", str(tmp_path / "o.csv"), "--storage", str(db), "--window", "3x"], capsys)
    assert rc == 1 and "3x" in err
    rc, _, err = run(["export", str(tmp_path / "o.csv"), "--end", "2025-01-01"], capsys)
    assert rc == 2 and "--end needs --start" in err
    rc, _, err = run(["export", str(tmp_path / "o.csv"), "--start", "yesterday"], capsys)
    assert rc == 2 and "ISO 8601" in err


# --- incidents ---------------------------------------------------------------------------


def _outages(db: Path) -> float:
    """A history file with two outages of "comfyui" (one ongoing when it was
    closed) and none of "ollama"; returns the first outage's start."""
    with Monitor(storage=db) as m:
        now = int(m.now())
        m.service("comfyui").restore_health([
            (now - 3000, now - 2001, True), (now - 2000, now - 1881, False), (now - 1880, now - 300, True),
            (now - 299, now - 200, False),
        ])
        m.service("ollama").restore_health([(now - 3000, now - 10, True)])
        m.outage_log.note("comfyui", now - 2000 + 0.4, "refused", "GET /: connection refused", first=True)
        return float(now - 2000)


def test_incidents_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "h.sqlite3"
    start = _outages(db)
    rc, out, err = run(["incidents", "--storage", str(db)], capsys)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == "Incidents over 24h (newest first, UTC)"
    assert lines[1].split() == ["service", "start", "end", "duration", "cause", "detail"]
    newest, oldest = lines[2], lines[3]
    # Closed while down: the end is where its last result stopped vouching (60 s later).
    assert newest.startswith("  comfyui") and "(results stopped)" in newest and "2m 39s" in newest and "unknown" in newest
    assert "2m 00s" in oldest and "refused" in oldest and "GET /: connection refused" in oldest
    rc, out, err = run(["incidents", "--storage", str(db), "--json", "--window", "1h"], capsys)
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["window"] == "1h"
    assert [(i["start_epoch_s"], i["duration_s"], i["cause"], i["ended_by"]) for i in doc["incidents"]] == [
        (start + 1701, 159.0, "unknown", "gap"), (start, 120.0, "refused", "up")]
    rc, out, err = run(["incidents", "--storage", str(db), "--json", "--start", str(start - 10), "--end", str(start + 60)],
                       capsys)
    assert rc == 0, err
    assert [i["start_epoch_s"] for i in json.loads(out)["incidents"]] == [start]
    rc, out, _ = run(["incidents", "--storage", str(db), "--service", "ollama"], capsys)
    assert rc == 0 and "(no outages in the range)" in out
    with Monitor(storage=db):  # as a running `watch` would: read from a copy
        rc, out, err = run(["incidents", "--storage", str(db), "--json"], capsys)
    assert rc == 0 and "in use by" in err and len(json.loads(out)["incidents"]) == 2


def test_incidents_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(["incidents"], capsys)  # the default file: none yet
    assert rc == 1 and "no history file at" in err
    db = tmp_path / "h.sqlite3"
    _outages(db)
    rc, _, err = run(["incidents", "--storage", str(db), "--service", "nobody"], capsys)
    assert rc == 2 and "unknown service 'nobody'" in err and "comfyui" in err
    rc, _, err = run(["incidents", "--storage", str(db), "--window", "3x"], capsys)
    assert rc == 2 and "3x" in err
    rc, _, err = run(["incidents", "--storage", str(db), "--end", "2025-01-01"], capsys)
    assert rc == 2 and "--end needs --start" in err


def test_parse_time() -> None:
    assert cli.parse_time("1700000000") == 1_700_000_000
    assert cli.parse_time("2025-06-01T12:00:00Z") == cli.parse_time("2025-06-01T12:00") == 1748779200
    assert cli.parse_time("2025-06-01T14:00+02:00") == 1748779200


# --- serve -----------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_serve_answers_metrics_and_stops_cleanly(tmp_path: Path, sig: int) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "movie_director_metrics", "serve", "--demo", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        m = re.search(r"serving (http://127\.0\.0\.1:\d+/metrics) for 2 backends; history: memory", first)
        assert m, first + (proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
        body = ""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with urllib.request.urlopen(m.group(1), timeout=5) as r:
                body = r.read().decode()
            if 'mdm_health_up{service="comfyui-demo"} 1' in body and 'service="llm-demo"' in body:
                break
            time.sleep(0.2)
        assert 'mdm_health_up{service="comfyui-demo"} 1' in body, body
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_python_dash_m_help() -> None:
    r = subprocess.run([sys.executable, "-m", "movie_director_metrics", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for cmd in ("watch", "check", "export", "serve"):
        assert cmd in r.stdout


# --- serve / watch --rules: rules evaluated, notifications sent --------------------------


def _alerts_file(path: Path, hook_url: str) -> Path:
    path.write_text(
        '[[rule]]\nname = "any-traffic"\ntarget = "comfyui-demo"\nmetric = "count"\ncomparator = ">"\n'
        'threshold = 0\nwindow = "5m"\nseverity = "info"\n\n'
        f'[[notify]]\nname = "hook"\nkind = "webhook"\nurl = "{hook_url}"\n',
        encoding="utf-8",
    )
    return path


def test_serve_rules_evaluates_and_notifies_a_webhook(tmp_path: Path) -> None:
    from loopback import LoopbackServer, Reply

    got: list[dict[str, Any]] = []
    hook = LoopbackServer()

    def receive(handler: Any) -> Reply:
        got.append(json.loads(handler.request_body))
        return Reply(200, {"ok": True})

    hook.routes = {("POST", "/hook"): receive}
    rules = _alerts_file(tmp_path / "alerts.toml", hook.url + "/hook?token=SECRETTOKEN")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "movie_director_metrics", "serve", "--demo", "--port", "0", "--rules", str(rules)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        first, second = proc.stdout.readline(), proc.stdout.readline()
        assert first.startswith("serving http://127.0.0.1:"), first
        assert second == f"alerts: 1 rules, 1 notify targets: hook (webhook {hook.url}/…)\n"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not got:
            time.sleep(0.05)
        assert got, "no notification within 15 s"
        assert (got[0]["rule"], got[0]["target"], got[0]["state"], got[0]["severity"]) == (
            "any-traffic", "comfyui-demo", "firing", "info")
        assert got[0]["value"] >= 1
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert proc.stderr is not None and "SECRETTOKEN" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        hook.close()
    assert len(got) == 1  # fired once, never resolved


@needs_rich
def test_watch_rules_notifies_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from loopback import LoopbackServer, Reply

    got: list[dict[str, Any]] = []
    hook = LoopbackServer()
    hook.routes = {("POST", "/hook"): lambda h: (got.append(json.loads(h.request_body)), Reply(204))[1]}
    try:
        rules = _alerts_file(tmp_path / "alerts.toml", hook.url + "/hook")
        rc, out, err = run(["watch", "--demo", "--once", "--width", "140", "--rules", str(rules)], capsys)
    finally:
        hook.close()
    assert rc == 0, err
    assert f"alerts: 1 rules, 1 notify targets: hook (webhook {hook.url}/…)" in err
    assert [(g["rule"], g["state"]) for g in got] == [("any-traffic", "firing")]


def test_serve_rules_errors_and_blocked_remote_targets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[notify]]\nname = "x"\nkind = "pager"\nurl = "https://a.example/SECRETTOKEN"\n', encoding="utf-8")
    rc, _, err = run(["serve", "--demo", "--port", "0", "--rules", str(bad)], capsys)
    assert rc == 2 and "bad.toml: notify[0]" in err and "kind = 'pager'" in err and "SECRETTOKEN" not in err
    remote = _alerts_file(tmp_path / "remote.toml", "https://hooks.slack.com/services/T0/B0/SECRETTOKEN")
    monitor = Monitor()
    try:
        args = cli.build_parser().parse_args(["serve", "--rules", str(remote)])
        alerts, notifier = cli._load_alerts(monitor, args, demo=False)
        try:
            cli._announce_alerts(alerts, notifier, sys.stdout)
        finally:
            notifier.close()
    finally:
        monitor.close()
    out, err = capsys.readouterr()
    assert out == "alerts: 1 rules, 1 notify targets: hook (webhook https://hooks.slack.com/…)\n"
    assert "notify target 'hook' (https://hooks.slack.com/…) is not on this machine: blocked without --allow-remote" in err
    assert "SECRETTOKEN" not in out + err


def test_watch_reads_the_alerts_file_beside_the_config_it_was_given(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--config DIR/backends.toml`` finds ``DIR/alerts.toml`` (the pair
    the Blender add-on reads too): its rule fires in the frame's footer."""
    from loopback import LoopbackServer, Reply

    with LoopbackServer({("GET", "/"): Reply(200, "ok")}) as srv:
        (tmp_path / "backends.toml").write_text(f'[[backend]]\nname = "farm"\nkind = "http"\nurl = "{srv.url}/"\n')
        (tmp_path / "alerts.toml").write_text(
            '[[rule]]\nname = "farm-probed"\ntarget = "farm"\nmetric = "health_checks"\ncomparator = ">="\n'
            "threshold = 0\nfor_s = 0\n"
        )
        rc = cli.main(["watch", "--once", "--warmup", "2", "--no-storage", "--width", "160", "--config", str(tmp_path / "backends.toml")])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "FIRING farm-probed on farm" in out.out, out.out
