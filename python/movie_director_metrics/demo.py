"""``make run``: simulates 20 minutes of four AI backends and prints the
dashboard table a user would see, for the last 5 minutes and the last hour.

The clock is driven (``manual_clock=True``), so the 20 minutes take about a
second; every figure comes from the engine, nothing is precomputed.
"""

from __future__ import annotations

import argparse
import math
import random

from . import Monitor, ServiceStats

BACKENDS = {
    # name: (median ms, spread, requests per second, error rate)
    "comfyui": (4_200.0, 0.35, 0.5, 0.02),
    "a1111": (6_500.0, 0.40, 0.3, 0.05),
    "ollama": (850.0, 0.60, 2.0, 0.01),
    "openai": (1_400.0, 0.50, 1.0, 0.03),
}


def simulate(monitor: Monitor, minutes: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    handles = {name: monitor.service(name) for name in BACKENDS}
    for second in range(minutes * 60):
        for name, (median, sigma, rate, err) in BACKENDS.items():
            h = handles[name]
            for _ in range(_poisson(rng, rate)):
                latency = rng.lognormvariate(math.log(median), sigma)
                if rng.random() < err:
                    h.record(latency, ok=False, error=rng.choice(["timeout", "http_500", "oom"]))
                else:
                    h.record(latency)
            if second % 5 == 0:
                # a1111 goes down for two minutes in the middle of the run
                down = name == "a1111" and 600 <= second < 720
                h.health(not down, latency_ms=None if down else rng.uniform(2, 15))
            if name in ("comfyui", "a1111") and second % 2 == 0:
                h.set_queue(running=1, pending=rng.randint(0, 4))
                h.record_processing(rng.lognormvariate(math.log(median * 0.9), 0.2))
                h.set_resource(vram_used_bytes=rng.uniform(9e9, 15e9), vram_total_bytes=24e9)
        monitor.advance(1.0)


def _poisson(rng: random.Random, lam: float) -> int:
    k, p, limit = 0, 1.0, math.exp(-lam)
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _fmt(v: float | int | None, spec: str) -> str:
    """Fixed-width number, or a right-aligned "n/a" of the same width."""
    width = int(spec.split(".")[0]) if spec[0].isdigit() else 0
    return "n/a".rjust(width) if v is None else format(v, spec)


def table(stats: dict[str, ServiceStats]) -> str:
    head = f"{'service':<10} {'req':>5} {'ok%':>6} {'avg ms':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'rpm':>6} {'uptime%':>8} {'queue':>6} {'vram GB':>8}  errors"
    rows = [head, "-" * len(head)]
    for name, s in stats.items():
        vram = s.resources.get("vram_used_bytes")
        ok = None if s.success_rate is None else 100 * s.success_rate
        queue = None if s.queue_running is None else f"{s.queue_running}+{s.queue_pending}"
        rows.append(
            f"{name:<10} {s.count:>5} {_fmt(ok, '6.1f')} {_fmt(s.avg_ms, '8.0f')} "
            f"{_fmt(s.p50_ms, '8.0f')} {_fmt(s.p95_ms, '8.0f')} {_fmt(s.p99_ms, '8.0f')} "
            f"{s.rpm:6.1f} {_fmt(s.uptime_pct, '8.1f')} {queue or 'n/a':>6} "
            f"{_fmt(None if vram is None else vram.avg / 1e9, '8.1f')}  "
            + ", ".join(f"{k}={v}" for k, v in s.error_counts.items())
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=int, default=20, help="simulated minutes (default 20)")
    args = ap.parse_args(argv)
    with Monitor(manual_clock=True, start_time=1_767_225_600.0) as monitor:
        simulate(monitor, args.minutes)
        for window in ("5m", "1h"):
            print(f"\n== last {window} ==")
            print(table(monitor.snapshot(window)))
        ranked = monitor.compare("p95_ms", "1h")
        print("\nfastest by p95 over 1 h: " + " < ".join(n for n, _ in ranked))
        print(f"engine memory: {monitor.memory_bytes() / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
