"""A1111/Forge jobs inferred from ``/sdapi/v1/progress`` between polls,
against a real loopback HTTP server serving a sequence of progress replies.

The replies are derived from the transcribed fixtures
``a1111/sdapi_v1_progress_{busy,idle}.json`` (see
``tests/fixtures/backends/README.md``) with the fields the webui changes
between jobs (``modules/shared_state.py`` @01033656): ``State.begin`` stamps
``job_timestamp`` and clears ``interrupted``/``skipped``; ``State.end`` sets
``job`` to "" and ``job_count`` to 0 and leaves the timestamp and the flags
as they were (the UI's ``wrap_gradio_call`` clears the flags afterwards, the
API does not); ``current_task`` is set by ``start_task`` just after
``State.begin`` and cleared by ``finish_task`` just before ``State.end``.

Most tests drive detect/collect directly, as the scheduler's worker does,
on a simulated clock (``a1111.time`` and the backend's ``now``), so the
inferred times are exact multiples of the poll interval; the last one runs
the real scheduler against a server whose job runs for a real half second.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

import movie_director_metrics as mdm
from loopback import LoopbackServer, Reply, wait_until
from movie_director_metrics._core import Monitor
from movie_director_metrics.collectors import BackendConfig, ProbeError
from movie_director_metrics.collectors import a1111
from movie_director_metrics.collectors.a1111 import A1111
from movie_director_metrics.jobs import JobRow, QueuedJob

FIX = Path(__file__).resolve().parent / "fixtures" / "backends" / "a1111"
NAME = "forge"
T0 = 1_700_000_000.0
#: The simulated poll interval (seconds).
INTERVAL = 1.0
SD15 = "v1-5-pruned-emaonly.safetensors [6ce0161689]"
SDXL = "sd_xl_base_1.0.safetensors [31e35c80fc]"
TS1, TS2 = "20250301120000", "20250301120007"
TASK1, TASK2 = "task(8ar3xk2m1q9vz0p)", "task(c4d5e6f7g8h9j0k)"


def fixture(name: str) -> Any:
    return json.loads(FIX.joinpath(name).read_bytes())


BUSY = fixture("sdapi_v1_progress_busy.json")
IDLE = fixture("sdapi_v1_progress_idle.json")


def running(
    ts: str = TS1, task: str | None = TASK1, *, job: str = "scripts_txt2img", step: int = 9,
    interrupted: bool = False, skipped: bool = False,
) -> dict[str, Any]:
    """A reply while a job runs (the busy fixture, with its identity and flags)."""
    reply: dict[str, Any] = copy.deepcopy(BUSY)
    reply["current_task"] = task
    reply["progress"] = step / 20
    reply["state"].update(job_timestamp=ts, job=job, sampling_step=step, interrupted=interrupted, skipped=skipped)
    return reply


def idle(ts: str = "0", *, interrupted: bool = False, skipped: bool = False) -> dict[str, Any]:
    """An idle reply; ``ts`` is the last job's timestamp (State.end keeps it)."""
    reply: dict[str, Any] = copy.deepcopy(IDLE)
    reply["state"].update(job_timestamp=ts, interrupted=interrupted, skipped=skipped)
    return reply


class Clock:
    """The simulated time of the backend's polls."""

    def __init__(self) -> None:
        self.t = 1000.0

    def monotonic(self) -> float:
        return self.t

    def wall(self) -> float:
        return T0 + self.t - 1000.0


