"""Outage history: incidents derived from health runs, their causes, the
heartbeat strip, the history file's ``outage_causes``, and one scripted
outage of a real loopback backend polled by real collectors.

Oracles: the engine's own uptime arithmetic (the seconds incidents add up
to are the down seconds ``uptime_pct`` counts), and a per-second model of
"a result vouches for its state until the next result or ``ttl`` seconds"
written here independently of the code under test.
"""

from __future__ import annotations

import csv
import io
import json
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loopback import refused_url, wait_until  # noqa: E402

import movie_director_metrics as mdm  # noqa: E402
from movie_director_metrics import cli  # noqa: E402
from movie_director_metrics import storage as storage_mod  # noqa: E402
from movie_director_metrics.collectors import BackendConfig, scheduler  # noqa: E402
from movie_director_metrics.collectors.http import ProbeError  # noqa: E402
from movie_director_metrics.export import SCHEMA_PATH  # noqa: E402
from movie_director_metrics.incidents import (  # noqa: E402
    INCIDENT_FIELDS,
    CellState,
    Incident,
    OutageCause,
    OutageLog,
    derive_incidents,
    heartbeat,
    merge_runs,
)

T0 = 1_800_000_000
TTL = 60


def inc(runs: list[tuple[int, int, bool]], now: float, **kw: Any) -> list[Incident]:
    return derive_incidents("svc", [(T0 + f, T0 + l, u) for f, l, u in runs], now=T0 + now, ttl_s=TTL, **kw)


def shape(incidents: list[Incident]) -> list[tuple[float, float | None, float, str | None]]:
    """(start, end, duration, ended_by) relative to T0."""
    return [(i.start - T0, None if i.end is None else i.end - T0, i.duration_s, i.ended_by) for i in incidents]


# ---- the derivation ---------------------------------------------------------------


def test_one_outage_ends_at_the_first_up_result() -> None:
    got = inc([(0, 99, True), (100, 139, False), (140, 300, True)], now=400)
    assert shape(got) == [(100, 140, 40, "up")]
    assert got[0].last_down == T0 + 139 and not got[0].ongoing
    assert got[0].cause == "unknown" and got[0].detail is None and got[0].probes is None  # no log, no counts


def test_an_unwatched_gap_splits_an_outage_and_counts_neither_way() -> None:
    # Down until 130, nobody watching for 200 s (> ttl), down again from 330.
    got = inc([(0, 99, True), (100, 130, False), (330, 350, False), (351, 400, True)], now=500)
    assert shape(got) == [(100, 190, 90, "gap"), (330, 351, 21, "up")]
    # Down, then the monitor was off, then up: the end is where the last
    # down result stopped vouching, not the up result 500 s later.
    assert shape(inc([(100, 130, False), (700, 800, True)], now=900)) == [(100, 190, 90, "gap")]
    # Closer than ttl (a restart of the monitor): one incident.
    assert shape(inc([(100, 130, False), (170, 200, False), (201, 260, True)], now=300)) == [(100, 201, 101, "up")]


def test_an_ongoing_outage_has_no_end_until_its_results_stop_vouching() -> None:
    runs = [(0, 99, True), (100, 180, False)]
    assert shape(inc(runs, now=200)) == [(100, None, 100, None)]
    assert inc(runs, now=200)[0].ongoing
    assert shape(inc(runs, now=239.5)) == [(100, None, 139.5, None)]
    assert shape(inc(runs, now=240)) == [(100, 240, 140, "gap")]  # 180 + ttl: nothing vouches for now


def test_flapping_gives_one_incident_per_down_stretch() -> None:
    runs = [(s, s, s % 2 == 0) for s in range(0, 20)]  # up on even seconds, down on odd ones
    got = inc(runs, now=25)
    assert shape(got) == [(s, s + 1, 1, "up") for s in range(1, 19, 2)] + [(19, None, 6, None)]


