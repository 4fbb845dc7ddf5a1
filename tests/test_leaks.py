"""Create / use / close, thirty times over: nothing may stay behind.

Each test runs a cycle a few times to warm up (imports, caches, the price
table, lazy singletons), then takes a baseline and runs it 30 more times
under ``tracemalloc``, and checks afterwards:

* **Python memory**: the traced size still held after the 30 cycles stays
  under 16 KiB, about 550 bytes a cycle (measured: 1-4 KiB, mostly
  tracemalloc's own snapshot and thread bookkeeping).  One leaked
  ``Monitor`` (~1 KiB with its attributes), socket object, thread object or
  snapshot dict per cycle breaks it.  CPython's bounded caches are emptied
  before the baseline and before the measurement: ``urlsplit``'s LRU cache
  and the type attribute cache keep a few hundred bytes per distinct URL or
  attribute name, and every cycle here binds new ephemeral ports, so they
  would fill (to ~50 KiB and ~200 KiB) and look like growth.  The failure
  message lists the biggest allocation sites.
* **threads**: no Python thread that was not there before (daemon handler
  threads get a few seconds to finish), and no more native threads
  (``/proc/self/task``: the engine's sealer is a Rust thread Python cannot
  see).
* **file descriptors**: no more open descriptors (``/proc/self/fd``), no new
  socket, and none pointing into the test's directory.
* **SQLite**: the history file and its ``.lock`` are free: no lock of this
  process on them in ``/proc/locks``, an exclusive ``flock`` on the lock
  file and ``BEGIN EXCLUSIVE`` on the database both succeed.

The engine's own heap is not Python memory: ``test_engine_heap_...`` bounds
RSS across cycles that each fill ~2.5 MiB of engine buckets, and
``scripts/leak_check.sh`` runs the Rust tests under LeakSanitizer.
"""

from __future__ import annotations

import fcntl
import gc
import os
import socket
import sqlite3
import sys
import threading
import time
import tracemalloc
import urllib.parse
import urllib.request
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from movie_director_metrics import Monitor
from movie_director_metrics.alerts import AlertManager, AlertRule
from movie_director_metrics.simulator import Simulator

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd, /proc/locks")

START = 1_767_225_600.0
CYCLES = 30
WARMUP = 5
#: Python memory a test may still hold after its 30 measured cycles.
BOUND_BYTES = 16 * 1024


@pytest.fixture(autouse=True)
def _private_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOVIE_DIRECTOR_METRICS_DB", str(tmp_path / "default.sqlite3"))
    monkeypatch.setenv("MOVIE_DIRECTOR_METRICS_CONFIG", str(tmp_path / "backends.toml"))


# ---- what the process holds ---------------------------------------------------


@dataclass(frozen=True)
class Held:
    threads: frozenset[threading.Thread]
    native_threads: int
    fds: dict[int, str]

    @property
    def sockets(self) -> int:
        return sum(t.startswith("socket:") for t in self.fds.values())


def held() -> Held:
    fds: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the descriptor listdir itself used, now closed
            pass
    return Held(frozenset(threading.enumerate()), len(os.listdir("/proc/self/task")), fds)


def leftovers(base: Held, now: Held, under: Path | None) -> list[str]:
    out = []
    new_threads = [t.name for t in now.threads - base.threads if t.is_alive()]
    if new_threads:
        out.append(f"threads left running: {sorted(new_threads)}")
    if now.native_threads > base.native_threads:
        out.append(f"native threads: {base.native_threads} before, {now.native_threads} after")
    if len(now.fds) > len(base.fds):
        new = sorted(t for fd, t in now.fds.items() if base.fds.get(fd) != t)
        out.append(f"file descriptors: {len(base.fds)} before, {len(now.fds)} after; new: {new}")
    if now.sockets > base.sockets:
        out.append(f"sockets: {base.sockets} before, {now.sockets} after")
    if under is not None:
        inside = sorted(t for t in now.fds.values() if t.startswith(str(under)))
        if inside:
            out.append(f"descriptors still open in {under}: {inside}")
    return out


def settle(base: Held, under: Path | None, timeout_s: float = 5.0) -> list[str]:
    """What is left over once daemon threads had ``timeout_s`` to finish."""
    deadline = time.monotonic() + timeout_s
    while True:
        gc.collect()
        problems = leftovers(base, held(), under)
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(0.05)


def top_sites(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, n: int = 8) -> str:
    stats = after.compare_to(before, "traceback")
    return "\n".join(f"{s.size_diff:+,} B in {s.count_diff:+} blocks at\n  " + "\n  ".join(s.traceback.format(limit=4))
                     for s in stats[:n])  # fmt: skip


def clear_bounded_caches() -> None:
    """Empties CPython's bounded caches (see the module doc), then collects."""
    urllib.parse.clear_cache()
    sys._clear_type_cache()
    gc.collect()


