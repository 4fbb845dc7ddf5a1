"""What a job still waiting or running can expect: an ETA from its place
in its backend's queue and that backend's processing percentiles, and
whether it looks stuck.

ETA: a backend runs one job at a time (ComfyUI's executor, A1111), so a
job starts when the running one and every job ahead of it are done.  Each
of those takes its model's processing p50 (p90 for the range) over
``window`` when the model has at least :data:`MIN_JOBS` finished jobs there,
else the service's; a running job takes what is left of it.  Without
enough history the ETA is None ("n/a"), never a made-up number.  Queue wait
and processing are kept apart: ``start_in_s`` is the wait still ahead,
``finish_in_s`` the whole.

Stuck: a running job whose elapsed time passes ``factor`` x the processing
p95 (and at least ``floor_s``), or whose reported progress has not moved
for ``stall_s``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["MIN_JOBS", "Eta", "JobOutlook", "StuckRule", "outlook"]

#: Finished jobs a model (or service) needs in the window before its
#: percentiles are trusted for an ETA.
MIN_JOBS = 5


class UnfinishedJob(Protocol):
    @property
    def service(self) -> str: ...
    @property
    def model(self) -> str | None: ...
    @property
    def state(self) -> str: ...
    @property
    def job_id(self) -> str | None: ...
    def elapsed_s(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Eta:
    """Seconds from now, as (p50, p90): until the job starts (0 when it
    runs) and until it is done; ``basis`` says whose percentiles:
    ``"model"`` or ``"service"``."""

    start_in_s: tuple[float, float]
    finish_in_s: tuple[float, float]
    basis: str


@dataclass(frozen=True, slots=True)
class StuckRule:
    """When a running job counts as stuck (see the module doc)."""

    factor: float = 3.0
    floor_s: float = 60.0
    stall_s: float = 120.0


@dataclass(frozen=True, slots=True)
class JobOutlook:
    """One unfinished job, its position in its backend's queue (0 = running
    or next), its ETA (None: not enough history) and why it looks stuck
    (None: it does not)."""

    job: Any
    position: int
    eta: Eta | None
    stuck: str | None

    def as_dict(self) -> dict[str, Any]:
        """Plain values for JSON: the job's labels and state, its position,
        the ETA's (p50, p90) seconds (None: not enough history) and why it
        looks stuck."""
        job = self.job
        return {
            "service": job.service,
            "job_id": job.job_id,
            "state": job.state,
            "model": job.model,
            "workflow": getattr(job, "workflow", None),
            "elapsed_s": round(job.elapsed_s(), 3),
            "position": self.position,
            "start_in_s": None if self.eta is None else list(self.eta.start_in_s),
            "finish_in_s": None if self.eta is None else list(self.eta.finish_in_s),
            "eta_basis": None if self.eta is None else self.eta.basis,
            "stuck": self.stuck,
        }


def _fmt(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min"


def outlook(
    jobs: Sequence[UnfinishedJob],
    percentiles: Callable[[str, str | None], tuple[float, float, float] | None],
    rule: StuckRule = StuckRule(),
    stalled_s: Callable[[Any], float | None] = lambda job: None,
) -> list[JobOutlook]:
    """The outlook of each of ``jobs`` (``JobTracker.queued()`` order: per
    service, running ones first, then the queue in order).
    ``percentiles(service, model)`` gives that label's processing (p50,
    p90, p95) in seconds, or None without enough history (model None: the
    service's).  ``stalled_s(job)``: seconds since its progress last moved,
    or None when it reports none."""
    by_service: dict[str, list[UnfinishedJob]] = {}
    for job in jobs:
        by_service.setdefault(job.service, []).append(job)
    out: dict[int, JobOutlook] = {}
    for service, queue in by_service.items():
        ordered = sorted(queue, key=lambda j: j.state != "running")  # stable: keeps the queue order
        ahead50 = ahead90 = 0.0
        known = True  # every job ahead has an estimate
        for position, job in enumerate(ordered):
            p = percentiles(service, job.model) if job.model is not None else None
            basis = "model"
            if p is None:
                p, basis = percentiles(service, None), "service"
            elapsed = job.elapsed_s()
            stuck = None
            eta = None
            if job.state == "running":
                if p is not None and elapsed > max(rule.floor_s, rule.factor * p[2]):
                    stuck = f"running {_fmt(elapsed)}, over {rule.factor:g}x its p95 of {_fmt(p[2])}"
                stall = stalled_s(job)
                if stuck is None and stall is not None and stall > rule.stall_s:
                    stuck = f"no progress for {_fmt(stall)}"
                if p is not None:
                    rem50, rem90 = max(0.0, p[0] - elapsed), max(0.0, p[1] - elapsed)
                    rem90 = max(rem90, rem50)
                    eta = Eta((0.0, 0.0), (rem50, rem90), basis)
                    ahead50, ahead90 = ahead50 + rem50, ahead90 + rem90
                else:
                    known = False
            else:
                if p is not None and known:
                    eta = Eta((ahead50, ahead90), (ahead50 + p[0], ahead90 + p[1]), basis)
                if p is not None:
                    ahead50, ahead90 = ahead50 + p[0], ahead90 + p[1]
                else:
                    known = False
            out[id(job)] = JobOutlook(job, position, eta, stuck)
    return [out[id(j)] for j in jobs]