def test_runs_split_between_live_and_disk_are_merged_live_first() -> None:
    live = [(T0 + 100, T0 + 160, False), (T0 + 161, T0 + 300, True)]  # the engine's copy, grown since
    disk = [(T0, T0 + 99, True), (T0 + 100, T0 + 130, False)]  # the file's: older runs and a shorter copy
    merged = merge_runs(live, disk)
    assert merged == [(T0, T0 + 99, True), (T0 + 100, T0 + 160, False), (T0 + 161, T0 + 300, True)]
    assert shape(derive_incidents("svc", merged, now=T0 + 400, ttl_s=TTL)) == [(100, 161, 61, "up")]
    # A restart within ttl: the file holds the first part of the outage, the
    # engine the rest (restore_health refuses nothing here: disjoint runs).
    merged = merge_runs([(T0 + 150, T0 + 200, False), (T0 + 201, T0 + 260, True)], [(T0 + 100, T0 + 120, False)])
    assert shape(derive_incidents("svc", merged, now=T0 + 300, ttl_s=TTL)) == [(100, 201, 101, "up")]
    assert merge_runs([], [(5, 3, True)]) == []  # a damaged stored run is not trusted


def test_the_cause_is_the_first_log_entry_and_falls_back_to_error_types() -> None:
    runs = [(0, 99, True), (100, 139, False), (140, 300, True), (301, 310, False), (311, 320, True)]
    log = [
        OutageCause("svc", T0 + 100.2, "refused", "GET /: connection refused", 30, T0 + 139.1),
        OutageCause("svc", T0 + 120.0, "timeout", "later in the streak", 10, T0 + 139.0),
        OutageCause("other", T0 + 301.0, "auth", "another service's", 1, T0 + 301.0),
    ]
    first, second = inc(runs, now=400, causes=log)
    assert (first.cause, first.detail, first.probes) == ("refused", "GET /: connection refused", 40)
    assert (second.cause, second.detail, second.probes) == ("unknown", None, None)  # its log was lost

    def counts(service: str, start: float, end: float) -> dict[str, int]:
        assert (service, start, end) == ("svc", T0 + 301, T0 + 311)
        return {"connection_refused": 9, "timeout": 2}

    second = inc(runs, now=400, causes=log, error_counts=counts)[1]
    assert second.cause == "refused" and second.detail is not None and "connection_refused (9 of 11)" in second.detail
    # An error type that does not determine the cause on its own: named, not guessed.
    second = inc(runs, now=400, error_counts=lambda *a: {"http_5xx": 3})[1]
    assert second.cause == "unknown" and second.detail is not None and "http_5xx (3 of 3)" in second.detail


def _per_second(results: list[tuple[int, bool]], ttl: int, end: int) -> list[bool | None]:
    """The state of every second in [0, end): the latest result at or before
    it, if at most ttl - 1 seconds old (the last result of a second wins)."""
    latest: dict[int, bool] = {}
    for s, up in results:
        latest[s] = up
    out: list[bool | None] = []
    last: tuple[int, bool] | None = None
    for t in range(end):
        if t in latest:
            last = (t, latest[t])
        out.append(last[1] if last is not None and t - last[0] < ttl else None)
    return out


#: (seconds since the previous result, up).  At least one second apart: two
#: results in one millisecond of a manual clock are not ordered (the engine
#: keeps the up one), so the model could not say which came last.
results_strategy = st.lists(
    st.tuples(st.integers(min_value=1, max_value=20), st.booleans()), min_size=1, max_size=40
)


