"""Jobs: the cost of a job from Python beside ``record()``, the memory of
10 services x 64 models x 64 workflows at full retention, and what 10 000
distinct tags cost (nothing in the engine; only the bounded row buffer)."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from bench_report import Report
from bench_timing import empty_loop_ns, per_call_ns
from movie_director_metrics import Monitor, shared
from movie_director_metrics.jobs import JobRow, JobTracker

SECTION = "jobs (us per job from Python, net of loop overhead)"
MEMORY = "jobs memory"
TARGET_US = 2.0
START = 1_750_000_000.0


@pytest.fixture(scope="module")
def published() -> Iterator[Monitor]:
    m = Monitor()
    m.publish()
    yield m
    m.close()


def _record_loop(h: Any, values: list[int]) -> None:
    for _ in values:
        h.record(250.0)


def _job_loop(h: Any, values: list[int]) -> None:
    for _ in values:
        h.job("comfyui", model="sdxl.safetensors", workflow="shot").finish()


def _with_loop(h: Any, values: list[int]) -> None:
    for _ in values:
        with h.job("comfyui", model="sdxl.safetensors", workflow="shot"):
            pass


def _started_loop(h: Any, values: list[int]) -> None:
    for _ in values:
        job = h.job("comfyui", model="sdxl.safetensors", workflow="shot")
        job.started()
        job.finish()


def _tagged_loop(h: Any, values: list[int]) -> None:
    for i in values:
        with h.job("comfyui", model="sdxl.safetensors", workflow="shot", tags={"shot": i}):
            pass


CALLS = {
    "record(250.0) (engine service handle)": ("service", _record_loop),
    "shared().job(...).finish()": ("shared", _job_loop),
    "with shared().job(...):": ("shared", _with_loop),
    "shared job with started()": ("shared", _started_loop),
    "with shared().job(..., tags={'shot': i}):": ("shared", _tagged_loop),
    "monitor.jobs.job(...).finish()": ("tracker", _job_loop),
}
OURS = "shared().job(...).finish()"


@pytest.mark.parametrize("name", list(CALLS))
def test_job_cost(name: str, benchmark: Any, report: Report, sizes: dict[str, Any], published: Monitor) -> None:
    kind, loop = CALLS[name]
    target = {"service": published.service("bench"), "shared": shared(), "tracker": published.jobs}[kind]
    values = list(range(sizes["calls"] // 4))
    loop_ns = empty_loop_ns(values)
    us = (per_call_ns(benchmark, target, values, sizes["rounds"], loop=loop) - loop_ns) / 1e3
    report.add(SECTION, name, us, "us", ours=name == OURS, note=f"{len(values):,} jobs/round")


def test_job_cost_target(report: Report) -> None:
    """Checks the figures measured above in this session."""
    ours = report.value(SECTION, OURS)
    if ours is None:
        pytest.skip("the job cost was not measured in this session")
    met = ours <= TARGET_US
    record = report.value(SECTION, "record(250.0) (engine service handle)")
    note = f"{ours / record:.0f}x record()" if record else ""
    report.target(SECTION, "job start+finish", ours, "us", f"<= {TARGET_US} us", met, note=note)
    report.enforce(met, f"a job from Python costs {ours:.2f} us, target {TARGET_US} us")


def _fill(tracker: JobTracker, services: int, models: int, workflows: int, hours: float, step_s: int) -> int:
    """One job per model and per workflow of each service every ``step_s``
    seconds for ``hours`` h + 10 min: every series has data in every
    bucket of every tier (``full retention``)."""
    steps = int((hours * 3600 + 600) // step_s)
    per = max(models, workflows)
    labels = [
        (f"svc-{s:02d}", f"model-{i % models:02d}", f"workflow-{i % workflows:02d}")
        for s in range(services)
        for i in range(per)
    ]
    rows = [
        JobRow(service=sv, model=mo, workflow=wf, job_id=None, tags={}, source="backend", submitted_at=START,
               started_at=START + 0.5, finished_at=START + 3.0, queue_wait_ms=500.0 + i, processing_ms=2500.0 + 7 * i,
               ok=i % 17 != 0, error="oom")
        for i, (sv, mo, wf) in enumerate(labels)
    ]
    for _ in range(steps):
        for r in rows:
            tracker.record(r, store=False)
        tracker.engine.advance(step_s)
    return len(tracker.engine.services())


def test_memory_of_full_label_set(report: Report, mode: str) -> None:
    services, models, workflows = (10, 64, 64) if mode != "smoke" else (2, 8, 8)
    hours = {"full": 24.0, "quick": 24.0, "smoke": 0.5}[mode]
    tracker = JobTracker(manual_clock=True, start_time=START, recent=200)  # the jobs engine's own tiers
    try:
        series = _fill(tracker, services, models, workflows, hours, step_s=60)
        assert series == services * 2 * (1 + models + workflows)
        mib = tracker.memory_bytes() / 2**20
        report.add(
            MEMORY,
            f"{services} services x {models} models x {workflows} workflows, {hours:g} h at 1 job/label/min",
            mib,
            "MiB",
            ours=True,
            note=f"{series} engine series (run + wait per label); {tracker.memory_bytes() / series / 1024:.1f} KiB each",
        )
        (svc,) = tracker.stats("24h", by="service", service="svc-00")
        assert svc.count > 0 and svc.queue_wait_count == svc.count
    finally:
        tracker.close()


def test_ten_thousand_tags_cost_only_rows(report: Report, mode: str) -> None:
    n = 10_000 if mode != "smoke" else 1_000
    trackers = {}
    traced = {}
    for tagged in (False, True):
        gc.collect()
        tracemalloc.start()
        # A manual clock and rows with the same durations: both runs record
        # the same values in the same seconds, so any engine difference
        # could only come from the tags.
        t = JobTracker(max_rows=n, recent=200, manual_clock=True, start_time=START)
        for i in range(n):
            t.record(JobRow(service="comfyui", model="sdxl", workflow="shot", job_id=None,
                            tags={"shot": f"shot-{i:05d}"} if tagged else {}, source="user", submitted_at=START,
                            started_at=START + 1, finished_at=START + 5, queue_wait_ms=1000.0 + i % 50,
                            processing_ms=4000.0 + i % 300, ok=True, error=None))
            if i % 100 == 99:
                t.engine.advance(1)
        gc.collect()
        traced[tagged] = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        trackers[tagged] = t
    try:
        engine_same = trackers[True].memory_bytes() == trackers[False].memory_bytes()
        report.add(MEMORY, f"engine bytes with {n:,} distinct tags minus without",
                   trackers[True].memory_bytes() - trackers[False].memory_bytes(), "B", ours=True,
                   note="tags never become engine series")
        report.add(MEMORY, f"Python heap of {n:,} buffered rows: tagged minus untagged",
                   (traced[True] - traced[False]) / 1024, "KiB",
                   note=f"the row buffer (max_rows={n}); {(traced[True] - traced[False]) / n:.0f} B per tag dict")
        report.target(MEMORY, "10 000 tags add nothing to the engine", float(engine_same), "", "== 1", engine_same)
        assert engine_same
        # Twice as many tagged jobs: the buffer is bounded, so no growth.
        t2 = trackers[True]
        before = len(t2.take_unsaved())
        for i in range(n):
            t2.job("comfyui", model="sdxl", tags={"shot": f"more-{i}"}).finish()
        assert before == n and len(t2.take_unsaved()) == n
    finally:
        for t in trackers.values():
            t.close()
