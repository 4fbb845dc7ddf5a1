"""History on disk: real SQLite files, real child processes killed with
SIGKILL, real read-only and full file systems (tmpfs mounts, where this
process may mount; skipped with the reason otherwise)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

import movie_director_metrics as mdm
from movie_director_metrics import storage as st

T0 = 1_700_000_000.0


def open_monitor(path: Path, start: float = T0, **kw: object) -> mdm.Monitor:
    return mdm.Monitor(storage=path, manual_clock=True, start_time=start, **kw)  # type: ignore[arg-type]


def traffic(m: mdm.Monitor, seconds: int, name: str = "comfyui") -> tuple[int, int]:
    """Two requests a second, every 40th a timeout, health every 10 s."""
    svc = m.service(name)
    n = errs = 0
    for s in range(seconds):
        for k in range(2):
            bad = (s * 2 + k) % 40 == 0
            svc.record(10.0 + (s + k) % 50, ok=not bad, error="timeout" if bad else None)
            n += 1
            errs += bad
        if s % 10 == 0:
            svc.health(s % 600 >= 30)
        m.advance(1.0)
    return n, errs


def db_rows(path: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as c:
        return c.execute(sql, args).fetchall()


# ---- round trip -------------------------------------------------------------


def test_history_reloads_and_long_windows_need_storage(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite3"
    with open_monitor(db) as m:
        n, errs = traffic(m, 3 * 3600)
        before = {w: m.stats("comfyui", w) for w in ("24h", "7d", "30d")}
        end = m.now()
    assert db_rows(db, "PRAGMA journal_mode") == [("wal",)]
    assert db_rows(db, "PRAGMA user_version") == [(st.SCHEMA_VERSION,)]
    # A new process ten minutes later sees the same history.
    with open_monitor(db, start=end + 600) as m2:
        assert m2.load_report["restored"] > 0 and m2.load_report["rejected"] == 0
        for w, b in before.items():
            s = m2.stats("comfyui", w)
            assert (s.count, s.errors) == (n, errs) == (b.count, b.errors), w
            assert s.error_counts == b.error_counts == {"timeout": errs}
            assert (s.min_ms, s.max_ms) == (b.min_ms, b.max_ms)
            assert s.p95_ms == pytest.approx(b.p95_ms, rel=0.01)
            # Health every 10 s, down the first 30 s of each 10 minutes.
            # 18 ten-minute periods x 30 s down; known: 10 790 s + the 60 s TTL.
            assert s.uptime_pct == pytest.approx(100 * (1 - 18 * 30 / 10_850), rel=1e-12)
    with mdm.Monitor() as mem:
        mem.service("x")
        with pytest.raises(mdm.InvalidWindowError, match="7d"):
            mem.stats("x", "7d")


def test_background_thread_flushes_on_its_own(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite3"
    with open_monitor(db, flush_interval_s=0.05) as m:
        traffic(m, 300)
        # T0 is 20 s into a minute: the minutes that ended by T0 + 300 hold
        # the requests of seconds 0-279; the one still open is not written.
        deadline = time.monotonic() + 10
        flushed: object = None
        while time.monotonic() < deadline and flushed != 560:
            time.sleep(0.05)
            flushed = db_rows(db, "SELECT sum(count) FROM buckets WHERE resolution_s=60")[0][0]
        assert flushed == 560
        assert m.storage_error is None


def test_partial_buckets_written_at_close_merge_after_restart(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite3"
    start = 1_700_000_400.0  # a whole hour and minute
    with open_monitor(db, start=start) as m:
        for _ in range(10):
            m.service("s").record(5.0)
        m.advance(20)
    assert db_rows(db, "SELECT resolution_s, count, partial FROM buckets ORDER BY 1") == [(60, 10, 1), (3600, 10, 1)]
    with open_monitor(db, start=start + 25) as m:
        for _ in range(5):
            m.service("s").record(7.0, ok=False, error="boom")
        assert m.stats("s", "1h").count == 15
        m.advance(3600)
        m.flush()
    assert db_rows(db, "SELECT resolution_s, count, errors, partial FROM buckets ORDER BY 1") == [
        (60, 15, 5, 0),
        (3600, 15, 5, 0),
    ]


def test_retention_prunes_old_minutes_and_keeps_hours(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite3"
    with open_monitor(db, retention=mdm.Retention(minute_days=1 / 24, hour_days=30)) as m:
        traffic(m, 2 * 3600)
        m.flush()
        m.advance(2 * 3600)
        m.service("comfyui").record(1.0)
        m.advance(61)
        m.flush()
        m.storage.prune(m.now())  # type: ignore[union-attr]
        oldest = db_rows(db, "SELECT min(start_s) FROM buckets WHERE resolution_s=60")[0][0]
        assert isinstance(oldest, int) and oldest >= m.now() - 3600
        assert db_rows(db, "SELECT count(*) FROM buckets WHERE resolution_s=3600")[0][0] == 3
    with pytest.raises(mdm.InvalidConfigError, match="minute_days"):
        mdm.Retention(minute_days=0)


# ---- schema -----------------------------------------------------------------


def test_forward_migration_keeps_data_and_newer_files_are_refused(tmp_path: Path) -> None:
    db = tmp_path / "v1.sqlite3"
    with sqlite3.connect(db) as c:
        c.executescript(st.MIGRATIONS[0])
        c.execute("INSERT INTO meta VALUES ('blob_format', ?)", (st.BLOB_FORMAT,))
        c.execute("INSERT INTO services VALUES (1, 'old', 0)")
        c.execute("PRAGMA user_version=1")
    with open_monitor(db) as m:
        assert "old" not in m.services()  # no data in the window: not loaded
    assert db_rows(db, "PRAGMA user_version") == [(st.SCHEMA_VERSION,)]
    assert db_rows(db, "SELECT name FROM services") == [("old",)]
    assert db_rows(db, "SELECT count(*) FROM llm_usage") == [(0,)]
    with sqlite3.connect(db) as c:
        c.execute("PRAGMA user_version=99")
    size = db.stat().st_size
    with pytest.raises(mdm.StorageError, match=r"schema version 99, newer than this build's"):
        open_monitor(db)
    assert db.stat().st_size == size


# ---- two processes ----------------------------------------------------------

CHILD_HOLDS = """
import sys, time, movie_director_metrics as mdm
m = mdm.Monitor(storage=sys.argv[1])
print("ready", flush=True)
time.sleep(60)
"""


def test_second_process_gets_a_clear_error_naming_the_owner(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite3"
    child = subprocess.Popen([sys.executable, "-c", CHILD_HOLDS, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        with pytest.raises(mdm.StorageLockedError, match=rf"in use by process {child.pid} on "):
            mdm.Monitor(storage=db)
    finally:
        child.kill()
        child.wait()
    # The OS dropped the dead owner's lock.
    with mdm.Monitor(storage=db) as m:
        assert m.storage_error is None


# ---- kill -9 ----------------------------------------------------------------

CHILD_RECORDS = """
import sqlite3, sys, movie_director_metrics as mdm
db = sys.argv[1]
m = mdm.Monitor(storage=db, manual_clock=True, start_time=float(sys.argv[2]), flush_interval_s=0.05)
reader = sqlite3.connect(db)
svc = m.service("comfyui")
while True:
    for _ in range(30):
        svc.record(12.5)
        svc.record(40.0, ok=False, error="timeout")
        svc.health(True)
        m.advance(1.0)
    m.flush()
    total = reader.execute("SELECT coalesce(sum(count), 0) FROM buckets WHERE resolution_s=60 AND partial=0").fetchone()[0]
    print(total, flush=True)