@settings(max_examples=60, deadline=None)
@given(results_strategy)
def test_incidents_add_up_to_the_engines_down_seconds_and_match_a_per_second_model(steps: list[tuple[int, bool]]) -> None:
    ttl = 10
    with mdm.Monitor(manual_clock=True, start_time=T0, health_ttl_s=ttl) as m:
        svc = m.service("svc")
        results = []
        t = 0
        for gap, up in steps:
            m.advance(gap)
            t += gap
            svc.health(up)
            results.append((t, up))
        # Past what the last result vouches for: nothing ongoing (the pure
        # tests cover that), so the engine's window, which counts the
        # current second whole, and the incidents cover the same seconds.
        m.advance(ttl + 1)
        end = t + ttl + 1
        got = m.incidents("1h")
        assert not any(i.ongoing for i in got)
        model = _per_second(results, ttl, end + 1)
        down_s = sum(1 for x in model if x is False)
        assert sum(i.duration_s for i in got) == down_s
        stats = m.stats("svc", "1h")
        engine_down = round(stats.uptime_known_s * (1 - (stats.uptime_pct or 0) / 100)) if stats.uptime_known_s else 0
        assert engine_down == down_s
        # Every incident is a maximal stretch of down seconds of the model.
        stretches = []
        for s, x in enumerate(model):
            if x is False and (s == 0 or model[s - 1] is not False):
                stretches.append(s)
        assert sorted(i.start - T0 for i in got) == stretches
        # And the heartbeat in one-second cells is the model itself.
        cells = heartbeat(svc.stored_health(0), T0 + end, ttl_s=ttl, span_s=end, cells=end)
        expect = [CellState.UNKNOWN if x is None else CellState.UP if x else CellState.DOWN for x in model[:end]]
        assert list(cells) == expect


# ---- the heartbeat ------------------------------------------------------------------


def test_heartbeat_cells_up_down_partial_unknown() -> None:
    runs = [(T0 + 0, T0 + 99, True), (T0 + 100, T0 + 139, False), (T0 + 140, T0 + 240, True)]
    # Six cells of 50 s over [T0 - 50, T0 + 250): nothing; up; up; down then
    # up; up; up.  Cells of 20 s: [100, 140) is two whole down cells.
    got = heartbeat(runs, T0 + 250, ttl_s=TTL, span_s=300, cells=6)
    assert got == (CellState.UNKNOWN, CellState.UP, CellState.UP, CellState.PARTIAL, CellState.UP, CellState.UP)
    assert [int(c) for c in got] == [0, 1, 1, 3, 1, 1]  # small ints for drawing
    fine = heartbeat(runs, T0 + 160, ttl_s=TTL, span_s=100, cells=5)  # [60, 160) in 20 s cells
    assert fine == (CellState.UP, CellState.UP, CellState.DOWN, CellState.DOWN, CellState.UP)
    # One down second in a day still shows.
    day = heartbeat([(T0, T0 + 3600, True), (T0 + 3601, T0 + 3601, False), (T0 + 3602, T0 + 86_000, True)],
                    T0 + 86_400, ttl_s=TTL, cells=24)
    assert day.count(CellState.PARTIAL) == 1 and day.count(CellState.DOWN) == 0
    assert heartbeat([], T0, cells=3) == (CellState.UNKNOWN,) * 3
    for bad in (0, -1, 1.5, True, 100_001):
        with pytest.raises(mdm.InvalidValueError, match=r"cells=.* expected an int from 1 to 100000"):
            heartbeat(runs, T0, cells=bad)  # type: ignore[arg-type]
    with pytest.raises(mdm.InvalidValueError, match=r"span_s=0 .* expected seconds > 0"):
        heartbeat(runs, T0, span_s=0)


def test_monitor_heartbeat_reads_the_engine_and_creates_no_service() -> None:
    with mdm.Monitor(manual_clock=True, start_time=T0) as m:
        svc = m.service("svc")
        for up in [True] * 30 + [False] * 30:
            svc.health(up)
            m.advance(1)
        cells = m.heartbeat("svc", span_s=120, cells=4)
        assert cells == (CellState.UNKNOWN, CellState.UNKNOWN, CellState.UP, CellState.DOWN)
        assert m.heartbeat("nobody", cells=5) == (CellState.UNKNOWN,) * 5
        assert m.services() == ["svc"]


