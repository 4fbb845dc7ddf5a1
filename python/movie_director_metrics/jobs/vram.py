"""Will the next job of this model fit in VRAM?  Per (service, model): the
VRAM its recent jobs took, next to the backend's headroom now.

Each finished job carries its peak ``vram_used_bytes`` (the highest
reading while it ran, looked up in the engine when it finished).  A peak
alone does not answer the question: ``vram_used`` counts everything on the
GPU — the backend's cached weights, Blender's own viewport, other
programs.  What the next job needs on top of what is in use now is what a
job *grew* by: its peak minus the reading just before it started
(``growth``).  So a job of a model whose weights stay cached grows by its
activations only, and one that had to load its model grows by both, which
is what the next job needs if the model is unloaded meanwhile — the
largest growth of the last few jobs is the estimate (``need``).

Verdict, with ``free`` = total − used now:

- ``fits``: need + :data:`MARGIN` of the total ≤ free;
- ``tight``: need ≤ free, within the margin (fragmentation, a bigger
  batch or resolution may tip it over);
- ``no``: need > free — the backend will have to unload something, or
  run out of memory;
- ``unknown``: no job of the model with a peak and a reading before its
  start, or no current reading of used and total (never a guess).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from .rows import JobRow

Verdict = Literal["fits", "tight", "no", "unknown"]

#: Share of the total VRAM kept as a margin before "fits".
MARGIN = 0.05
#: Jobs per (service, model) whose growth is looked at: the newest ones.
RECENT_PER_MODEL = 5


@dataclass(frozen=True)
class VramFit:
    """One (service, model): its jobs' VRAM and the backend's headroom now.
    Bytes; ``None`` where unknown."""

    service: str
    model: str
    #: Jobs looked at (newest, with a peak reading), at most RECENT_PER_MODEL.
    jobs: int
    #: Highest peak reading among them (absolute, everything on the GPU).
    peak_bytes: float | None
    #: Largest growth (peak minus the reading just before the start).
    need_bytes: float | None
    used_bytes: float | None
    total_bytes: float | None
    verdict: Verdict

    @property
    def free_bytes(self) -> float | None:
        if self.used_bytes is None or self.total_bytes is None:
            return None
        return max(0.0, self.total_bytes - self.used_bytes)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "free_bytes": self.free_bytes}


def verdict(need: float | None, used: float | None, total: float | None) -> Verdict:
    """The verdict for a job that needs ``need`` bytes more (see the module doc)."""
    if need is None or used is None or total is None or total <= 0:
        return "unknown"
    free = max(0.0, total - used)
    if need + MARGIN * total <= free:
        return "fits"
    return "tight" if need <= free else "no"


def vram_fits(
    rows: Iterable[JobRow],
    reading_before: Callable[[str, float], float | None],
    gauges: Callable[[str], tuple[float | None, float | None]],
) -> list[VramFit]:
    """One :class:`VramFit` per (service, model) of ``rows`` (newest first,
    as ``JobTracker.recent`` gives them) that has a job with a peak.
    ``reading_before(service, t)``: the last ``vram_used_bytes`` reading
    before ``t`` (None: none known); ``gauges(service)``: (used, total) now."""
    picked: dict[tuple[str, str], list[JobRow]] = {}
    for r in rows:
        if r.model is None or r.peak_vram_bytes is None:
            continue
        same = picked.setdefault((r.service, r.model), [])
        if len(same) < RECENT_PER_MODEL:
            same.append(r)
    out: list[VramFit] = []
    for (service, model), jobs in picked.items():
        growths = []
        for r in jobs:
            before = reading_before(service, r.started_at or r.submitted_at)
            if before is not None and r.peak_vram_bytes is not None:
                growths.append(max(0.0, r.peak_vram_bytes - before))
        need = max(growths) if growths else None
        used, total = gauges(service)
        out.append(
            VramFit(
                service=service,
                model=model,
                jobs=len(jobs),
                peak_bytes=max(r.peak_vram_bytes for r in jobs if r.peak_vram_bytes is not None),
                need_bytes=need,
                used_bytes=used,
                total_bytes=total,
                verdict=verdict(need, used, total),
            )
        )
    out.sort(key=lambda f: (f.service, f.model))
    return out