def no_leaks(cycle: Callable[[], None], *, under: Path | None = None, bound_bytes: int = BOUND_BYTES) -> int:
    """Runs ``cycle`` WARMUP times, then CYCLES times under tracemalloc, and
    asserts the module doc's checks; returns the Python bytes still held."""
    for _ in range(WARMUP):
        cycle()
    time.sleep(0.2)  # warm-up's daemon threads may still be finishing: they are not ours to count
    clear_bounded_caches()
    base = held()
    tracemalloc.start(8)
    try:
        first = tracemalloc.take_snapshot()
        for _ in range(CYCLES):
            cycle()
        problems = settle(base, under)
        clear_bounded_caches()
        current = tracemalloc.get_traced_memory()[0]
        if current > bound_bytes:
            last = tracemalloc.take_snapshot()
            pytest.fail(f"{current:,} B of Python memory held after {CYCLES} cycles (bound {bound_bytes:,} B):\n"
                        + top_sites(first, last))  # fmt: skip
    finally:
        tracemalloc.stop()
    assert not problems, "; ".join(problems)
    print(f"{current:,} B of Python memory held after {CYCLES} cycles (bound {bound_bytes:,} B)")  # shown with -s
    return current


def sqlite_free(db: Path) -> None:
    """The history file and its lock are not held by this process."""
    paths = [p for p in (db, db.with_name(db.name + ".lock"), db.with_name(db.name + "-wal")) if p.exists()]
    inodes = {os.stat(p).st_ino for p in paths}
    mine = []
    with open("/proc/locks", encoding="ascii") as f:
        # "1: POSIX  ADVISORY  WRITE <pid> <major>:<minor>:<inode> 0 EOF"; a
        # waiter's line has "->" after the number.
        for line in f:
            parts = line.split()
            at = 5 if parts[1] == "->" else 4
            if parts[at] == str(os.getpid()) and int(parts[at + 1].rsplit(":", 1)[1]) in inodes:
                mine.append(line.strip())
    assert not mine, f"locks still held on {db}: {mine}"
    with open(db.with_name(db.name + ".lock"), "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if an open description still holds it
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    conn = sqlite3.connect(db, timeout=0)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ---- the cycles -------------------------------------------------------------------

LAT = np.random.default_rng(7).lognormal(np.log(150.0), 0.5, 400)
RULES = [
    AlertRule("slow", "*", "p95_ms", ">", 100.0, window="1m"),
    AlertRule("errors", "svc-1", "error_rate", ">", 0.1, window="1m", for_s=2),
]


def use_monitor(m: Monitor, services: int = 8, seconds: int = 120) -> None:
    """Records, reads and renders a little of everything (manual clock)."""
    handles = [m.service(f"svc-{i}") for i in range(services)]
    ok = np.arange(40) % 7 != 0
    for k in range(seconds):
        for i, h in enumerate(handles):
            h.record_many(LAT[(k + i) % 10 * 40:][:40], ok)
            if k % 10 == 0:
                h.health(True, latency_ms=3.0)
                h.set_queue(1, k % 4)
                h.set_resource(vram_used_bytes=5e9, vram_total_bytes=8e9)
        m.advance(1)
    m.snapshot("1m")
    m.stats("svc-0", "1h")
    m.series("svc-0", "p95_ms", "1h", 30)
    m.openmetrics()


def test_monitor_in_memory_cycles() -> None:
    """Manual-clock and system-clock (sealer thread) monitors, closed by
    ``close()`` and by ``with``; the wrapper must be collectable."""

    def cycle() -> None:
        m = Monitor(manual_clock=True, start_time=START)
        use_monitor(m)
        m.close()
        ref = weakref.ref(m)
        del m
        gc.collect()
        assert ref() is None, "a closed Monitor is still referenced"
        with Monitor() as live:  # the engine's background sealer: a native thread
            h = live.service("svc")
            h.record_many(LAT)
            live.snapshot()

    no_leaks(cycle)


def test_engine_heap_returns_across_cycles() -> None:
    """Native memory: 30 monitors, each filling ~2 MiB of engine buckets and
    then closed, leave RSS within a quarter of one monitor's memory_bytes (a
    monitor whose engine is never freed would add its full size each cycle).

    ``gc.collect()`` after each cycle, so that whatever else of Python a
    monitor keeps is gone (the test below checks that no cycle keeps one);
    here the question is whether the engine frees what it allocated."""
    sizes: list[int] = []

    def cycle() -> None:
        with Monitor(manual_clock=True, start_time=START) as m:
            use_monitor(m, services=16, seconds=240)
            sizes.append(m.memory_bytes())
        gc.collect()

    for _ in range(WARMUP):
        cycle()
    before = rss_bytes()
    for _ in range(CYCLES):
        cycle()
    grown = rss_bytes() - before
    assert sizes[-1] > 1 << 20
    assert grown < sizes[-1] // 4, f"RSS grew {grown:,} B over {CYCLES} cycles of {sizes[-1]:,} B monitors"


def test_closed_monitor_is_freed_without_gc() -> None:
    """A closed monitor that used alerts and the LLM tracker is freed as soon
    as the last reference goes, without waiting for the cyclic collector
    (its engine can hold tens of MiB)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        m = Monitor(manual_clock=True, start_time=START)
        m.alerts.add_rule(RULES[0])
        m.llm.record("openai", "gpt-4o", {"prompt_tokens": 10, "completion_tokens": 2}, latency_ms=300.0)
        m.openmetrics()
        m.close()
        ref = weakref.ref(m)
        del m
        assert ref() is None, "the closed monitor is kept alive by a reference cycle"
    finally:
        if enabled:
            gc.enable()


def test_monitor_with_storage_cycles(tmp_path: Path) -> None:
    """The same history file reopened every cycle (a leaked lock would raise
    StorageLockedError at the next open), with alerts and LLM rows flushed."""
    db = tmp_path / "history.sqlite3"

    def cycle() -> None:
        m = Monitor(storage=db, manual_clock=True, start_time=START)
        for rule in RULES:
            m.alerts.add_rule(rule)
        use_monitor(m, services=4, seconds=90)
        m.alerts.evaluate()
        m.llm.record("openai", "gpt-4o", {"prompt_tokens": 900, "completion_tokens": 120}, latency_ms=700.0,
                     ttft_ms=150.0)  # fmt: skip
        m.flush()
        m.close()

    no_leaks(cycle, under=tmp_path)
    sqlite_free(db)
    with Monitor(storage=db, manual_clock=True, start_time=START + 3600) as m:  # opens: nothing kept it
        assert m.storage_error is None


def test_collectors_against_simulator_cycles(tmp_path: Path) -> None:
    """A simulator, a monitor and its collectors per cycle; every worker,
    server thread and socket must be gone after close."""

    def cycle() -> None:
        with Simulator(latency_ms=0, error_rate=0, queue=2, job_s=0.2, seed=11) as sim:
            m = Monitor()
            try:
                collectors = m.start_collectors(sim.configs(interval_s=0.05))
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    states = collectors.status()
                    if all(s.state == "up" and s.capabilities for s in states.values()) and all(
                        m.stats(name).count > 1 for name in states
                    ):
                        break
                    time.sleep(0.02)
                else:
                    pytest.fail(f"collectors did not come up: {collectors.status()}")
            finally:
                m.close()
            assert not collectors.running

    no_leaks(cycle, under=tmp_path)


def test_metrics_server_cycles() -> None:
    """serve_metrics(port=0), one scrape, close: the port is free again."""
    ports = [0]  # the last one only: a list of 30 ports would be 30 ints held

    def cycle() -> None:
        with Monitor(manual_clock=True, start_time=START) as m:
            use_monitor(m, services=4, seconds=30)
            server = m.serve_metrics(port=0)
            try:
                with urllib.request.urlopen(server.url, timeout=5) as r:
                    body = r.read()
                assert r.status == 200 and b"svc-0" in body
            finally:
                server.close()
            ports[0] = server.port

    no_leaks(cycle)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", ports[0])) != 0, "the last server's port still accepts connections"


def test_alert_manager_start_stop_cycles() -> None:
    """AlertManager threads started, evaluating (events and callbacks), stopped."""

    def cycle() -> None:
        with Monitor(manual_clock=True, start_time=START) as m:
            use_monitor(m, services=3, seconds=20)
            seen: list[object] = []
            manager = AlertManager(m, RULES)
            manager.on_event(seen.append)
            manager.start(interval_s=0.01)
            deadline = time.monotonic() + 5
            while not seen and time.monotonic() < deadline:
                time.sleep(0.005)
            manager.stop()
            assert seen and not manager.running
            m.alerts.add_rule(RULES[0])  # the monitor's own manager: started, then stopped by close()
            m.alerts.start(interval_s=0.01)

    no_leaks(cycle)


def test_llm_tracker_cycles(tmp_path: Path) -> None:
    """A tracker per cycle (price table loaded), records, a tracked stream,
    reads, an export."""
    out = tmp_path / "llm.csv"

    def stream() -> Iterator[dict[str, object]]:
        yield {"choices": [{"delta": {"content": "hi"}}]}
        yield {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 3}}

    def cycle() -> None:
        with Monitor(manual_clock=True, start_time=START) as m:
            llm = m.use_prices(None)
            for i in range(60):
                llm.record("openai" if i % 2 else "ollama", "gpt-4o" if i % 2 else "llama3.1:8b",
                           {"prompt_tokens": 500 + i, "completion_tokens": 90}, latency_ms=500.0 + i, ttft_ms=90.0)
                m.advance(2)  # fmt: skip
            for _ in llm.track_stream("openai", "gpt-4o-mini", stream()):
                pass
            llm.stats("1h")
            llm.stats("24h", by="provider")
            llm.active_models()
            llm.totals()
            llm.rows_after(0)
            llm.export(out, "csv", "1h")

    no_leaks(cycle, under=tmp_path)