# ---- the cause log ------------------------------------------------------------------


def test_the_outage_log_keeps_one_entry_per_streak_with_the_cause_most_probes_had() -> None:
    log = OutageLog()
    log.note("a", 10.0, "refused", "GET /: connection refused", first=True)
    log.note("a", 11.0, "timeout", "no reply", first=False)
    assert log.entries("a")[0].cause == "timeout", "a tie: the later cause"
    log.note("a", 12.0, "refused", "GET /: connection refused", first=False)
    log.note("b", 11.5, "auth", "x" * 500, first=True)
    log.note("a", 20.0, "dns", None, first=True)
    got = log.entries()
    assert [(e.service, e.at, e.cause, e.probes, e.last_at) for e in got] == [
        ("a", 10.0, "refused", 3, 12.0), ("b", 11.5, "auth", 1, 11.5), ("a", 20.0, "dns", 1, 20.0),
    ]
    assert got[0].detail == "GET /: connection refused"
    # A stopped server resets the kept-open connection once, then refuses: refused.
    log.note("s", 30.0, "reset", "GET /: connection closed", first=True)
    log.note("s", 31.0, "refused", "GET /: connection refused", first=False)
    log.note("s", 32.0, "refused", "GET /: connection refused", first=False)
    (s,) = log.entries("s")
    assert (s.cause, s.detail, s.probes) == ("refused", "GET /: connection refused", 3)
    assert len(got[1].detail or "") == 160  # short
    assert len(log.take_unsaved()) == 4 and log.take_unsaved() == []
    log.note("a", 21.0, "dns", None, first=False)
    assert [(e.at, e.probes) for e in log.take_unsaved()] == [(20.0, 2)]
    # Restored rows never override what the log holds, and damaged ones are skipped.
    assert log.restore([("a", 20.0, "dns", None, 1, 20.0), ("c", 5.0, "oom", "d", 3, 9.0),
                        ("c", 6.0, "oom", "d", 0, 9.0), ("c", "x", "oom", None, 1, 9.0)]) == 1
    assert [e.probes for e in log.entries("a")][-1] == 2 and log.take_unsaved() == []
    assert [(e.service, e.at) for e in log.entries(since=10.5)] == [("a", 10.0), ("b", 11.5), ("a", 20.0), ("s", 30.0)]


def test_the_outage_log_is_bounded() -> None:
    log = OutageLog()
    log.MAX_ENTRIES = 5
    for k in range(8):
        log.note(f"s{k}", float(k), "refused", None, first=True)
    assert len(log) == 5 and [e.at for e in log.entries()] == [3.0, 4.0, 5.0, 6.0, 7.0]


def test_a_worker_hands_the_cause_to_the_monitor_and_a_failing_hook_never_stops_it() -> None:
    url = refused_url()
    with mdm.Monitor() as m:
        cols = m.start_collectors([BackendConfig("gone", "http", url, interval_s=0.05)])
        wait_until(lambda: len(m.outage_log.entries()) == 1 and m.outage_log.entries()[0].probes >= 2,
                   what="two refused probes noted")
        cols.stop()
        (entry,) = m.outage_log.entries()
        assert (entry.service, entry.cause, entry.detail) == ("gone", "refused", "GET /: connection refused")
        wait_until(lambda: len(m.incidents()) == 1, what="the down results' second is sealed")
        assert m.incidents()[0].cause == "refused" and m.incidents()[0].ongoing

    class Broken(mdm.Monitor):
        @property
        def outage_log(self) -> OutageLog:
            raise RuntimeError("the log is broken")

    with Broken() as b:
        cols = b.start_collectors([BackendConfig("gone", "http", url, interval_s=0.05)])
        wait_until(lambda: cols.status()["gone"].failures >= 3, what="the worker keeps polling")
        assert cols.running and cols.status()["gone"].cause == "refused"


