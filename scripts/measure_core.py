"""Quick figures for the README: record() cost, snapshot() time and
memory_bytes() of 10 services with full tiers.  Run with the project venv:

    .venv/bin/python scripts/measure_core.py

Single-process timings on a shared box drift by ±10-30 %; the benchmark
suite (benchmarks/) measures against peers side by side in one run.
"""

from __future__ import annotations

import gc
import time

import numpy as np

from movie_director_metrics import Monitor

N = 2_000_000


def record_cost() -> None:
    with Monitor() as m:
        rec = m.service("svc").record

        def empty() -> float:
            t = time.perf_counter()
            for _ in range(N):
                pass
            return time.perf_counter() - t

        def ok() -> float:
            t = time.perf_counter()
            for _ in range(N):
                rec(12.5)
            return time.perf_counter() - t

        def failed() -> float:
            t = time.perf_counter()
            for _ in range(N // 4):
                rec(5.0, ok=False, error="timeout")
            return time.perf_counter() - t

        gc.disable()
        e = min(empty() for _ in range(3))
        r = min(ok() for _ in range(3))
        f = min(failed() for _ in range(3))
        gc.enable()
        print(f"record(x):                      {(r - e) / N * 1e9:6.1f} ns net ({r / N * 1e9:.1f} raw)")
        print(f"record(x, ok=False, error=...): {(f / (N // 4) - e / N) * 1e9:6.1f} ns net")


def full_tiers(rate_per_s: float, extras: bool) -> Monitor:
    """10 services, 24 h + 10 min of traffic at `rate_per_s`, batched every
    5 s; with `extras`, 5 services report queue + 3 gauges every 5 s and all
    report health every 10 s."""
    m = Monitor(manual_clock=True, start_time=1_767_225_600.0)
    hs = [m.service(f"svc{i}") for i in range(10)]
    rng = np.random.default_rng(0)
    for step in range((24 * 60 + 10) * 12):
        for i, h in enumerate(hs):
            h.record_many(rng.lognormal(6, 0.6, max(1, int(rate_per_s * 5))))
            if extras and i < 5:
                h.set_queue(1, int(rng.integers(0, 4)))
                h.set_resource(vram_used_bytes=1e10, vram_total_bytes=2.4e10, gpu_util_pct=80.0)
            if extras and step % 2 == 0:
                h.health(True, latency_ms=3.0)
        m.advance(5.0)
    return m


def main() -> None:
    record_cost()
    for rate in (1.0, 5.0):
        m = full_tiers(rate, extras=True)
        print(f"memory_bytes, 10 services, full tiers, {rate:g} req/s: {m.memory_bytes() / 1e6:.2f} MB")
        if rate == 1.0:
            for w in ("5m", "1h", "24h"):
                m.snapshot(w)
                t = time.perf_counter()
                for _ in range(200):
                    m.snapshot(w)
                print(f"snapshot({w}) of 10 services: {(time.perf_counter() - t) / 200 * 1e6:.0f} us")


if __name__ == "__main__":
    main()
