"""Issue 17 item 5: VRAM per job next to the backend's headroom now —
whether the next job of a model fits.  A real Monitor on a manual clock:
the backend's readings go into the engine as a collector puts them, the
finished jobs go to the real tracker as rows with the clock's times (the
way a collector reports the jobs it saw; the tracker looks their peak
up), and ``Monitor.vram_fits`` reads both back."""

from __future__ import annotations

import pytest

import movie_director_metrics as mdm
from movie_director_metrics.jobs import JobRow
from movie_director_metrics.jobs.vram import MARGIN, verdict

T0 = 1_800_000_000.0
GIB = 2.0**30


def run_job(m: mdm.Monitor, model: str, before: float, peak: float, after: float, total: float = 24 * GIB) -> None:
    """Idle at ``before`` for 3 s, one job that rises to ``peak`` over 4 s,
    then back to ``after`` (one reading a second, as the collector polls)."""
    svc = m.service("comfyui")
    for _ in range(3):
        svc.set_resource(vram_used_bytes=before, vram_total_bytes=total)
        m.advance(1.0)
    start = m.now()
    for used in (before + 0.5 * (peak - before), peak, peak, before + 0.8 * (peak - before)):
        svc.set_resource(vram_used_bytes=used, vram_total_bytes=total)
        m.advance(1.0)
    m.jobs.record(finished_row(model, start, m.now()))
    svc.set_resource(vram_used_bytes=after, vram_total_bytes=total)
    m.advance(1.0)


def finished_row(model: str, start: float, end: float) -> JobRow:
    return JobRow(service="comfyui", model=model, workflow=None, job_id=None, tags={}, source="backend",
                  submitted_at=start, started_at=start, finished_at=end, queue_wait_ms=0.0,
                  processing_ms=(end - start) * 1e3, ok=True, error=None)


def test_the_next_job_fits_when_its_growth_fits_the_headroom_now() -> None:
    with mdm.Monitor(manual_clock=True, start_time=T0) as m:
        # sdxl: cached weights 8 GiB, each job grows by 6 GiB to 14 GiB.
        run_job(m, "sdxl", before=8 * GIB, peak=14 * GIB, after=8 * GIB)
        run_job(m, "sdxl", before=8 * GIB, peak=13 * GIB, after=8 * GIB)
        # flux: loads 12 GiB of weights on top of what is there: grows by 16.
        run_job(m, "flux", before=8 * GIB, peak=24 * GIB * 0.99, after=20 * GIB)
        fits = {f.model: f for f in m.vram_fits()}
        sdxl, flux = fits["sdxl"], fits["flux"]
        assert sdxl.jobs == 2 and sdxl.peak_bytes == 14 * GIB
        assert sdxl.need_bytes == pytest.approx(6 * GIB)
        assert sdxl.used_bytes == 20 * GIB and sdxl.total_bytes == 24 * GIB and sdxl.free_bytes == 4 * GIB
        # 20 GiB in use now (flux cached): sdxl's 6 GiB no longer fit in 4.
        assert sdxl.verdict == "no"
        assert flux.need_bytes == pytest.approx(24 * GIB * 0.99 - 8 * GIB) and flux.verdict == "no"
        # Something frees memory: sdxl fits again, flux still not.
        m.service("comfyui").set_resource(vram_used_bytes=9 * GIB, vram_total_bytes=24 * GIB)
        m.advance(1.0)
        fits = {f.model: f for f in m.vram_fits()}
        assert fits["sdxl"].verdict == "fits" and fits["flux"].verdict == "no"
        assert fits["sdxl"].as_dict()["free_bytes"] == 15 * GIB


def test_no_readings_give_unknown_never_a_guess() -> None:
    with mdm.Monitor(manual_clock=True, start_time=T0) as m:
        m.jobs.job("a1111", model="sd15").finish()  # VRAM never polled: no peak
        assert m.vram_fits() == []
        # A peak but no reading before the start (polling began mid-job).
        svc = m.service("comfyui")
        start = m.now()
        svc.set_resource(vram_used_bytes=10 * GIB, vram_total_bytes=24 * GIB)
        m.advance(1.0)
        m.jobs.record(finished_row("sdxl", start, m.now()))
        (f,) = m.vram_fits()
        assert f.peak_bytes == 10 * GIB and f.need_bytes is None and f.verdict == "unknown"


@pytest.mark.parametrize(
    ("need", "used", "total", "want"),
    [
        (4.0, 10.0, 20.0, "fits"),
        (10.0 - MARGIN * 20.0, 10.0, 20.0, "fits"),
        (9.5, 10.0, 20.0, "tight"),
        (10.0, 10.0, 20.0, "tight"),
        (10.5, 10.0, 20.0, "no"),
        (1.0, 21.0, 20.0, "no"),
        (None, 10.0, 20.0, "unknown"),
        (1.0, None, 20.0, "unknown"),
        (1.0, 1.0, 0.0, "unknown"),
    ],
)
def test_verdict(need: float | None, used: float | None, total: float, want: str) -> None:
    assert verdict(need, used, total) == want