def test_the_detail_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk-live-0123456789abcdef"
    monkeypatch.setenv("MDM_TEST_KEY", key)
    cfg = BackendConfig("api", "openai", refused_url(), api_key_env="MDM_TEST_KEY")
    with mdm.Monitor() as m:
        cols = scheduler.Collectors(m, [cfg])
        (worker,) = cols._workers
        assert worker.backend is not None
        err = ProbeError("http_4xx", f"GET /v1/models: HTTP 401 (echoed Authorization: Bearer {key})", 1.0, 401)
        worker._down(worker.backend, threading.Event(), err.error_type, str(err), err)
        (entry,) = m.outage_log.entries()
        assert entry.cause == "auth" and entry.detail is not None
        assert key not in entry.detail and "<redacted>" in entry.detail


# ---- the history file -------------------------------------------------------------


def _v4_file(path: Path) -> None:
    """A history file as version 4 wrote it: an outage in its health runs."""
    with sqlite3.connect(path) as c:
        for script in storage_mod.MIGRATIONS[:4]:
            c.executescript(script)
        c.execute("INSERT INTO meta VALUES ('blob_format', ?)", (storage_mod.BLOB_FORMAT,))
        c.execute("INSERT INTO services VALUES (1, 'comfyui', 0)")
        c.executemany("INSERT INTO health_runs VALUES (1, ?, ?, ?)",
                      [(T0, T0 + 99, 1), (T0 + 100, T0 + 139, 0), (T0 + 140, T0 + 200, 1)])
        c.execute("PRAGMA user_version=4")


def test_migration_5_on_a_version_4_file_and_causes_survive_reopening(tmp_path: Path) -> None:
    db = tmp_path / "v4.sqlite3"
    _v4_file(db)
    with mdm.Monitor(storage=db, manual_clock=True, start_time=T0 + 300) as m:
        (old,) = m.incidents()
        assert (old.start, old.end, old.cause) == (T0 + 100, T0 + 140, "unknown")  # written before causes were kept
        svc = m.service("comfyui")
        svc.health(False)
        m.outage_log.note("comfyui", m.now(), "refused", "GET /: connection refused", first=True)
        m.advance(5)
        svc.health(False)
        m.outage_log.note("comfyui", m.now(), "refused", "GET /: connection refused", first=False)
        m.flush()
        m.advance(5)
        svc.health(True)
        m.outage_log.note("other", m.now(), "timeout", None, first=True)  # after the flush: written by close()
        m.advance(1)
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA user_version").fetchone() == (storage_mod.SCHEMA_VERSION,) == (5,)
        rows = c.execute("SELECT service, at_s, cause, detail, probes, last_s FROM outage_causes ORDER BY at_s").fetchall()
        assert rows == [("comfyui", T0 + 300, "refused", "GET /: connection refused", 2, T0 + 305),
                        ("other", T0 + 310, "timeout", None, 1, T0 + 310)]
        assert c.execute("SELECT count(*) FROM health_runs").fetchone() == (5,)
    with mdm.Monitor(storage=db, manual_clock=True, start_time=T0 + 400) as m:
        assert len(m.outage_log) == 2  # reloaded at open
        got = m.incidents(start=T0, end=T0 + 400)
        assert [(i.start, i.end, i.cause, i.probes) for i in got] == [
            (T0 + 300, T0 + 310, "refused", 2), (T0 + 100, T0 + 140, "unknown", None),
        ]  # newest first
        assert m.incidents(start=T0, end=T0 + 250) == [got[1]]
        assert m.incidents(start=T0, end=T0 + 400, history=False) == got  # the engine reloaded both
        with pytest.raises(mdm.UnknownServiceError, match="nobody"):
            m.incidents(services=["nobody"])