@dataclass
class Webui:
    """A loopback A1111 whose progress replies follow a script (the last
    reply repeats), and whose loaded checkpoint a test may change."""

    script: list[Any]
    checkpoint: str = SD15
    pending: list[str] = field(default_factory=list)
    served: int = 0

    def progress(self, handler: BaseHTTPRequestHandler) -> Reply:
        reply = self.script[min(self.served, len(self.script) - 1)]
        self.served += 1
        return reply if isinstance(reply, Reply) else Reply(200, json.dumps(reply).encode())

    def options(self, handler: BaseHTTPRequestHandler) -> Reply:
        options = fixture("sdapi_v1_options.json")
        options["sd_model_checkpoint"] = self.checkpoint
        return Reply(200, json.dumps(options).encode())

    def pending_tasks(self, handler: BaseHTTPRequestHandler) -> Reply:
        return Reply(200, json.dumps({"size": len(self.pending), "tasks": self.pending}).encode())

    def routes(self) -> dict[tuple[str, str], Any]:
        return {
            ("GET", "/internal/ping"): Reply(200, b"{}"),
            ("GET", "/internal/pending-tasks"): self.pending_tasks,
            ("GET", "/sdapi/v1/progress"): self.progress,
            ("GET", "/sdapi/v1/memory"): Reply(200, FIX.joinpath("sdapi_v1_memory.json").read_bytes()),
            ("GET", "/sdapi/v1/options"): self.options,
        }


@dataclass
class Run:
    """A backend under test and what it reported."""

    backend: A1111
    server: LoopbackServer
    clock: Clock
    rows: list[JobRow] = field(default_factory=list)
    queues: list[list[QueuedJob]] = field(default_factory=list)

    def poll(self, n: int = 1) -> None:
        """``n`` polls, one interval apart."""
        for _ in range(n):
            self.clock.t += INTERVAL
            self.backend.collect()

    def hits(self, path: str) -> int:
        return sum(1 for _, p in self.server.hits if p.split("?")[0] == path)


@pytest.fixture
def mon() -> Iterator[Monitor]:
    m = Monitor(manual_clock=True, start_time=T0)
    yield m
    m.close()


