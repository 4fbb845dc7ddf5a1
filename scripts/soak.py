"""Soak test: days of realistic load on a driven clock, watching memory.

Run with the project venv (``make soak``; ``--quick`` for a short run):

    .venv/bin/python scripts/soak.py [--hours 48] [--services 64] [--quick]

What one simulated step (``--step-s``, default 5 s) does, as a dashboard
process watching a studio's backends would:

* every service records a batch of 2 requests/s (``record_many``, 1 % of
  them failed; one service has a 10-minute error burst every 3 hours, so
  alerts fire and resolve and their events reach the file), a health check
  every 10 s, and the first 5 services queue and GPU gauges;
* 10 LLM models record 3 requests per minute each (``monitor.llm.record``
  with token usage and TTFT; their engine services come on top of
  ``--services``);
* the clock advances one step, then 20 alert rules are evaluated and a
  dashboard snapshot is read;
* every ``--flush-s`` (default 30 s) the monitor is flushed to its SQLite
  file (a temp file);
* every hour: a 24 h snapshot, the LLM table, an OpenMetrics render, and
  one memory sample.

Cadence is scaled to fit 48 simulated hours into about 10 minutes of one
core (measured on the 2-core dev box: 8 minutes, 477 CPU-seconds, with
these defaults; ``--quick`` takes 1.5 minutes):

* alert rules and the snapshot run every 5 simulated seconds, not every
  second: each evaluation reads one snapshot per distinct window (4 here),
  ~7 ms for 74 services, so per-second evaluation alone would take ~20
  minutes;
* the flush runs every 30 simulated seconds, not 10: each flush writes
  the buckets sealed since the last one and hands the LLM tracker's new
  rows to storage (the tracker drops them once committed).  Compressed
  288-fold, a flush every 10 s would triple that cost; what reaches the
  file is the same, because buckets are per minute.

Memory samples are taken just after each hour boundary.  Two figures per
sample:

``memory_bytes``
    ``Monitor.memory_bytes()``, the engine's own accounting.  With storage
    the tiers are ``STORAGE_TIERS``: 1 s x 300, 10 s x 360, 1 min x 1440
    (full after 24 h) and 1 h x 720, which keeps growing for 30 days *by
    design*.  So the soak also reports ``plateau_bytes`` =
    ``memory_bytes`` minus the hour tier's bytes, computed exactly from the
    tier's own rows: the sealed buckets' blobs (``stored_buckets(3600)``)
    plus the ring's slots (the ring grows 8, 16, 32, 64 ... capped at 720,
    64 bytes a slot).  Once the minute tier is full, ``plateau_bytes`` must
    be flat; a leak anywhere in the engine shows up there.
``rss``
    The process's resident set (``VmRSS``): engine, Python objects, SQLite
    page cache and allocator slack.  The LLM tracker's row buffer is part
    of it: it holds the rows not yet written (bounded by ``max_rows``,
    10,000 rows of ~900 B), so its share (rows/h x a row's measured size)
    is taken off the RSS slope before that is judged.

The slope is a least-squares fit of the samples after the minute tier has
been full for an hour (hours 25 .. end, at most the last ``--fit-hours``),
reported in KiB/h with its standard error and the residual spread.  The
run exits 1 when the ``plateau_bytes`` slope exceeds ``--max-slope-kib-h``
(default 16 KiB/h, 0.04 %/h of the 36 MiB plateau of 74 services: a leak
of one byte per 28 recorded requests breaks it) or the RSS slope past the
LLM row buffer exceeds ``--max-rss-slope-mib-h`` (default 0.5 MiB/h; the
48 h run measured 0.20 MiB/h with storage and 0.08 MiB/h without: the hour
tier's 24 KiB/h, the LLM tracker's hourly buckets (kept 30 days, ~4 KiB/h),
SQLite's page cache (at most 2 MiB) and allocator slack).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from movie_director_metrics import Monitor
from movie_director_metrics.alerts import AlertRule
from movie_director_metrics.llm import LlmTracker

START = 1_767_225_600.0  # 2026-01-01 00:00 UTC, hour-aligned
HOUR = 3600
#: Slots of the 1 h tier's ring, and what one slot costs (``tiers::Bucket``:
#: five u64/f64 scalars, a u32 start and an ``Option<Box<[u8]>>``).
HOUR_SLOTS = 720
BUCKET_SLOT_BYTES = 64
#: Requests per second per service, and the failed fraction.
RATE_PER_S = 2
ERROR_FRACTION = 0.01
#: LLM requests per minute per model.
LLM_PER_MIN = 3
MODELS: tuple[tuple[str, str], ...] = (
    ("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude-3-5-sonnet-20241022"),
    ("anthropic", "claude-3-5-haiku-20241022"), ("ollama", "llama3.1:8b"), ("ollama", "qwen2.5:14b"),
    ("llamacpp", "mistral-7b-instruct"), ("lmstudio", "phi-3-mini"), ("openai", "o3-mini"),
    ("ollama", "gemma2:9b"),
)  # fmt: skip
#: What one step does, timed separately (seconds per simulated hour).
PHASES = ("record", "llm", "advance", "alerts", "snapshot", "flush")
#: The minute tier is full 24 h in; samples from one hour later on are fitted.
PLATEAU_FROM_H = 25


@dataclass
class Sample:
    hour: int
    memory_bytes: int
    hour_tier_bytes: int
    rss_bytes: int
    py_blocks: int
    llm_rows: int
    db_bytes: int
    wall_s: float
    #: CPU seconds this process used so far (all threads).
    cpu_s: float = 0.0
    #: Wall seconds spent in each phase during the hour before this sample.
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def plateau_bytes(self) -> int:
        return self.memory_bytes - self.hour_tier_bytes


@dataclass
class Fit:
    """Least-squares line through (hour, MiB): slope and its standard error
    in MiB/h, residual spread in MiB, over ``points`` samples."""

    slope_mib_h: float
    stderr_mib_h: float
    resid_std_mib: float
    points: int
    first_hour: int
    last_hour: int


def ring_capacity(n: int, slots: int = HOUR_SLOTS) -> int:
    """The capacity the engine's ``push_capped`` leaves a tier ring at after
    ``n`` pushes with no pops (doubling from 8, never past ``slots``)."""
    cap = 0
    for length in range(n):
        if length == cap:
            cap += max(1, min(max(cap, 8), slots - length))
    return cap


def hour_tier_bytes(monitor: Monitor, resolution_s: int = HOUR) -> int:
    """Heap bytes of every service's 1 h tier: sealed blobs plus ring slots.

    Exact when sampled just after an hour boundary (the bucket of the hour
    that ended is sealed then, and the new one has not ended, so every row
    ``stored_buckets`` returns is a sealed bucket in the ring).  0 for a
    monitor without such a tier (memory only: the engine's default tiers)."""
    if all(r != resolution_s for r, _ in monitor.tiers):
        return 0
    total = 0
    for name in monitor.services():
        rows = monitor.service(name).stored_buckets(resolution_s, 0)
        total += ring_capacity(len(rows)) * BUCKET_SLOT_BYTES + sum(len(b.blob) for b in rows if b.blob is not None)
    return total


def rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def fit(points: Sequence[tuple[float, float]]) -> tuple[float, float, float]:
    """(slope, standard error of the slope, residual std) of y on x."""
    x = np.array([p[0] for p in points], dtype=float)
    y = np.array([p[1] for p in points], dtype=float)
    n = len(x)
    if n < 3:
        return float("nan"), float("nan"), float("nan")
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    dof = n - 2
    s2 = float(resid @ resid) / dof
    sxx = float(((x - x.mean()) ** 2).sum())
    return float(slope), math.sqrt(s2 / sxx), math.sqrt(s2)


def fit_samples(samples: Sequence[Sample], value: Callable[[Sample], float], fit_hours: int) -> Fit | None:
    last = samples[-1].hour if samples else 0
    first = max(PLATEAU_FROM_H, last - fit_hours)
    pts = [(s.hour, value(s) / 2**20) for s in samples if first <= s.hour <= last]
    if len(pts) < 3:
        return None
    slope, stderr, resid = fit(pts)
    return Fit(slope, stderr, resid, len(pts), first, last)


def alert_rules(services: int) -> list[AlertRule]:
    """20 rules: five fan out over every service, fifteen watch one each."""
    fan_out = [
        AlertRule("p95-slow", "*", "p95_ms", ">", 2000.0, window="5m", for_s=60),
        AlertRule("errors-high", "*", "error_rate", ">", 0.2, recovery_threshold=0.05, window="5m", for_s=30),
        AlertRule("down", "*", "up", "<", 0.5, window="1m"),
        AlertRule("uptime-low", "*", "uptime_pct", "<", 99.0, window="1h", for_s=300),
        AlertRule("queue-deep", "*", "queue_depth", ">", 10.0, window="1m", for_s=30),
    ]
    metrics = ("p95_ms", "error_rate", "p99_ms", "avg_ms", "rpm")
    thresholds = {"p95_ms": 900.0, "error_rate": 0.1, "p99_ms": 1500.0, "avg_ms": 600.0, "rpm": 200.0}
    windows = ("1m", "5m", "15m", "1h")
    single = [
        AlertRule(f"svc-{i % services:02d}-{metrics[i % 5]}", f"svc-{i % services:02d}", metrics[i % 5], ">",
                  thresholds[metrics[i % 5]], window=windows[i % 4], for_s=15.0 * (i % 3), repeat_s=1800)
        for i in range(15)
    ]  # fmt: skip
    return fan_out + single


def run(
    *,
    hours: int,
    services: int,
    step_s: int = 5,
    storage: str | os.PathLike[str] | None,
    models: int = len(MODELS),
    flush_every_s: int = 30,
    seed: int = 20260101,
    on_sample: Callable[[Sample], None] | None = None,
) -> list[Sample]:
    """Drives one monitor through ``hours`` simulated hours; returns one
    sample per hour (hour 0 is taken after the first step)."""
    if HOUR % step_s or flush_every_s % step_s:
        raise ValueError(f"step_s={step_s} must divide 3600 and flush_every_s={flush_every_s}")
    rng = np.random.default_rng(seed)
    per_step = RATE_PER_S * step_s
    # Pre-drawn batches keep the cost in the library, not in numpy.
    pool = rng.lognormal(np.log(200.0), 0.6, (97, per_step))
    ok_pool = rng.random((97, per_step)) >= ERROR_FRACTION
    burst_ok = np.zeros(per_step, dtype=bool)
    m = Monitor(
        storage=storage, manual_clock=True, start_time=START, max_services=services + models + 8,
        flush_interval_s=86_400,  # flushed by the driven clock below, not the wall clock
    )
    t0 = time.perf_counter()
    samples: list[Sample] = []
    try:
        handles = [m.service(f"svc-{i:02d}") for i in range(services)]
        gauged = handles[:5]
        for rule in alert_rules(services):
            m.alerts.add_rule(rule)
        llm = m.llm
        chosen = MODELS[:models]
        llm_every_steps = max(1, 60 // (LLM_PER_MIN * step_s))
        steps_per_hour = HOUR // step_s
        total_steps = hours * steps_per_hour + 1
        phases = dict.fromkeys(PHASES, 0.0)
        clock = time.perf_counter
        for k in range(total_steps):
            t = k * step_s
            j = k % 97
            burst = (t % (3 * HOUR)) < 600  # svc-01 fails for 10 minutes every 3 hours
            c0 = clock()
            for i, h in enumerate(handles):
                h.record_many(pool[(j + i) % 97], burst_ok if burst and i == 1 else ok_pool[(j + 3 * i) % 97])
            if t % 10 == 0:
                for i, h in enumerate(handles):
                    h.health(True, latency_ms=4.0 + (i + k) % 7)
                for i, h in enumerate(gauged):
                    h.set_queue(k % 3, (k + i) % 5)
                    h.set_resource(vram_used_bytes=6e9 + 1e6 * ((k + i) % 100), vram_total_bytes=24e9,
                                   gpu_util_pct=float((k + 7 * i) % 100))
            c1 = clock()
            for mi, (provider, model) in enumerate(chosen):
                if (k + mi) % llm_every_steps == 0:
                    n = (k * 31 + mi * 17) % 1500
                    llm.record(provider, model, {"prompt_tokens": 400 + n, "completion_tokens": 80 + n // 5},
                               latency_ms=600.0 + n, ttft_ms=120.0 + n / 10)
            c2 = clock()
            m.advance(step_s)
            c3 = clock()
            m.alerts.evaluate()
            c4 = clock()
            m.snapshot("5m")
            c5 = clock()
            if (t + step_s) % flush_every_s == 0:
                m.flush()
            c6 = clock()
            for name, a, b in (("record", c0, c1), ("llm", c1, c2), ("advance", c2, c3), ("alerts", c3, c4),
                               ("snapshot", c4, c5), ("flush", c5, c6)):  # fmt: skip
                phases[name] += b - a
            if k % steps_per_hour == 0:
                # Just past the hour: what a dashboard left open reads hourly.
                m.snapshot("24h")
                llm.stats("1h")
                m.openmetrics()
                gc.collect()
                s = Sample(
                    hour=k // steps_per_hour,
                    memory_bytes=m.memory_bytes(),
                    hour_tier_bytes=hour_tier_bytes(m),
                    rss_bytes=rss_bytes(),
                    py_blocks=sys.getallocatedblocks(),
                    llm_rows=len(getattr(llm, "_rows", ())),  # the storage buffer (bounded by max_rows)
                    db_bytes=_db_bytes(m.storage_path),
                    wall_s=clock() - t0,
                    cpu_s=time.process_time(),
                    phases=phases,
                )
                phases = dict.fromkeys(PHASES, 0.0)
                samples.append(s)
                if on_sample is not None:
                    on_sample(s)
    finally:
        m.close()
    return samples


def _db_bytes(path: Path | None) -> int:
    if path is None:
        return 0
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def _mib(b: float) -> str:
    return f"{b / 2**20:9.3f}"


HEADER = (f"{'hour':>4} {'memory_bytes':>13} {'hour_tier':>10} {'plateau':>13} {'plateau_MiB':>11} "
          f"{'RSS_MiB':>9} {'py_blocks':>9} {'llm_rows':>8} {'db_MiB':>9} {'wall_s':>7} {'cpu_s':>7}  "
          + " ".join(f"{p:>8}" for p in PHASES))  # fmt: skip


def row(s: Sample) -> str:
    return (f"{s.hour:>4} {s.memory_bytes:>13,} {s.hour_tier_bytes:>10,} {s.plateau_bytes:>13,} "
            f"{_mib(s.plateau_bytes):>11} {_mib(s.rss_bytes)} {s.py_blocks:>9} {s.llm_rows:>8} "
            f"{_mib(s.db_bytes)} {s.wall_s:>7.1f} {s.cpu_s:>7.1f}  "
            + " ".join(f"{s.phases.get(p, 0.0):>8.2f}" for p in PHASES))  # fmt: skip


def describe(name: str, f: Fit | None) -> str:
    if f is None:
        return f"{name}: too few samples after hour {PLATEAU_FROM_H} to fit"
    return (f"{name}: {f.slope_mib_h * 1024:+.3f} KiB/h ± {f.stderr_mib_h * 1024:.3f} (1 s.e.), residual "
            f"spread {f.resid_std_mib * 1024:.2f} KiB, hours {f.first_hour}..{f.last_hour} ({f.points} samples)")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--hours", type=int, default=48, help="simulated hours (default 48)")
    p.add_argument("--services", type=int, default=64, help="services recording (default 64)")
    p.add_argument("--models", type=int, default=len(MODELS), help="LLM models (default 10)")
    p.add_argument("--step-s", type=int, default=5, help="simulated seconds per step (default 5; 1 is ~3x slower)")
    p.add_argument("--flush-s", type=int, default=30, help="simulated seconds between flushes (default 30)")
    p.add_argument("--quick", action="store_true", help="30 h, 16 services (~1.5 minutes)")
    p.add_argument("--memory-only", action="store_true", help="no storage (default: a temp SQLite file)")
    p.add_argument("--fit-hours", type=int, default=24, help="fit at most the last N hours (default 24)")
    p.add_argument("--max-slope-kib-h", type=float, default=16.0,
                   help="bound on the plateau_bytes slope, KiB/h (default 16)")
    p.add_argument("--max-rss-slope-mib-h", type=float, default=0.5,
                   help="bound on the RSS slope past the LLM row buffer, MiB/h (default 0.5)")
    p.add_argument("--json", type=Path, help="also write the samples and fits here")
    a = p.parse_args(argv)
    if a.quick:
        a.hours, a.services = min(a.hours, 30), min(a.services, 16)
    if not 1 <= a.models <= len(MODELS):
        p.error(f"--models={a.models}: expected 1 to {len(MODELS)}")
    print(f"soak: {a.hours} h, {a.services} services + {a.models} LLM models, {a.step_s} s steps, "
          f"{'memory only' if a.memory_only else f'storage on (temp SQLite, flushed every {a.flush_s} s)'}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    wall = time.perf_counter()
    row_cost = _row_bytes()
    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory(prefix="mdm-soak-") as tmp:
        samples = run(
            hours=a.hours, services=a.services, models=a.models, step_s=a.step_s, flush_every_s=a.flush_s,
            storage=None if a.memory_only else Path(tmp) / "soak.sqlite3",
            on_sample=lambda s: print(row(s), flush=True),
        )  # fmt: skip
    wall = time.perf_counter() - wall
    plateau = fit_samples(samples, lambda s: s.plateau_bytes, a.fit_hours)
    raw = fit_samples(samples, lambda s: s.memory_bytes, a.fit_hours)
    rss = fit_samples(samples, lambda s: s.rss_bytes, a.fit_hours)
    rows_fit = fit_samples(samples, lambda s: s.llm_rows, a.fit_hours)
    # What the row buffer adds to RSS: its rows/h times a measured row's cost.
    rows_mib_h = rows_fit.slope_mib_h * row_cost if rows_fit is not None else 0.0
    print()
    print(describe("memory_bytes (hour tier included, grows by design)", raw))
    print(describe("plateau_bytes (memory_bytes - hour tier)        ", plateau))
    print(describe("RSS                                              ", rss))
    if rows_fit is not None:
        print(f"LLM row buffer: {rows_fit.slope_mib_h * 2**20:+.0f} rows/h x {row_cost} B (measured) = "
              f"{rows_mib_h * 1024:+.1f} KiB/h of it (bounded by max_rows = 10,000 rows)")
    if rss is not None:
        print(f"RSS past the row buffer: {(rss.slope_mib_h - rows_mib_h) * 1024:+.1f} KiB/h")
    cpu = time.process_time()
    print(f"wall time: {wall:.1f} s, CPU time {cpu:.1f} s; load average {os.getloadavg()[0]:.1f} at the end")
    failures = []
    if plateau is not None and plateau.slope_mib_h * 1024 > a.max_slope_kib_h:
        failures.append(f"plateau_bytes grows {plateau.slope_mib_h * 1024:.3f} KiB/h > {a.max_slope_kib_h} KiB/h")
    if rss is not None and rss.slope_mib_h - rows_mib_h > a.max_rss_slope_mib_h:
        failures.append(f"RSS grows {rss.slope_mib_h - rows_mib_h:.3f} MiB/h beyond the LLM row buffer "
                        f"> {a.max_rss_slope_mib_h} MiB/h")  # fmt: skip
    if a.json:
        a.json.write_text(json.dumps({
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
            "samples": [asdict(s) | {"plateau_bytes": s.plateau_bytes} for s in samples],
            "fits": {k: (asdict(f) if f else None) for k, f in
                     (("memory_bytes", raw), ("plateau_bytes", plateau), ("rss", rss), ("llm_rows", rows_fit))},
            "llm_row_bytes": row_cost, "wall_s": wall, "cpu_s": cpu, "failures": failures,
        }, indent=1))  # fmt: skip
    for f in failures:
        print(f"FAIL: {f}", file=sys.stderr)
    if not failures:
        print(f"OK: plateau slope within {a.max_slope_kib_h} KiB/h, RSS within {a.max_rss_slope_mib_h} MiB/h")
    return 1 if failures else 0


def _row_bytes(rows: int = 40_000) -> int:
    """Resident bytes one buffered LLM row costs: the RSS growth of a fresh
    tracker over ``rows`` soak-like requests (allocator overhead included,
    which tracemalloc would miss: ~870 B measured, ~795 B by tracemalloc).
    Run before the soak, while no freed memory is lying around for reuse."""
    gc.collect()
    with Monitor(manual_clock=True, start_time=START) as m:
        # A tracker of its own: a monitor without storage buffers no rows.
        llm = LlmTracker(m.engine, max_rows=rows)
        llm.record("openai", "gpt-4o", {"prompt_tokens": 1, "completion_tokens": 1}, latency_ms=1.0)
        before = rss_bytes()
        for i in range(rows):
            n = (i * 31) % 1500
            llm.record(*MODELS[i % len(MODELS)], {"prompt_tokens": 400 + n, "completion_tokens": 80 + n // 5},
                       latency_ms=600.0 + n, ttft_ms=120.0 + n / 10)  # fmt: skip
            if i % 3 == 0:
                m.advance(1)
        grown = rss_bytes() - before
    return round(grown / rows)


if __name__ == "__main__":
    sys.exit(main())