def test_outage_causes_are_pruned_with_the_health_runs(tmp_path: Path) -> None:
    db = tmp_path / "p.sqlite3"
    with mdm.Monitor(storage=db, manual_clock=True, start_time=T0,
                     retention=mdm.Retention(minute_days=1, hour_days=1)) as m:
        m.service("a").health(False)
        m.outage_log.note("a", m.now(), "refused", None, first=True)
        m.flush()
        m.advance(2 * 86_400)
        m.service("a").health(True)
        st = m.storage
        assert st is not None
        with m.storage_session():
            st.prune(m.now())
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(*) FROM outage_causes").fetchone() == (0,)


# ---- exports ------------------------------------------------------------------------


def _outage_file(db: Path) -> None:
    with mdm.Monitor(storage=db, manual_clock=True, start_time=T0) as m:
        a, b = m.service("a"), m.service("b")
        for s in range(120):
            b.health(True)
            a.health(not 30 <= s < 70)
            if s == 30:
                m.outage_log.note("a", m.now(), "timeout", "GET /: no reply within 2 s", first=True)
            m.advance(1)


def test_exports_carry_the_incidents(tmp_path: Path) -> None:
    import jsonschema

    db = tmp_path / "e.sqlite3"
    _outage_file(db)
    with mdm.Monitor(storage=db, manual_clock=True, start_time=T0 + 200) as m:
        doc_path = m.export(tmp_path / "all.json", "json", start=T0, end=T0 + 200)
        doc = json.loads(doc_path.read_text())
        jsonschema.validate(doc, json.loads(SCHEMA_PATH.read_text()))
        (i,) = doc["incidents"]
        assert (i["service"], i["start_epoch_s"], i["end_epoch_s"], i["duration_s"], i["cause"], i["ended_by"]) == (
            "a", T0 + 30, T0 + 70, 40.0, "timeout", "up")
        assert list(i) == list(INCIDENT_FIELDS)
        only_b = json.loads(m.export(tmp_path / "b.json", "json", start=T0, end=T0 + 200, services=["b"]).read_text())
        assert only_b["incidents"] == []
        rows = list(csv.DictReader(io.StringIO(m.export_incidents(tmp_path / "i.csv", start=T0, end=T0 + 200).read_text())))
        assert [(r["service"], r["start_epoch_s"], r["end_epoch_s"], r["duration_s"], r["cause"], r["ongoing"]) for r in rows] == [
            ("a", str(T0 + 30), str(T0 + 70), "40.0", "timeout", "False")]
        alone = json.loads(m.export_incidents(tmp_path / "i.json", "json", window="1h").read_text())
        assert alone["incidents"] == doc["incidents"] and alone["schema_version"] == 1


def test_incidents_windows_follow_the_window_grammar() -> None:
    with mdm.Monitor(manual_clock=True, start_time=T0) as m:
        m.service("a").health(False)
        m.advance(10)
        assert len(m.incidents("5min")) == len(m.incidents(300)) == 1
        for bad in ("5 minutes", "0", True):
            with pytest.raises(mdm.InvalidWindowError):
                m.incidents(bad)  # type: ignore[arg-type]
        with pytest.raises(mdm.InvalidWindowError, match="both given"):
            m.incidents("1h", start=T0)


# ---- the scripted outage ------------------------------------------------------------

#: How long the backend is stopped, in seconds.
OUTAGE_S = 40.0
#: The probe interval, and the backoff cap the test lowers the collectors'
#: 30 s to: with 30 s, the first probe after the restart could come up to
#: 30 s late (the backoff doubles 0.5 s per failure: 1, 2, 4, 8, 16, 30, 30 ...),
#: past both the tolerance below and a one-minute test.
INTERVAL_S = 0.5
CAP_S = 1.0
#: |measured - OUTAGE_S| allowed: the first failed probe comes up to one
#: interval after the stop, the first up probe up to one (capped) backoff
#: delay after the restart, and health runs have whole-second resolution
#: (start and end are each floored to their second).
TOLERANCE_S = INTERVAL_S + CAP_S + 1.0