@pytest.fixture
def start(mon: Monitor, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``start(webui)``: a detected backend on a loopback server serving
    ``webui`` (detection reads the script's first reply)."""
    clock = Clock()
    monkeypatch.setattr(a1111, "time", clock)
    servers: list[LoopbackServer] = []

    def go(webui: Webui) -> Run:
        srv = LoopbackServer(webui.routes())
        servers.append(srv)
        config = BackendConfig(NAME, "a1111", srv.url, interval_s=INTERVAL, connect_timeout_s=0.5, read_timeout_s=1.0)
        b = A1111(config, mon.service(NAME))
        monkeypatch.setattr(b, "now", clock.wall)
        run = Run(b, srv, clock)
        b.on_job = run.rows.append
        b.on_queue = lambda service, jobs: run.queues.append(jobs)
        b.probe()
        b.detect()
        return run

    yield go
    for srv in servers:
        srv.close()


def ms(polls: int) -> float:
    return polls * INTERVAL * 1e3


# ---- one job, start to end ------------------------------------------------------------------


def test_a_job_seen_over_three_polls_is_one_row(start: Any) -> None:
    webui = Webui([idle(), running(step=3), running(step=9), running(step=15), idle(TS1), idle(TS1)])
    run = start(webui)
    run.poll()
    first = run.clock.wall()  # the poll that first saw it
    assert run.queues[-1] == [
        QueuedJob(NAME, TASK1, "running", model=SD15, workflow="scripts_txt2img", started_at=first,
                  progress_fraction=0.15, seen_at=first)
    ]  # fmt: skip
    run.poll(2)
    assert run.rows == [] and run.queues[-1][0].progress_fraction == 0.75
    run.poll()  # idle: it ended since the last poll
    (row,) = run.rows
    assert row == JobRow(
        service=NAME, model=SD15, workflow="scripts_txt2img", job_id=TASK1, tags={}, source="backend",
        submitted_at=first, started_at=first, finished_at=first + 3 * INTERVAL, queue_wait_ms=None,
        processing_ms=ms(3), ok=True, error=None,
    )  # fmt: skip
    assert row.total_ms == ms(3)  # no queue wait: never a 0 that looks real
    assert run.queues[-1] == []
    run.poll()
    assert len(run.rows) == 1, "recorded once"
    assert run.backend.detail == {}


def test_processing_is_within_one_interval_of_the_truth(start: Any) -> None:
    """The job ran somewhere between the reads around its start and the
    reads around its end: 2 to 4 intervals for a job seen at 3 polls.  The
    estimate (first sighting to first absence) is 3: off by less than one
    interval whichever it was."""
    run = start(Webui([idle(), running(), running(), running(), idle(TS1)]))
    run.poll(4)
    (row,) = run.rows
    assert ms(2) < row.processing_ms < ms(4)
    assert row.processing_ms == ms(3)


def test_a_job_seen_at_one_poll_only_is_one_interval(start: Any) -> None:
    run = start(Webui([idle(), running(), idle(TS1)]))
    run.poll(2)
    assert [r.processing_ms for r in run.rows] == [ms(1)]


def test_the_model_is_read_once_per_job_and_never_per_idle_poll(start: Any) -> None:
    webui = Webui([idle(), *[running()] * 3, idle(TS1), running(TS2, TASK2), idle(TS2), *[idle(TS2)] * 20])
    run = start(webui)
    assert run.hits("/sdapi/v1/options") == 1  # detection
    run.poll(4)
    assert run.hits("/sdapi/v1/options") == 2  # the job's
    webui.checkpoint = SDXL  # the user loads another checkpoint between jobs
    run.poll(2)
    assert run.hits("/sdapi/v1/options") == 3
    progress_before = run.hits("/sdapi/v1/progress")
    requests_before = len(run.server.hits)
    run.poll(20)  # idle: the three reads the queue and memory signals make anyway
    assert run.hits("/sdapi/v1/options") == 3
    assert len(run.server.hits) - requests_before == 20 * 3
    assert run.hits("/sdapi/v1/progress") - progress_before == 20
    assert [(r.job_id, r.model, r.processing_ms) for r in run.rows] == [(TASK1, SD15, ms(3)), (TASK2, SDXL, ms(1))]
    assert run.backend.models == [SDXL]


def test_back_to_back_jobs_split_at_the_new_timestamp(start: Any) -> None:
    """No idle poll between them: the new timestamp is the new job."""
    run = start(Webui([idle(), running(TS1, None), running(TS1, None), running(TS2, None), idle(TS2)]))
    run.poll(4)
    assert [(r.job_id, r.processing_ms) for r in run.rows] == [(TS1, ms(2)), (TS2, ms(1))]


def test_two_jobs_in_the_same_second_are_told_apart_by_their_task(start: Any) -> None:
    run = start(Webui([idle(), running(TS1, TASK1), running(TS1, TASK2), idle(TS1)]))
    run.poll(3)
    assert [(r.job_id, r.processing_ms) for r in run.rows] == [(TASK1, ms(1)), (TASK2, ms(1))]


def test_one_job_seen_before_and_after_its_task_id_is_set(start: Any) -> None:
    """``current_task`` is set just after ``State.begin`` and cleared just
    before ``State.end``: the same job, named by its task."""
    run = start(Webui([idle(), running(TS1, None), running(TS1, TASK1), running(TS1, None), idle(TS1)]))
    run.poll(4)
    assert [(r.job_id, r.processing_ms) for r in run.rows] == [(TASK1, ms(3))]


def test_workflow_is_the_pipeline_name_not_the_batch_status(start: Any) -> None:
    run = start(Webui([
        idle(),
        running(TS1, job="Batch 1 out of 3"), running(TS1, job="scripts_img2img"), idle(TS1),
        running(TS2, TASK2, job="(unknown)"), running(TS2, TASK2, job="Batch 2 out of 2"), idle(TS2),
    ]))  # fmt: skip
    run.poll(6)
    assert [r.workflow for r in run.rows] == ["scripts_img2img", None]


# ---- outcomes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "error"),
    [
        # The UI path: seen while it ran; wrap_gradio_call clears the flag after.
        ([idle(), running(), running(interrupted=True), idle(TS1)], "interrupted"),
        # The API path: interrupted between polls, seen only in the idle
        # reply right after (State.end leaves the flag set).
        ([idle(), running(), running(), idle(TS1, interrupted=True)], "interrupted"),
        ([idle(), running(), running(skipped=True), running(), idle(TS1)], "skipped"),
        ([idle(), running(skipped=True), running(interrupted=True), idle(TS1)], "interrupted"),
    ],
    ids=["interrupted-ui", "interrupted-api", "skipped", "interrupted-wins"],
)
def test_interrupted_and_skipped_jobs_are_failures(start: Any, script: list[Any], error: str) -> None:
    run = start(Webui(script))
    run.poll(len(script) - 1)
    (row,) = run.rows
    assert (row.ok, row.error) == (False, error)


def test_flags_of_another_job_are_not_this_ones(start: Any) -> None:
    """An idle reply with another timestamp belongs to a job that ran
    between the polls, not to the one that ended."""
    run = start(Webui([idle(), running(TS1), idle(TS2, interrupted=True)]))
    run.poll(2)
    (row,) = run.rows
    assert row.ok and row.job_id == TASK1
    assert run.backend.jobs_unseen == 1


# ---- what is not recorded ---------------------------------------------------------------------


def test_a_job_between_two_polls_is_counted_not_recorded(start: Any) -> None:
    run = start(Webui([idle(TS1), idle(TS1), idle(TS2), idle(TS2)]))
    run.poll(3)
    assert run.rows == []
    assert run.backend.jobs_unseen == 1
    assert run.backend.detail == {"jobs_unseen": "1 job(s) started and ended between two polls (not recorded)"}


def test_a_job_running_at_detection_has_no_known_start(start: Any) -> None:
    run = start(Webui([running(), running(), idle(TS1), running(TS2, TASK2), idle(TS2)]))
    assert run.queues == []  # reported from the first collect
    run.poll()
    assert run.queues[-1][0].started_at is None  # shown running, start unknown
    run.poll(3)
    assert [r.job_id for r in run.rows] == [TASK2]
    assert run.backend.jobs_untimed == 1
    assert "1 job(s) not recorded" in run.backend.detail["jobs_untimed"]


def test_a_failed_read_while_a_job_runs_leaves_its_end_unknown(start: Any) -> None:
    run = start(Webui([idle(), running(), Reply(500, {"error": "boom"}), idle(TS1), running(TS2, TASK2), idle(TS2)]))
    run.poll()
    with pytest.raises(ProbeError):
        run.poll()
    run.poll(3)
    assert [r.job_id for r in run.rows] == [TASK2], "the first may have ended any time in the gap"
    assert run.backend.jobs_untimed == 1


def test_a_job_lost_with_a_webui_restart_is_not_recorded(start: Any) -> None:
    """Down, then detected again: the job's end lies somewhere in the outage."""
    run = start(Webui([idle(), running(), idle(), idle()]))
    run.poll()
    run.backend.detected = False  # what the worker does when a probe fails
    run.clock.t += 30.0
    run.backend.detect()  # the restarted webui: timestamp "0" again
    run.poll()
    assert run.rows == [] and run.backend.jobs_untimed == 1
    assert run.backend.jobs_unseen == 0, "a restart is not a job"


def test_a_job_no_longer_followed_leaves_the_queue(start: Any) -> None:
    """Detected again without progress (a webui restarted without --api):
    the job is dropped from the running list, not left there forever."""
    run = start(Webui([idle(), running(), Reply(404, {"detail": "Not Found"})]))
    run.poll()
    assert [j.state for j in run.queues[-1]] == ["running"]
    run.backend.detected = False
    run.backend.detect()
    run.poll()
    assert run.queues[-1] == [] and run.rows == []
    assert run.backend.jobs_untimed == 1


# ---- the queue as jobs --------------------------------------------------------------------------


def test_waiting_tasks_are_reported_as_queued_jobs(start: Any) -> None:
    webui = Webui([idle(), running()], pending=["task(a)", "task(b)"])
    run = start(webui)
    detected_at = run.clock.wall()
    run.poll()
    webui.pending = ["task(b)", "task(c)"]
    run.poll()
    jobs = run.queues[-1]
    assert [(j.job_id, j.state) for j in jobs] == [(TASK1, "running"), ("task(b)", "queued"), ("task(c)", "queued")]
    assert jobs[1].seen_at == detected_at and jobs[2].seen_at == run.clock.wall()
    assert jobs[1].submitted_at is None and jobs[1].model is None


def test_without_a_job_listener_nothing_is_built(start: Any) -> None:
    webui = Webui([idle(), running(), idle(TS1)])
    run = start(webui)
    run.backend.on_job = run.backend.on_queue = None
    run.poll(2)
    assert run.rows == [] and run.queues == []


def test_hostile_progress_fields_never_raise(start: Any) -> None:
    """Fields of the wrong type read as absent: no exception, no row with
    a bad label."""
    odd = running()
    odd["state"].update(job_timestamp=12345, job=["x"], interrupted="yes")
    odd["current_task"] = {"id": 1}
    odd["progress"] = "45%"
    run = start(Webui([idle(), odd, odd, idle(TS1)]))
    run.poll(3)
    (row,) = run.rows
    assert (row.job_id, row.workflow, row.ok) == (None, None, True)
    assert row.processing_ms == ms(2)


# ---- through the real scheduler, in real time -----------------------------------------------------


def test_scheduler_records_the_job_within_one_poll_interval() -> None:
    """A webui whose job runs for 0.5 s of real time, polled every 0.1 s
    by the monitor's collectors: one row in the monitor's jobs, processing
    within the time between the polls that bracket its start and end."""
    interval, begins, ends = 0.1, 0.35, 0.85
    log: list[tuple[float, bool]] = []
    lock = threading.Lock()
    t0 = time.monotonic()

    def progress(handler: BaseHTTPRequestHandler) -> Reply:
        now = time.monotonic() - t0
        on = begins <= now < ends
        with lock:
            log.append((now, on))
        reply = running() if on else idle(TS1 if now >= ends else "0")
        return Reply(200, json.dumps(reply).encode())

    webui = Webui([])
    routes = webui.routes()
    routes[("GET", "/sdapi/v1/progress")] = progress
    with LoopbackServer(routes) as srv, mdm.Monitor() as monitor:
        cfg = BackendConfig(NAME, "a1111", srv.url, interval_s=interval, connect_timeout_s=0.5, read_timeout_s=1.0)
        monitor.start_collectors([cfg])
        wait_until(lambda: bool(monitor.jobs.recent(service=NAME)), timeout_s=10.0, what="the job's row")
        (row,) = monitor.jobs.recent(service=NAME)
        (stats,) = monitor.jobs.stats("5m", by="model", service=NAME)
    assert (row.model, row.workflow, row.job_id, row.source, row.ok) == (SD15, "scripts_txt2img", TASK1, "backend", True)
    assert row.queue_wait_ms is None
    assert (stats.label, stats.count) == (SD15, 1)
    with lock:
        seen = [i for i, (_, on) in enumerate(log) if on]
        before, first, last, gone = log[seen[0] - 1][0], log[seen[0]][0], log[seen[-1]][0], log[seen[-1] + 1][0]
    # The estimate is first sighting -> first absence, as the server saw the
    # requests (the client takes its times as the replies arrive: the
    # slack is that leg's jitter on a loaded machine).
    slack = 0.05
    assert row.processing_ms / 1e3 == pytest.approx(gone - first, abs=slack)
    # ... so within the polls' spacing of the truth.
    resolution = max(first - before, gone - last)
    assert abs(row.processing_ms / 1e3 - (ends - begins)) <= resolution + slack