"""


def test_kill_9_while_recording_and_flushing_never_corrupts(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite3"
    results = []
    start = T0
    for trial in range(20):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD_RECORDS, str(db), str(start)], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None
        flushed = -1
        lines = 0
        # Kill after a varying number of confirmed flushes: mid-write, since
        # the background thread flushes every 50 ms as well.
        for line in child.stdout:
            flushed = int(line)
            lines += 1
            if lines >= 2 + trial % 5:
                break
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert child.returncode == -signal.SIGKILL
        assert db_rows(db, "PRAGMA integrity_check") == [("ok",)]
        on_disk = db_rows(db, "SELECT coalesce(sum(count), 0) FROM buckets WHERE resolution_s=60 AND partial=0")
        assert on_disk[0][0] >= flushed >= 0  # type: ignore[operator]
        results.append((flushed, on_disk[0][0]))
        start += 10 * 86_400  # each trial records a new stretch of time
    assert len(results) == 20
    lost = sum(1 for flushed, on_disk in results if on_disk < flushed)  # type: ignore[operator]
    print(f"kill -9: 20 trials, integrity ok 20/20, confirmed-flushed requests lost in {lost}; "
          f"(confirmed, on disk) per trial: {results}")


# ---- damaged files ----------------------------------------------------------


def _moved_aside(tmp_path: Path) -> list[Path]:
    return sorted(p for p in tmp_path.iterdir() if ".corrupt-" in p.name and not p.name.endswith(("-wal", "-shm")))


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_file_is_moved_aside_and_recording_goes_on(tmp_path: Path, damage: str) -> None:
    db = tmp_path / "h.sqlite3"
    if damage == "garbage":
        db.write_bytes(b"this is not a database" * 100)
    else:
        with open_monitor(db) as m:
            traffic(m, 3600)
        data = db.read_bytes()
        db.write_bytes(data[: len(data) // 2])
    with pytest.warns(mdm.StorageWarning) as caught:
        m = open_monitor(db)
    try:
        moved = _moved_aside(tmp_path)
        assert len(moved) == 1
        msg = str(caught[0].message)
        assert str(db) in msg and str(moved[0]) in msg
        n, _ = traffic(m, 120)
        m.flush()
        assert m.stats("comfyui", "1h").count == n
    finally:
        m.close()
    assert db_rows(db, "PRAGMA integrity_check") == [("ok",)]
    assert db_rows(db, "SELECT sum(count) FROM buckets WHERE resolution_s=60")[0][0] == 240


# ---- read-only and full file systems ---------------------------------------


def _mount(target: Path, opts: str) -> bool:
    return subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(target)], capture_output=True).returncode == 0


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "mnt"
    target.mkdir()
    if os.geteuid() != 0 or not _mount(target, "size=16m"):
        pytest.skip("needs permission to mount a tmpfs (root); read-only and full disks cannot be made otherwise")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def _remount(target: Path, opts: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{opts}", str(target)], check=True)


def test_read_only_directory_warns_once_and_catches_up(tmpfs: Path) -> None:
    _remount(tmpfs, "ro")
    db = tmpfs / "h.sqlite3"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = open_monitor(db, flush_interval_s=0.05)
        try:
            n, _ = traffic(m, 300)
            with pytest.raises(mdm.StorageError, match="h.sqlite3"):
                m.flush()
            time.sleep(0.3)  # several background flushes fail meanwhile
            assert m.storage_error is not None
            assert m.stats("comfyui", "1h").count == n  # recording went on
            storage_warnings = [w for w in caught if issubclass(w.category, mdm.StorageWarning)]
            assert len(storage_warnings) == 1, [str(w.message) for w in storage_warnings]
            assert str(db) in str(storage_warnings[0].message)
            _remount(tmpfs, "rw")
            m.flush()
            assert m.storage_error is None
        finally:
            m.close()
    assert db_rows(db, "SELECT sum(count) FROM buckets WHERE resolution_s=60")[0][0] == n


def test_full_disk_warns_once_and_resumes_when_space_returns(tmpfs: Path) -> None:
    _remount(tmpfs, "size=64k")
    db = tmpfs / "h.sqlite3"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = open_monitor(db, flush_interval_s=3600)
        try:
            svc = m.service("comfyui")
            total = 0
            failed = False
            for minute in range(24 * 60):
                for s in range(60):
                    svc.record(1.0 + (minute * 7 + s) % 400, ok=s % 9 != 0, error=f"e{s % 9}" if s % 9 == 0 else None)
                    total += 1
                    m.advance(1)
                try:
                    m.flush()
                except mdm.StorageError as e:
                    assert "full" in str(e)
                    failed = True
                    break
            assert failed, "64 KiB should not hold the history"
            for _ in range(3):
                with pytest.raises(mdm.StorageError):
                    m.flush()
            assert len([w for w in caught if issubclass(w.category, mdm.StorageWarning)]) == 1
            _remount(tmpfs, "size=16m")
            m.flush()
            assert m.storage_error is None
        finally:
            m.close()
    on_disk = db_rows(db, "SELECT sum(count) FROM buckets WHERE resolution_s=60")[0][0]
    assert on_disk == total
    assert db_rows(db, "PRAGMA integrity_check") == [("ok",)]


def test_storage_argument_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(mdm.InvalidConfigError, match=r"storage=42"):
        mdm.Monitor(storage=42)  # type: ignore[arg-type]
    with pytest.raises(mdm.InvalidConfigError, match="flush_interval_s=0"):
        mdm.Monitor(storage=tmp_path / "x", flush_interval_s=0)
    monkeypatch.setenv(st.STORAGE_ENV, str(tmp_path / "from-env.sqlite3"))
    assert st.default_path() == tmp_path / "from-env.sqlite3"
    with mdm.Monitor(storage=True) as m:
        assert m.storage_path == tmp_path / "from-env.sqlite3"
    monkeypatch.delenv(st.STORAGE_ENV)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert st.default_path() == tmp_path / "xdg" / "movie_director_metrics" / "metrics.sqlite3"


# ---- regressions ------------------------------------------------------------


def test_error_names_keep_their_stored_ids_whatever_order_a_new_process_meets_them(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite3"
    with open_monitor(db) as m:
        svc = m.service("s")
        for err in ("timeout", "http_500", "timeout"):
            svc.record(5.0, ok=False, error=err)
        m.advance(3600 * 3)
        end = m.now()
    # Forty days later nothing is reloaded (older than every tier), and the
    # new process meets the types in the other order, plus a new one.
    with open_monitor(db, start=end + 40 * 86_400) as m:
        assert "s" not in m.services()
        svc = m.service("s")
        for err in ("oom", "http_500", "timeout"):
            svc.record(5.0, ok=False, error=err)
        m.advance(120)
    names = db_rows(db, "SELECT type_id, name FROM error_types ORDER BY type_id")
    assert names == [(0, "timeout"), (1, "http_500"), (2, "oom")]
    by_name = db_rows(
        db,
        "SELECT b.start_s, t.name, b.count FROM bucket_errors b JOIN error_types t "
        "ON t.service_id=b.service_id AND t.type_id=b.type_id WHERE b.resolution_s=3600 ORDER BY 1, 2",
    )
    # Hourly rows (the minutes of forty days ago are past their retention).
    first, later = by_name[:2], by_name[2:]
    assert [(n, c) for _, n, c in first] == [("http_500", 1), ("timeout", 2)]
    assert [(n, c) for _, n, c in later] == [("http_500", 1), ("oom", 1), ("timeout", 1)]
    # Reloaded once more, the newest buckets name the right types.
    with open_monitor(db, start=end + 40 * 86_400 + 600) as m:
        assert m.stats("s", "24h").error_counts == {"http_500": 1, "oom": 1, "timeout": 1}


def test_close_keeps_the_second_still_open(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite3"
    with open_monitor(db) as m:
        m.service("s").record(5.0)  # no advance: the second has not ended
    with open_monitor(db, start=T0 + 1) as m:
        assert m.stats("s", "1h").count == 1
        m.close()
        with pytest.raises(mdm.MonitorClosedError):
            m.flush()
    with open_monitor(db, start=T0 + 2) as m:  # the closed one released the file
        assert m.storage_error is None


def test_empty_buckets_reload_without_fake_minimum(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite3"
    with open_monitor(db) as m:
        svc = m.service("s")
        svc.record(50.0)
        m.advance(120)
        svc.health(True)  # a minute with health only
        m.advance(120)
        before = m.stats("s", "24h")
    with open_monitor(db, start=T0 + 300) as m:
        after = m.stats("s", "24h")
        assert (after.min_ms, after.max_ms) == (before.min_ms, before.max_ms) == (50.0, 50.0)


def test_gauge_bounds_survive_the_file(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite3"
    with open_monitor(db) as m:
        m.service("s").set_resource(vram_used_bytes=1e9 + 90)
        m.advance(120)
    with open_monitor(db, start=T0 + 300) as m:
        g = m.stats("s", "24h").resources["vram_used_bytes"]
        assert g.min <= g.avg <= g.max
        assert g.avg == 1e9 + 90
        assert g.max - g.min <= 1e9 * 2.5e-7


def test_alert_events_and_llm_rows_persist_and_reload(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite3"
    with open_monitor(db) as m:
        svc = m.service("comfyui")
        m.alerts.add_rule(mdm.alerts.AlertRule(name="slow", target="comfyui", metric="p95_ms", comparator=">",
                                               threshold=100.0, window="5m"))
        svc.record(500.0)
        fired = m.alerts.evaluate()
        assert [(e.from_state, e.to_state) for e in fired] == [("normal", "firing")]
        m.llm.record("openai", "gpt-4o", {"prompt_tokens": 1000, "completion_tokens": 100}, latency_ms=800.0)
        m.flush()
        m.llm.record("ollama", "llama3.1:8b", {"prompt_eval_count": 10, "eval_count": 20}, latency_ms=300.0,
                     base_url="http://127.0.0.1:11434")
        # The second request is written at close, once.
    assert db_rows(db, "SELECT rule, target, state FROM alert_events") == [("slow", "comfyui", "firing")]
    assert db_rows(db, "SELECT provider, model, input_uncached, output FROM llm_usage ORDER BY id") == [
        ("openai", "gpt-4o", 1000, 100),
        ("ollama", "llama3.1:8b", 10, 20),
    ]
    with open_monitor(db, start=T0 + 60) as m:
        assert [(e.rule, e.to_state) for e in m.alerts.events()] == [("slow", "firing")]
        by_model = {s.model: s for s in m.llm.stats("1h")}
        assert by_model["gpt-4o"].requests == 1
        # gpt-4o at the shipped price: 1000 x 2.5e-6 + 100 x 1e-5.
        assert by_model["gpt-4o"].cost_usd == pytest.approx(0.0035)
        m.flush()
    # Reloaded rows are not written twice.
    assert db_rows(db, "SELECT count(*) FROM llm_usage") == [(2,)]
    assert db_rows(db, "SELECT count(*) FROM alert_events") == [(1,)]
