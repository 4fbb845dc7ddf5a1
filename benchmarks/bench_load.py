"""A realistic load driven through a manual-clock monitor: every tier full."""

from __future__ import annotations

import numpy as np

from movie_director_metrics import Monitor
from movie_director_metrics.jobs import JobRow

START = 1_767_225_600.0  # 2026-01-01 00:00 UTC
STEP_S = 5               # record_many every 5 simulated seconds per service
PER_STEP = 10            # 2 requests/s per service


#: (provider, model) of the LLM load: hosted and local.
LLM_MODELS = (("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude-sonnet-4-5"),
              ("ollama", "llama3.1:8b"), ("ollama", "qwen2.5:14b"))


#: The realistic job load: services with jobs x models x workflows, one job
#: per service every JOB_EVERY_S simulated seconds (rotating through them).
JOB_MODELS, JOB_WORKFLOWS, JOB_EVERY_S = 5, 3, 30


def _job_row(service: str, k: int, at: float) -> JobRow:
    """The k-th job of a service: labels rotate, 1 in 10 fails, every one
    has its own shot tag (distinct tags cost only rows)."""
    wait = 200.0 + 37 * (k % 11)
    run = 4_000.0 + 250 * (k % 17)
    return JobRow(service=service, model=f"model-{k % JOB_MODELS}", workflow=f"workflow-{k % JOB_WORKFLOWS}",
                  job_id=f"{service}-{k}", tags={"shot": f"shot-{k:06d}"}, source="user", submitted_at=at,
                  started_at=at + wait / 1e3, finished_at=at + (wait + run) / 1e3, queue_wait_ms=wait,
                  processing_ms=run, ok=k % 10 != 0, error="oom")


def build(services: int, hours: float, seed: int = 20240607, extra_s: int = 600,
          tiers: list[tuple[int, int]] | None = None, llm_models: int = 0, job_services: int = 0) -> Monitor:
    """``services`` services with ``hours`` h + ``extra_s`` s of traffic.

    Every service: latencies every 5 s, health every 10 s.  The first half
    (at least one, at most 5) also report queues and resource gauges.
    ``llm_models`` (at most 5) LLM models get one request every 10 s
    through ``Monitor.llm`` (tokens, cost, latency and time to first token).
    ``job_services`` of the services finish a job every ``JOB_EVERY_S``
    seconds through ``Monitor.jobs`` (``JOB_MODELS`` models x
    ``JOB_WORKFLOWS`` workflows, a distinct shot tag each).
    """
    m = Monitor(manual_clock=True, start_time=START, tiers=tiers)
    rng = np.random.default_rng(seed)
    handles = [m.service(f"svc-{i:02d}") for i in range(services)]
    gauged = handles[: max(1, min(5, services // 2))]
    models = LLM_MODELS[:llm_models]
    steps = int((hours * 3600 + extra_s) // STEP_S)
    # a pool of pre-drawn batches keeps the build cost in the engine, not in numpy
    pool = rng.lognormal(np.log(200.0), 0.6, (64, PER_STEP))
    for k in range(steps):
        batch = pool[k % 64]
        for h in handles:
            h.record_many(batch)
        if k % 2 == 0:
            for i, h in enumerate(handles):
                h.health(True, latency_ms=5.0 + i)
            for i, h in enumerate(gauged):
                h.set_queue(k % 3, (k + i) % 5)
                h.set_resource(vram_used_bytes=6e9 + 1e6 * (k % 100), gpu_util_pct=float(k % 100))
            for i, (provider, model) in enumerate(models):
                usage = {"prompt_tokens": 400 + 10 * (k % 50), "completion_tokens": 150 + i * 20 + k % 30}
                m.llm.record(provider, model, usage, latency_ms=900.0 + 40 * i + k % 200, ttft_ms=250.0 + i)
        if (k * STEP_S) % JOB_EVERY_S == 0:
            for i in range(min(job_services, services)):
                m.jobs.record(_job_row(f"svc-{i:02d}", k, START + k * STEP_S))
        m.advance(STEP_S)
    return m


_TICK = np.array([180.0, 240.0])


def traffic(m: Monitor, seconds: int) -> None:
    """Keeps the load going for ``seconds`` more simulated seconds (2 requests/s per service)."""
    handles = [m.service(name) for name in m.services()]
    for _ in range(seconds):
        for h in handles:
            h.record_many(_TICK)
        m.advance(1)


def fill_hour_tier(m: Monitor, hours: int = 720) -> None:
    """Fills a monitor's 3600 s tier (the one storage adds) to ``hours``
    buckets: copies of the hourly buckets the load itself sealed, restored
    at earlier hours, as a reload from a month of history would."""
    now_hour = int(m.now() // 3600) * 3600
    for name in m.services():
        svc = m.service(name)
        sealed = [(b.start_s, b.count, b.errors, b.sum_ms, b.min_ms, b.max_ms, b.blob)
                  for b in svc.stored_buckets(3600, 0) if not b.partial]
        oldest = min(r[0] for r in sealed)
        rows = [(oldest - 3600 * (k + 1),) + sealed[k % len(sealed)][1:] for k in range(hours - 1 - (now_hour - oldest) // 3600)]
        svc.restore_buckets(3600, rows, svc.error_types())
