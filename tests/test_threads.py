"""Concurrency: exact counts under contention, and the GIL really released.

Every test asserts *exact* totals: the engine is lock-free and promises that no
record is lost or double counted while other threads record, read, or move
the clock (the background sealer of a system-clock monitor, or ``advance()``
on a manual one) at the same time.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from movie_director_metrics import Monitor
from movie_director_metrics._core import _stress_record_from_rust_threads

# Manual clocks start on a whole UTC minute, so that the 1 min buckets that
# answer a "24h" window begin exactly at the monitor's start: the window then
# covers every record whatever the bucket alignment rules, and these tests
# stay about concurrency.
START = 1_700_000_040.0


@pytest.fixture
def monitor() -> Iterator[Monitor]:
    """A system-clock monitor (background sealer running), closed afterwards."""
    m = Monitor()
    try:
        yield m
    finally:
        m.close()


@pytest.fixture
def manual_monitor() -> Iterator[Monitor]:
    m = Monitor(manual_clock=True, start_time=START)
    try:
        yield m
    finally:
        m.close()


def start_threads(targets: list[Callable[[], None]]) -> tuple[list[threading.Thread], list[BaseException]]:
    """Starts each target in its own daemon thread; exceptions they raise are
    collected into the returned list instead of being lost."""
    errors: list[BaseException] = []
    lock = threading.Lock()

    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        def body() -> None:
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                with lock:
                    errors.append(exc)

        return body

    threads = [threading.Thread(target=wrap(t), daemon=True) for t in targets]
    for t in threads:
        t.start()
    return threads, errors


def join_all(threads: list[threading.Thread], timeout: float = 120.0) -> None:
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a worker thread hung"


def run_threads(targets: list[Callable[[], None]]) -> list[BaseException]:
    """Runs the targets concurrently to completion; returns their exceptions."""
    threads, errors = start_threads(targets)
    join_all(threads)
    return errors


# --------------------------------------------------------------------------
# 1. Python threads
# --------------------------------------------------------------------------


def test_python_threads_record_exact_counts_and_error_types(monitor: Monitor) -> None:
    """8 Python threads × 200 000 ``record()`` calls on one service, started
    together, while the background sealer folds seconds: nothing is lost or
    double counted, and every 1000th call's failure lands under its thread's
    error type."""
    n_threads, per_thread, error_every = 8, 200_000, 1000
    svc = monitor.service("comfyui")
    barrier = threading.Barrier(n_threads)

    def writer(tid: int) -> Callable[[], None]:
        err_type = "timeout" if tid % 2 == 0 else "oom"

        def body() -> None:
            record = svc.record
            barrier.wait()
            for i in range(per_thread):
                if i % error_every == 0:
                    record(float(100 + tid), ok=False, error=err_type)
                else:
                    record(float(100 + tid))

        return body

    errors = run_threads([writer(t) for t in range(n_threads)])
    assert not errors, errors

    s = monitor.stats("comfyui", "5m")
    errors_per_thread = per_thread // error_every
    assert s.count == n_threads * per_thread == 1_600_000
    assert s.errors == n_threads * errors_per_thread == 1_600
    assert s.error_counts == {"timeout": 800, "oom": 800}
    assert s.min_ms == 100.0
    assert s.max_ms == 100.0 + n_threads - 1


# --------------------------------------------------------------------------
# 2. Rust threads
# --------------------------------------------------------------------------


def test_rust_threads_record_exact_counts(monitor: Monitor) -> None:
    """8 native threads × 200 000 records with the GIL released (true
    parallelism, no GIL serializing the writers): exact count, exact errors."""
    svc = monitor.service("rust")
    _stress_record_from_rust_threads(svc, 8, 200_000, error_every=100)

    s = monitor.stats("rust", "5m")
    assert s.count == 1_600_000
    assert s.errors == 16_000
    assert s.error_counts == {"stress": 16_000}
    # Latencies are 1 + ((i + t) % 97) ms.
    assert s.min_ms == 1.0
    assert s.max_ms == 97.0


# --------------------------------------------------------------------------
# 3. record_many releases the GIL
# --------------------------------------------------------------------------


def test_record_many_releases_gil_and_counts_exactly(monitor: Monitor) -> None:
    """``record_many`` on 5e6 values runs with the GIL released: a Python
    thread calling ``record()`` in a loop makes progress *during* the call,
    and the final count is the exact sum of both threads' records.

    How the progress check proves the release: the GIL switch interval is
    raised to 0.5 s, longer than one ``record_many`` call (~50 ms).  Had the
    call held the GIL, the loop thread (already waiting for the GIL when the
    main thread read the counter) could not ask for it back before the call
    ended and the counter was read again, so the counter could not move.
    """
    svc = monitor.service("batch")
    values = np.random.default_rng(7).lognormal(np.log(200.0), 0.6, 5_000_000)
    calls = 4

    progress = [0]  # records the loop thread completed (only it writes)
    started = threading.Event()
    stop = threading.Event()

    def loop() -> None:
        record = svc.record
        record(50.0)
        progress[0] += 1
        started.set()
        while not stop.is_set():
            record(50.0)
            progress[0] += 1

    old_interval = sys.getswitchinterval()
    errors: list[BaseException] = []
    during: list[int] = []
    durations: list[float] = []

    def guarded_loop() -> None:
        try:
            loop()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            started.set()

    t = threading.Thread(target=guarded_loop, daemon=True)
    sys.setswitchinterval(0.5)
    try:
        t.start()
        assert started.wait(30), "loop thread never started"
        for _ in range(calls):
            before = progress[0]
            t0 = time.perf_counter()
            svc.record_many(values)
            durations.append(time.perf_counter() - t0)
            during.append(progress[0] - before)
    finally:
        stop.set()
        t.join(30)
        sys.setswitchinterval(old_interval)
    assert not t.is_alive()
    assert not errors, errors

    # The loop thread advanced while the main thread was inside record_many.
    assert all(d > 0 for d in during), (
        f"loop thread made no progress during record_many: progress per call {during}, "
        f"call durations {durations}"
    )

    s = monitor.stats("batch", "5m")
    assert s.count == calls * values.size + progress[0]
    assert s.errors == 0
    assert s.max_ms == max(values.max(), 50.0)
    assert s.min_ms == min(values.min(), 50.0)


# --------------------------------------------------------------------------
# 4. Readers and writers together
# --------------------------------------------------------------------------


def test_concurrent_readers_and_writers(monitor: Monitor) -> None:
    """4 writers (``record`` and ``record_many``) and 2 readers calling
    ``snapshot``/``stats``/``series`` in a loop: no reader raises or sees an
    inconsistent answer, the count a reader sees never goes backwards, the
    readers really overlapped the writers, and the final count is exact."""
    n_writers, n_readers, rounds, batch = 4, 2, 3000, 500
    names = ["a", "b"]
    handles = {n: monitor.service(n) for n in names}
    ok_mask = np.ones(batch, dtype=np.bool_)
    ok_mask[::50] = False  # 10 failures per batch
    batch_values = np.linspace(10.0, 1000.0, batch)
    # Writers start only once every reader has completed one full read.
    start = threading.Barrier(n_writers + n_readers)
    writers_done = threading.Event()
    reads = [0] * n_readers
    seen_counts: list[set[int]] = [set() for _ in range(n_readers)]

    def writer(wid: int) -> Callable[[], None]:
        svc = handles[names[wid % 2]]

        def body() -> None:
            start.wait()
            for i in range(rounds):
                svc.record(float(5 + wid))
                if i % 7 == 0:
                    svc.record(2000.0, ok=False, error="timeout")
                svc.record_many(batch_values, ok=ok_mask, error="oom")

        return body

    def reader(rid: int) -> Callable[[], None]:
        def read_once(last_count: dict[str, int]) -> None:
            snap = monitor.snapshot("5m")
            assert list(snap) == names
            for name in names:
                s = monitor.stats(name, "5m") if rid == 0 else snap[name]
                # 2 % of the records fail, so even a read of the live second
                # taken field by field cannot show more errors than requests.
                assert 0 <= s.errors <= s.count
                # Whatever the sealer does meanwhile, a total never shrinks.
                assert s.count >= last_count[name], (name, s.count, last_count[name])
                last_count[name] = s.count
                seen_counts[rid].add(s.count)
                if s.count:
                    assert s.min_ms is not None and s.max_ms is not None
                    assert s.p50_ms is not None
                    assert s.min_ms <= s.p50_ms <= s.max_ms
                # error_counts is compared with errors only once the writers
                # are done: the live second's counters are read one by one
                # while writers add to them, so in flight they may disagree.
                ts, vs = monitor.series(name, "count", "5m")
                assert ts.shape == vs.shape
                ts, vs = monitor.series(name, "p95_ms", "1h", points=60)
                assert ts.shape == vs.shape == (60,)
            reads[rid] += 1

        def body() -> None:
            last_count = dict.fromkeys(names, 0)
            read_once(last_count)
            start.wait()
            while not writers_done.is_set():
                read_once(last_count)

        return body

    readers, reader_errors = start_threads([reader(r) for r in range(n_readers)])
    try:
        writer_errors = run_threads([writer(w) for w in range(n_writers)])
    finally:
        writers_done.set()
        start.abort()  # frees the barrier if a thread died before reaching it
        join_all(readers)
    assert not writer_errors, writer_errors
    assert not reader_errors, reader_errors

    per_writer_count = rounds * (1 + batch) + len(range(0, rounds, 7))
    per_writer_errors = rounds * (batch // 50) + len(range(0, rounds, 7))
    writers_per_service = n_writers // len(names)
    final = writers_per_service * per_writer_count
    for name in names:
        s = monitor.stats(name, "5m")
        assert s.count == final
        assert s.errors == writers_per_service * per_writer_errors
        assert s.error_counts == {
            "oom": writers_per_service * rounds * (batch // 50),
            "timeout": writers_per_service * len(range(0, rounds, 7)),
        }
        # The chart agrees with the totals once the writers are done.
        _, counts = monitor.series(name, "count", "5m")
        assert np.nansum(counts) == s.count

    # The reads overlapped the writes: some reader saw a partial count.
    assert any(0 < c < final for seen in seen_counts for c in seen), (reads, seen_counts)


# --------------------------------------------------------------------------
# 5. Manual clock jumping under the writers
# --------------------------------------------------------------------------


def test_writers_under_advancing_manual_clock(manual_monitor: Monitor) -> None:
    """Python threads record while the main thread calls ``advance(1.0)``
    1200 times (20 simulated minutes: seconds are sealed and rolled up into
    the 10 s and 1 min tiers under the writers' feet): the 24 h window's count
    and error count are exact, and the records really spread over many
    seconds."""
    m = manual_monitor
    svc = m.service("jumpy")
    n_writers, advances = 3, 1200
    counts = [0] * n_writers
    fails = [0] * n_writers
    stop = threading.Event()
    barrier = threading.Barrier(n_writers + 1)
    small = np.full(16, 42.0)

    def writer(wid: int) -> Callable[[], None]:
        def body() -> None:
            barrier.wait()
            i = 0
            while not stop.is_set():
                if i % 10 == 0:
                    svc.record_many(small)
                    counts[wid] += small.size
                elif i % 13 == 0:
                    svc.record(500.0, ok=False, error="jump")
                    counts[wid] += 1
                    fails[wid] += 1
                else:
                    svc.record(float(wid + 1))
                    counts[wid] += 1
                i += 1

        return body

    # advance() releases the GIL only for microseconds, so the main thread
    # would win it straight back and the writers would hardly run between two
    # jumps; a short sleep hands it over.  A short switch interval then gets
    # it back to the main thread quickly (with the default 5 ms, 1200 jumps
    # would take many seconds).
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    threads, errors = start_threads([writer(w) for w in range(n_writers)])
    try:
        barrier.wait()
        for _ in range(advances):
            m.advance(1.0)
            time.sleep(0.0002)
    finally:
        stop.set()
        barrier.abort()
        join_all(threads)
        sys.setswitchinterval(old_interval)
    assert not errors, errors

    s = m.stats("jumpy", "24h")
    assert s.start == START, "the whole run must lie inside the 24 h window"
    assert s.count == sum(counts)
    assert s.errors == sum(fails)
    assert s.error_counts == ({"jump": sum(fails)} if sum(fails) else {})
    # The clock really moved under the writers: data in many distinct minutes.
    _, per_minute = m.series("jumpy", "count", "24h")
    assert np.count_nonzero(np.nan_to_num(per_minute)) >= 10
    assert np.nansum(per_minute) == s.count


def test_rust_writers_under_advancing_manual_clock(manual_monitor: Monitor) -> None:
    """Native threads record (GIL released) while the main thread advances
    the manual clock 1 s at a time: the 24 h count and errors are exact.

    4 threads × 1e6 records rather than 8 × 2e5: fewer busy native threads
    leave the main thread CPU time to advance the clock many times during
    the run on a 2-core box, and the run lasts long enough for it."""
    m = manual_monitor
    svc = m.service("rust-jumpy")
    n_threads, per_thread, error_every = 4, 1_000_000, 100
    done = threading.Event()
    errors: list[BaseException] = []

    def stress() -> None:
        try:
            _stress_record_from_rust_threads(svc, n_threads, per_thread, error_every=error_every)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            done.set()

    t = threading.Thread(target=stress, daemon=True)
    t.start()
    advances = 0
    while not done.is_set() and advances < 20_000:
        m.advance(1.0)
        advances += 1
    t.join(60)
    assert not t.is_alive()
    assert not errors, errors
    # The clock really jumped while the native threads were recording.
    assert advances >= 10, advances

    s = m.stats("rust-jumpy", "24h")
    assert s.start == START
    assert s.count == n_threads * per_thread
    assert s.errors == n_threads * per_thread // error_every
    assert s.error_counts == {"stress": n_threads * per_thread // error_every}
