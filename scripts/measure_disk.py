"""Measures the history file's disk cost per service per day.

Simulates (manual clock) a day of realistic traffic for N services — about
one request a second with a lognormal latency, 2 % errors of four types,
a health check every 10 s, queue depth and resource gauges every 5 s —
flushing every 10 simulated minutes like the background thread would,
then reads the bytes each table's pages take (SQLite's ``dbstat``) and the
file size.  Run: ``.venv/bin/python scripts/measure_disk.py [--services N]``.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time

import numpy as np

import movie_director_metrics as mdm

DAY = 86_400
T0 = 1_700_000_000.0


def simulate(path: str, services: int, days: float, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    with mdm.Monitor(storage=path, manual_clock=True, start_time=T0, flush_interval_s=86_400) as m:
        handles = [m.service(f"backend-{i}") for i in range(services)]
        errors = ["timeout", "http_500", "connection_refused", "oom"]
        for s in range(int(days * DAY)):
            for i, h in enumerate(handles):
                for lat in rng.lognormal(5.0 + 0.1 * i, 0.6, rng.poisson(1.0)):
                    if rng.random() < 0.02:
                        h.record(float(lat), ok=False, error=errors[int(rng.integers(4))])
                    else:
                        h.record(float(lat))
                if s % 10 == 0:
                    h.health(rng.random() > 0.01, latency_ms=float(rng.lognormal(2, 0.3)))
                if s % 5 == 0:
                    h.set_queue(running=int(rng.integers(0, 2)), pending=int(rng.integers(0, 5)))
                    h.set_resource(vram_used_bytes=6e9 + 1e8 * rng.random(), gpu_util_pct=100 * rng.random())
            m.advance(1.0)
            if s % 600 == 599:
                m.flush()


def table_bytes(path: str) -> dict[str, int]:
    with sqlite3.connect(path) as c:
        return dict(c.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=3)
    ap.add_argument("--days", type=float, default=1.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "metrics.sqlite3")
        t = time.perf_counter()
        simulate(path, args.services, args.days)
        took = time.perf_counter() - t
        per_table = table_bytes(path)
        with sqlite3.connect(path) as c:
            rows = dict(c.execute("SELECT resolution_s, count(*) FROM buckets GROUP BY 1").fetchall())
            blob = dict(c.execute("SELECT resolution_s, sum(length(blob)) FROM buckets GROUP BY 1").fetchall())
        size = os.path.getsize(path)
    per = args.services * args.days
    print(f"{args.services} services x {args.days} day(s) simulated in {took:.0f} s")
    print(f"file size: {size / 1024:.0f} KiB -> {size / per / 1024:.0f} KiB per service per day")
    for name, b in sorted(per_table.items(), key=lambda kv: -kv[1]):
        print(f"  {name:32s} {b / 1024:8.0f} KiB")
    print(f"bucket rows: {rows}; blob bytes: {blob}")
    # Split the buckets table between resolutions by blob bytes plus a
    # row's fixed part (key and scalars, ~56 B), to project retention.
    fixed = 56
    weight = {r: blob.get(r, 0) + fixed * rows.get(r, 0) for r in (60, 3600)}
    share60 = weight[60] / max(1, sum(weight.values()))
    other = size - per_table.get("buckets", 0) - per_table.get("bucket_errors", 0)
    minute_day = (per_table.get("buckets", 0) + per_table.get("bucket_errors", 0)) * share60 / per
    hour_day = (per_table.get("buckets", 0) + per_table.get("bucket_errors", 0)) * (1 - share60) / per
    print(f"per service per day: minute buckets {minute_day / 1024:.0f} KiB, hour buckets {hour_day / 1024:.1f} KiB, "
          f"rest (health, names, schema, free pages) {other / per / 1024:.0f} KiB")
    steady = 7 * minute_day + 365 * hour_day
    print(f"projected per service at default retention (7 d of minutes + 365 d of hours): {steady / 2**20:.1f} MiB")

if __name__ == "__main__":
    main()