class Backend:
    """A tiny HTTP backend (kind ``http``: ``GET /`` answers 200) that can
    be stopped and started again on the same port, as a restarted server."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._httpd: ThreadingHTTPServer | None = None
        self._conns: set[socket.socket] = set()

    def start(self) -> None:
        conns = self._conns = set()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                conns.add(self.connection)

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def stop(self) -> None:
        """Stops as a server process that exits does: the listening socket
        and the connections clients keep open are closed."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        for conn in list(self._conns):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._conns.clear()


@pytest.fixture
def backend() -> Iterator[Backend]:
    b = Backend()
    b.start()
    try:
        yield b
    finally:
        b.stop()


def test_a_40_s_outage_is_one_incident_everywhere(
    tmp_path: Path, backend: Backend, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import jsonschema

    monkeypatch.setattr(scheduler, "BACKOFF_CAP_S", CAP_S)
    db = tmp_path / "outage.sqlite3"
    m = mdm.Monitor(storage=db, flush_interval_s=1.0)
    try:
        cols = m.start_collectors([BackendConfig("render", "http", backend.url, interval_s=INTERVAL_S)])
        wait_until(lambda: cols.status()["render"].state == "up", timeout_s=5, what="the backend is up")
        time.sleep(2.0)
        stopped = time.time()
        backend.stop()
        time.sleep(OUTAGE_S)
        backend.start()
        restarted = time.time()
        wait_until(lambda: cols.status()["render"].state == "up", timeout_s=5, what="the backend is back")
        time.sleep(1.5)  # the up result's second is sealed
        (live,) = m.incidents("10m")
        with capsys.disabled():  # the measured figure, for the record (pytest -s shows it)
            print(f"\nscripted outage: stopped {restarted - stopped:.2f} s, incident {live.duration_s:.0f} s "
                  f"(start {live.start - stopped:+.2f} s, end {(live.end or 0) - restarted:+.2f} s), "
                  f"{live.probes} down probes", file=sys.stderr)
        assert abs(live.duration_s - OUTAGE_S) <= TOLERANCE_S, live
        assert (live.cause, live.ended_by, live.service) == ("refused", "up", "render")
        assert live.detail == "GET /: connection refused" and live.probes is not None and live.probes >= 5
        assert stopped - 1 <= live.start <= stopped + INTERVAL_S + 0.1
        assert live.last_down < (live.end or 0) <= restarted + CAP_S + 0.5
        cells = m.heartbeat("render", span_s=600, cells=600)
        assert cells.count(CellState.DOWN) == pytest.approx(live.duration_s, abs=1)
    finally:
        m.close()

    # The incidents command reads the history file after close.
    rc = cli.main(["incidents", "--storage", str(db), "--window", "1h", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    (doc,) = json.loads(out)["incidents"]
    assert doc == live.as_dict()
    rc = cli.main(["incidents", "--storage", str(db)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    (line,) = [ln for ln in out.splitlines() if ln.strip().startswith("render")]
    assert "refused" in line and f"{round(live.duration_s)} s" in line
    # And both exports.
    rc = cli.main(["export", str(tmp_path / "o.json"), "--storage", str(db), "--window", "1h"])
    assert rc == 0, capsys.readouterr().err
    exported = json.loads((tmp_path / "o.json").read_text())
    jsonschema.validate(exported, json.loads(SCHEMA_PATH.read_text()))
    assert exported["incidents"] == [live.as_dict()]
    rc = cli.main(["export", str(tmp_path / "o.csv"), "--storage", str(db), "--window", "1h", "--incidents"])
    assert rc == 0, capsys.readouterr().err
    (row,) = csv.DictReader(io.StringIO((tmp_path / "o.csv").read_text()))
    assert (row["service"], row["cause"], float(row["duration_s"])) == ("render", "refused", live.duration_s)
