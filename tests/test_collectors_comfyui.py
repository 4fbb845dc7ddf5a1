"""The ComfyUI collector against real loopback servers serving the
responses recorded from a real ComfyUI 0.3.64 (shared/fixtures/comfyui).

Exact oracles come from the recordings themselves: processing times are
the fixtures' ``execution_success/error/interrupted - execution_start``
timestamps, queue depth their item counts, memory their byte counts.  Jobs
are checked against prompts recorded with loader nodes in their graphs
(tests/fixtures/recorded/comfyui/jobs/README.md): their models, errors and
queue waits are read off those recordings by hand below.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loopback  # noqa: E402
from loopback import LoopbackServer, Reply, fixture, wait_until  # noqa: E402

from movie_director_metrics import Monitor  # noqa: E402
from movie_director_metrics.collectors import BackendConfig, ProbeError  # noqa: E402
from movie_director_metrics.collectors import comfyui  # noqa: E402
from movie_director_metrics.collectors.comfyui import GRAPH_LABEL_PREFIX, HISTORY_ITEMS, ComfyUI  # noqa: E402
from movie_director_metrics.collectors.scheduler import Collectors  # noqa: E402
from movie_director_metrics.jobs import JobRow, QueuedJob  # noqa: E402


def load(name: str) -> Any:
    return json.loads(fixture("comfyui", name))


SYSTEM_STATS = load("system_stats.json")
SUMMARY = load("load_summary_n4.json")
RECORDED = load("history_prompt_id.json")  # one finished prompt, as ComfyUI stored it
ERRORED = load("history_execution_error.json")
INTERRUPTED = load("history_execution_interrupted.json")


def timestamps(entry: dict[str, Any]) -> dict[str, int]:
    return {name: data["timestamp"] for name, data in entry["status"]["messages"] if "timestamp" in data}


def run_ms(entry: dict[str, Any]) -> int:
    ts = timestamps(entry)
    end = next(ts[e] for e in ("execution_success", "execution_error", "execution_interrupted") if e in ts)
    return end - ts["execution_start"]


def history_of_load_run() -> list[tuple[str, dict[str, Any]]]:
    """The four prompts of the recorded load run as /history entries: the
    first is the recorded entry itself, the others are that entry with the
    ids and timestamps the same run recorded for them (load_summary_n4)."""
    (first_id, template), = RECORDED.items()
    out = []
    for p in SUMMARY["prompts"]:
        if p["prompt_id"] == first_id:
            out.append((first_id, template))
            continue
        e = copy.deepcopy(template)
        e["prompt"][0], e["prompt"][1] = p["number"], p["prompt_id"]
        stamps = {"execution_start": p["execution_start_ms"], "execution_cached": p["execution_cached_ms"],
                  "execution_success": p["end_ms"]}
        for name, data in e["status"]["messages"]:
            data["prompt_id"], data["timestamp"] = p["prompt_id"], stamps[name]
        out.append((p["prompt_id"], e))
    return out


LOAD_RUN = history_of_load_run()


def load_jobs(name: str) -> Any:
    return json.loads(fixture("comfyui", "jobs", name))


#: Six prompts with loader nodes, recorded finished (oldest first): 4 ran,
#: 1 failed loading a checkpoint file that is not one, 1 was interrupted.
LOADERS = load_jobs("history_loaders.json")
LOADERS_QUEUE = load_jobs("queue_busy_loaders.json")  # the same six while queued: 1 running, 5 pending
RECORDING = load_jobs("recording_summary.json")
PROMPT_IDS = {p["label"]: p["prompt_id"] for p in RECORDING["prompts"]}
WORKFLOW_ID = RECORDING["workflow_id"]  # extra_pnginfo.workflow.id of the "frontend" prompts


def entry_of(label: str) -> dict[str, Any]:
    return LOADERS[PROMPT_IDS[label]]


def wait_ms(entry: dict[str, Any]) -> int:
    return timestamps(entry)["execution_start"] - entry["prompt"][3]["create_time"]


#: What each recorded prompt's job must say, read off its graph by hand:
#: label -> (model, tags, ok, error).  Workflows are checked apart.
EXPECTED_JOBS: dict[str, tuple[str | None, dict[str, str], bool, str | None]] = {
    "frontend": ("sd_xl_base_1.0.safetensors", {"loras": "detail-tweaker-xl.safetensors, film-grain.safetensors"}, True, None),
    "unet": ("flux1-dev.safetensors", {}, True, None),
    # CheckpointLoaderSimple on a file that is no safetensors:
    # exception_type "safetensors._safetensors_rust.SafetensorError".
    "fake_checkpoint": ("mdm-fake-sd15.safetensors", {}, False, "SafetensorError"),
    "interrupt": ("sd21-unclip-h.ckpt", {}, False, "interrupted"),
    "refiner": ("sd_xl_base_1.0.safetensors", {"models": "sd_xl_base_1.0.safetensors, sd_xl_refiner_1.0.safetensors"}, True, None),
    # ImageOnlyCheckpointLoader is node 40, DiffusersLoader node 41.
    "svd": ("svd_xt.safetensors", {"models": "svd_xt.safetensors, stable-diffusion-v1-5"}, True, None),
}


class FakeComfy:
    """ComfyUI's routes answered with recorded payloads; its history, queue
    and stats can be changed while it runs.

    With ``shared`` it lives under a unique path on that server (the base
    URL carries the path, as a reverse proxy's would), because each real
    server costs ~0.5 s to shut down; without, it runs its own server.
    """

    _ids = iter(range(1_000_000))

    def __init__(self, shared: LoopbackServer | None = None, *, prefix: str = "/api", jobs: bool = False) -> None:
        self.history: dict[str, Any] = {}
        self.queue_remaining = 0
        self.queue: Any = load("queue_idle.json")
        self.stats: Any = copy.deepcopy(SYSTEM_STATS)
        self.base = "" if shared is None else f"/c{next(self._ids)}"
        routes: dict[tuple[str, str], Any] = {
            ("GET", f"{prefix}/prompt"): lambda h: Reply(200, {"exec_info": {"queue_remaining": self.queue_remaining}}),
            ("GET", f"{prefix}/queue"): lambda h: Reply(200, self.queue),
            ("GET", f"{prefix}/history"): self._history,
            ("GET", f"{prefix}/system_stats"): lambda h: Reply(200, self.stats),
        }
        if jobs:
            routes[("GET", "/api/jobs")] = self._jobs
        self.owned = shared is None
        self.server = LoopbackServer() if shared is None else shared
        for (method, path), reply in routes.items():
            self.server.routes[(method, self.base + path)] = reply
        self.url = self.server.url + self.base

    def route(self, path: str, reply: Any) -> None:
        self.server.routes[("GET", self.base + path)] = reply

    def _history(self, handler: BaseHTTPRequestHandler) -> Reply:
        # Like ComfyUI's get_history: the newest max_items, oldest first.
        q = parse_qs(urlsplit(handler.path).query)
        items = list(self.history.items())
        if "max_items" in q:
            items = items[-int(q["max_items"][0]):]
        return Reply(200, dict(items))

    @staticmethod
    def job_of(pid: str, e: dict[str, Any], detail: bool = False) -> dict[str, Any]:
        """A history entry as an /api/jobs item: a transcription of
        comfy_execution/jobs.py normalize_history_item (``detail``: with
        include_outputs, as /api/jobs/{id} answers)."""
        ts = timestamps(e)
        ended = [k for k in ("execution_success", "execution_error", "execution_interrupted") if k in ts]
        status = {"execution_success": "completed", "execution_error": "failed",
                  "execution_interrupted": "cancelled"}[ended[0]]
        _, _, graph, extra, _ = e["prompt"]
        error = next((data for name, data in e["status"]["messages"] if name == "execution_error"), None)
        job = {"id": pid, "status": status, "priority": e["prompt"][0], "create_time": extra.get("create_time"),
               "execution_start_time": ts["execution_start"], "execution_end_time": ts[ended[0]],
               "execution_error": error, "outputs_count": 0,
               "workflow_id": extra.get("extra_pnginfo", {}).get("workflow", {}).get("id")}
        job = {k: v for k, v in job.items() if v is not None}  # prune_dict
        if detail:
            job.update(outputs=e["outputs"], execution_status=e["status"], workflow={"prompt": graph, "extra_data": extra})
        return job

    def _jobs(self, handler: BaseHTTPRequestHandler) -> Reply:
        # Like comfy_execution/jobs.py get_all_jobs for finished jobs, newest first.
        q = parse_qs(urlsplit(handler.path).query)
        jobs = [self.job_of(pid, e) for pid, e in reversed(self.history.items())]
        limit = int(q.get("limit", ["1000"])[0])
        return Reply(200, {"jobs": jobs[:limit], "pagination": {"offset": 0, "limit": limit, "total": len(jobs),
                                                              "has_more": len(jobs) > limit}})

    def serve_job_details(self) -> None:
        """``/api/jobs/{id}`` for every prompt now in history (404 for others,
        as ComfyUI answers an unknown id)."""
        for pid in list(self.history):
            self.route(f"/api/jobs/{pid}", lambda h, pid=pid: Reply(200, self.job_of(pid, self.history[pid], True)))

    def paths(self) -> list[str]:
        """Paths this ComfyUI was asked for, with their query strings."""
        with self.server._lock:
            hits = list(self.server.hits)
        n = len(self.base)
        return [p[n:] for _, p in hits if p.startswith(self.base + "/")]

    def hits(self, path: str) -> int:
        return sum(1 for p in self.paths() if p.split("?")[0] == path)

    def close(self) -> None:
        if self.owned:
            self.server.close()
        else:
            for key in [k for k in self.server.routes if k[1].startswith(self.base + "/")]:
                del self.server.routes[key]


@pytest.fixture
def monitor() -> Iterator[Monitor]:
    with Monitor() as m:
        yield m


@pytest.fixture(scope="module")
def shared() -> Iterator[LoopbackServer]:
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture
def comfy(shared: LoopbackServer) -> Iterator[FakeComfy]:
    fake = FakeComfy(shared)
    yield fake
    fake.close()


def backend(fake: FakeComfy, monitor: Monitor, name: str = "comfyui") -> ComfyUI:
    cfg = BackendConfig(name, "comfyui", fake.url, connect_timeout_s=0.5, read_timeout_s=1.0)
    return ComfyUI(cfg, monitor.service(name))


def poll(b: ComfyUI) -> None:
    """One worker cycle, by hand: probe, detect once, collect."""
    b.probe()
    if not b.detected:
        b.detect()
        b.detected = True
    b.collect()


def listen(b: ComfyUI) -> tuple[list[JobRow], list[list[QueuedJob]]]:
    """The job rows and queue reports ``b`` hands over (what the scheduler
    wires to the monitor's job tracker)."""
    rows: list[JobRow] = []
    queues: list[list[QueuedJob]] = []
    b.on_job = rows.append

    def queued(service: str, jobs: list[QueuedJob]) -> None:
        assert service == b.config.name
        queues.append(jobs)

    b.on_queue = queued
    return rows, queues


# ---- the fixtures themselves ---------------------------------------------------


def test_recorded_history_agrees_with_the_recorded_load_summary() -> None:
    # The oracle below rests on this: the real /history entry and the load
    # run's ground truth give the same processing time for the same prompt.
    (pid, entry), = RECORDED.items()
    first = next(p for p in SUMMARY["prompts"] if p["prompt_id"] == pid)
    assert run_ms(entry) == first["run_ms"] == 1718
    assert [run_ms(e) for _, e in LOAD_RUN] == [p["run_ms"] for p in SUMMARY["prompts"]] == [1718, 1635, 1683, 1698]


# ---- queue -------------------------------------------------------------------------


def test_queue_depth_from_prompt_and_queue(comfy: FakeComfy, monitor: Monitor) -> None:
    b = backend(comfy, monitor)
    busy = load("queue_busy.json")
    comfy.queue_remaining = len(busy["queue_running"]) + len(busy["queue_pending"])  # 4, as recorded
    comfy.queue = busy
    poll(b)
    s = monitor.stats("comfyui")
    assert (s.queue_running, s.queue_pending) == (1, 3)
    assert comfy.hits("/api/queue") == 1

    # The same count: the split read then still holds, and /queue (whose
    # items carry whole prompt graphs) is not read again.
    poll(b)
    poll(b)
    assert comfy.hits("/api/queue") == 1
    assert (monitor.stats("comfyui").queue_running, monitor.stats("comfyui").queue_pending) == (1, 3)

    # Busy by /prompt but drained by the time /queue answers: queue_idle.
    comfy.queue_remaining = 2
    comfy.queue = load("queue_idle.json")
    poll(b)
    s = monitor.stats("comfyui")
    assert (s.queue_running, s.queue_pending) == (0, 0)
    assert s.queue_depth_max == 4
    # That reply did not match its count: the next cycle reads /queue again.
    poll(b)
    assert comfy.hits("/api/queue") == 3

    # Idle by /prompt: no /queue call at all.
    queue_calls = comfy.hits("/api/queue")
    comfy.queue_remaining = 0
    poll(b)
    assert comfy.hits("/api/queue") == queue_calls
    assert (monitor.stats("comfyui").queue_running, monitor.stats("comfyui").queue_pending) == (0, 0)


def test_malformed_queue_reply_is_one_bad_json_and_read_again(comfy: FakeComfy, monitor: Monitor) -> None:
    b = backend(comfy, monitor)
    poll(b)
    comfy.queue_remaining = 1
    comfy.queue = {"queue_running": "one"}
    b.probe()
    with pytest.raises(ProbeError) as e:
        b.collect()
    assert e.value.error_type == "bad_json"
    assert monitor.stats("comfyui").error_counts == {"bad_json": 1}
    comfy.queue = load("queue_busy.json")
    comfy.queue_remaining = 4
    poll(b)
    assert (monitor.stats("comfyui").queue_running, monitor.stats("comfyui").queue_pending) == (1, 3)


# ---- processing time -----------------------------------------------------------------


def finish(comfy: FakeComfy, *entries: tuple[str, dict[str, Any]]) -> None:
    """Prompts finish as on a real ComfyUI: they land in history and leave
    the queue (its count falls by as many)."""
    comfy.history.update(entries)
    comfy.queue_remaining -= len(entries)


def test_each_prompt_counted_once_while_history_grows(comfy: FakeComfy, monitor: Monitor) -> None:
    b = backend(comfy, monitor)
    svc = monitor.service("comfyui")
    # First poll: one prompt already finished before monitoring began.
    comfy.history = dict(LOAD_RUN[:1])
    comfy.queue_remaining = 5  # the other five are queued
    poll(b)
    assert svc.totals()["processing_count"] == 1
    poll(b)
    poll(b)  # nothing new: nothing recorded
    assert svc.totals()["processing_count"] == 1
    finish(comfy, *LOAD_RUN[1:3])
    poll(b)
    finish(comfy, *LOAD_RUN[3:])
    poll(b)
    poll(b)
    finish(comfy, *ERRORED.items(), *INTERRUPTED.items())
    assert comfy.queue_remaining == 0
    poll(b)
    poll(b)

    expected = [run_ms(e) for _, e in LOAD_RUN] + [run_ms(e) for e in (*ERRORED.values(), *INTERRUPTED.values())]
    assert expected == [1718, 1635, 1683, 1698, 46, 1003]
    totals = svc.totals()
    assert totals["processing_count"] == len(expected)
    assert totals["processing_sum_ms"] == pytest.approx(sum(expected), abs=1e-9)
    s = monitor.stats("comfyui")
    assert s.processing_count == 6
    assert s.processing_avg_ms == pytest.approx(sum(expected) / 6)
    assert b.executions == {"success": 4, "execution_error": 1, "interrupted": 1}
    # Execution failures are outcomes of jobs, not failed requests: every
    # HTTP call succeeded.
    assert s.errors == 0
    # History is read at the first poll and when prompts finished, each
    # time for what finished plus one entry already seen; never all of it.
    reads = [p for p in comfy.paths() if p.startswith("/api/history")]
    assert reads == [f"/api/history?max_items={HISTORY_ITEMS}", "/api/history?max_items=3",
                     "/api/history?max_items=2", "/api/history?max_items=3"]


def test_idle_polls_do_not_read_history(
    comfy: FakeComfy, monitor: Monitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A full history of an idle server: after the first read, a poll costs
    # /prompt whatever the history holds, plus /system_stats every
    # IDLE_RESOURCES_EVERY_S and one entry every HISTORY_SWEEP_S.
    for i in range(HISTORY_ITEMS):
        pid, e = LOAD_RUN[0]
        comfy.history[f"p{i}"] = e
    b = backend(comfy, monitor)
    poll(b)
    first = len(comfy.paths())
    for _ in range(5):
        poll(b)
    assert comfy.paths()[first:] == ["/api/prompt"] * 5
    assert monitor.service("comfyui").totals()["processing_count"] == HISTORY_ITEMS

    monkeypatch.setattr(comfyui, "IDLE_RESOURCES_EVERY_S", 0.0)
    poll(b)
    assert comfy.paths()[-2:] == ["/api/prompt", "/api/system_stats"]
    monkeypatch.setattr(comfyui, "HISTORY_SWEEP_S", 0.0)
    poll(b)
    assert comfy.paths()[-2:] == ["/api/history?max_items=1", "/api/system_stats"]
    assert monitor.service("comfyui").totals()["processing_count"] == HISTORY_ITEMS


def test_prompts_the_queue_count_never_showed_are_found_by_the_sweep(
    comfy: FakeComfy, monitor: Monitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = backend(comfy, monitor)
    svc = monitor.service("comfyui")
    poll(b)
    # Submitted and finished between two polls (a cached re-run takes
    # milliseconds): the count reads 0 before and after.
    comfy.history.update(LOAD_RUN[:1])
    poll(b)
    assert svc.totals()["processing_count"] == 0  # not yet: nothing said a prompt finished
    monkeypatch.setattr(comfyui, "HISTORY_SWEEP_S", 0.0)
    poll(b)
    assert svc.totals()["processing_count"] == 1
    monkeypatch.setattr(comfyui, "HISTORY_SWEEP_S", 3600.0)

    # A finish hidden by a submission in the same interval: the count stays
    # at 1, the running prompt changed.
    comfy.queue_remaining = 1
    poll(b)
    comfy.history.update(LOAD_RUN[1:2])
    poll(b)
    assert svc.totals()["processing_count"] == 1

    # Five finished while the count fell by one: the read doubles until it
    # reaches an entry it had seen.
    comfy.history.update(LOAD_RUN[2:])
    comfy.history.update(ERRORED)
    comfy.history.update(INTERRUPTED)
    comfy.queue_remaining = 0
    poll(b)
    assert svc.totals()["processing_count"] == 7 - 1  # LOAD_RUN (4), ERRORED, INTERRUPTED
    reads = [p for p in comfy.paths() if p.startswith("/api/history")]
    assert reads[-3:] == ["/api/history?max_items=2", "/api/history?max_items=4", "/api/history?max_items=8"]
    assert svc.totals()["processing_sum_ms"] == pytest.approx(1718 + 1635 + 1683 + 1698 + 46 + 1003)


def test_a_cleared_history_is_read_again_from_its_newest(
    comfy: FakeComfy, monitor: Monitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # POST /history {"clear": true} (or a restart) empties it: what
    # finishes afterwards is all new, and found.
    comfy.history = dict(LOAD_RUN[:2])
    b = backend(comfy, monitor)
    poll(b)
    comfy.history = {}
    comfy.queue_remaining = 2
    poll(b)
    finish(comfy, *LOAD_RUN[2:])
    poll(b)
    assert monitor.service("comfyui").totals()["processing_count"] == 4


def test_only_the_newest_history_items_are_read(comfy: FakeComfy, monitor: Monitor) -> None:
    b = backend(comfy, monitor)
    for i in range(HISTORY_ITEMS + 10):
        pid, e = LOAD_RUN[0]
        e = copy.deepcopy(e)
        e["status"]["messages"][-1][1]["timestamp"] = timestamps(e)["execution_start"] + i
        comfy.history[f"p{i}"] = e
    poll(b)
    totals = monitor.service("comfyui").totals()
    assert totals["processing_count"] == HISTORY_ITEMS
    # The newest HISTORY_ITEMS: durations 10 .. HISTORY_ITEMS + 9 ms.
    assert totals["processing_sum_ms"] == sum(range(10, HISTORY_ITEMS + 10))


def test_processing_from_api_jobs_when_the_build_has_it(monitor: Monitor, shared: LoopbackServer) -> None:
    fake = FakeComfy(shared, jobs=True)
    try:
        b = backend(fake, monitor)
        fake.history = dict(LOAD_RUN[:2])
        fake.queue_remaining = 1
        poll(b)
        assert "/api/jobs" in (b.capabilities.available["processing"])
        # Three finish while the count falls by one (two more were queued
        # and ran between polls): pagination.total says three are new.
        fake.history.update(LOAD_RUN[2:])
        fake.history.update(ERRORED)
        fake.queue_remaining = 0
        poll(b)
        poll(b)
        totals = monitor.service("comfyui").totals()
        assert totals["processing_count"] == 5
        assert totals["processing_sum_ms"] == 1718 + 1635 + 1683 + 1698 + 46
        assert b.executions == {"success": 4, "execution_error": 1, "interrupted": 0}
        assert fake.hits("/api/history") == 0
        reads = [p.rsplit("limit=", 1)[1] for p in fake.paths() if p.startswith("/api/jobs?status=")]
        assert reads == [str(HISTORY_ITEMS), "2", "4"]
    finally:
        fake.close()


def test_history_fallback_when_api_jobs_is_missing(comfy: FakeComfy, monitor: Monitor) -> None:
    b = backend(comfy, monitor)
    poll(b)
    assert comfy.hits("/api/jobs") == 1  # asked once, at detect; 404
    assert "/history" in b.capabilities.available["processing"]
    poll(b)
    assert comfy.hits("/api/jobs") == 1
    assert monitor.stats("comfyui").errors == 0  # the 404 of a discovery call is not a failure


# ---- jobs ------------------------------------------------------------------------------


def check_job(row: JobRow, label: str) -> None:
    """``row`` against the recording of prompt ``label``, to the millisecond."""
    entry = entry_of(label)
    model, tags, ok, error = EXPECTED_JOBS[label]
    ts = timestamps(entry)
    start = ts["execution_start"]
    end = next(ts[e] for e in ("execution_success", "execution_error", "execution_interrupted") if e in ts)
    assert (row.service, row.job_id, row.source) == ("comfyui", PROMPT_IDS[label], "backend")
    assert (row.model, dict(row.tags), row.ok, row.error) == (model, tags, ok, error), label
    assert row.processing_ms == end - start == run_ms(entry)
    assert row.queue_wait_ms == wait_ms(entry) == start - entry["prompt"][3]["create_time"]
    assert row.submitted_at * 1000 == pytest.approx(entry["prompt"][3]["create_time"], abs=1e-3)
    assert row.started_at is not None and row.started_at * 1000 == pytest.approx(start, abs=1e-3)
    assert row.finished_at * 1000 == pytest.approx(end, abs=1e-3)
    assert row.total_ms == end - entry["prompt"][3]["create_time"]
    row.check()


def test_recorded_prompts_with_loaders() -> None:
    # What the oracles below rest on, as ComfyUI recorded it.
    assert [entry_of(label)["status"]["status_str"] for label in EXPECTED_JOBS] == [
        "success", "success", "error", "error", "success", "success"]
    assert list(LOADERS) == [PROMPT_IDS[label] for label in EXPECTED_JOBS]  # oldest first
    err = entry_of("fake_checkpoint")["status"]["messages"][-1]
    assert err[0] == "execution_error" and err[1]["node_type"] == "CheckpointLoaderSimple"
    assert err[1]["exception_type"] == "safetensors._safetensors_rust.SafetensorError"
    assert entry_of("interrupt")["status"]["messages"][-1][0] == "execution_interrupted"
    assert [run_ms(entry_of(label)) for label in EXPECTED_JOBS] == [2935, 4466, 11, 892, 3975, 4467]
    assert [wait_ms(entry_of(label)) for label in EXPECTED_JOBS] == [2, 3398, 7863, 7872, 8763, 12730]


def test_finished_prompts_become_jobs(comfy: FakeComfy, monitor: Monitor) -> None:
    b = backend(comfy, monitor)
    rows, _ = listen(b)
    # One prompt finished before monitoring began: processing time, no job.
    comfy.history = dict(LOAD_RUN[:1])
    comfy.queue_remaining = 6
    comfy.queue = LOADERS_QUEUE
    poll(b)
    assert monitor.service("comfyui").totals()["processing_count"] == 1
    assert rows == []
    finish(comfy, *list(LOADERS.items())[:2])
    poll(b)
    finish(comfy, *list(LOADERS.items())[2:])
    poll(b)
    poll(b)

    assert [r.job_id for r in rows] == list(LOADERS)  # each once, oldest first
    for row, label in zip(rows, EXPECTED_JOBS):
        check_job(row, label)
    by = {label: row for label, row in zip(EXPECTED_JOBS, rows)}
    # The frontend's workflow id where the client sent one; else the graph's
    # node types, the same for the same graph whatever its settings.
    assert by["frontend"].workflow == by["fake_checkpoint"].workflow == WORKFLOW_ID
    assert by["refiner"].workflow != WORKFLOW_ID and by["refiner"].workflow is not None
    for label in ("unet", "interrupt", "svd"):
        label_ = by[label].workflow
        assert label_ is not None and label_.startswith(GRAPH_LABEL_PREFIX) and len(label_) == len(GRAPH_LABEL_PREFIX) + 8
    assert len({by[label].workflow for label in ("unet", "interrupt", "svd")}) == 3
    # Jobs cost no request more on /history builds: the same reads as before.
    reads = [p for p in comfy.paths() if not p.startswith(("/api/prompt", "/api/system_stats"))]
    assert reads == ["/api/jobs?limit=1", "/api/queue", f"/api/history?max_items={HISTORY_ITEMS}",
                     "/api/queue", "/api/history?max_items=3", "/api/history?max_items=5"]
    assert b.executions == {"success": 5, "execution_error": 1, "interrupted": 1}


def test_builds_without_create_time_leave_the_wait_unknown(comfy: FakeComfy, monitor: Monitor) -> None:
    # The load run's prompts (ComfyUI 0.3.64 sets no create_time) and its
    # recorded error and interrupt: no loader nodes, so no model.
    b = backend(comfy, monitor)
    rows, _ = listen(b)
    comfy.queue_remaining = 6
    poll(b)
    finish(comfy, *LOAD_RUN, *ERRORED.items(), *INTERRUPTED.items())
    poll(b)
    assert [r.processing_ms for r in rows] == [1718, 1635, 1683, 1698, 46, 1003]
    for row in rows:
        assert row.queue_wait_ms is None  # unknown, never 0
        assert row.submitted_at == row.started_at
        assert row.total_ms == row.processing_ms
        assert row.model is None and dict(row.tags) == {}
    assert [(r.ok, r.error) for r in rows][-2:] == [(False, "IndexError"), (False, "interrupted")]
    # The same node types with other settings (the interrupted prompt is the
    # load run's graph too): one workflow label; the failing graph another.
    assert len({r.workflow for r in (*rows[:4], rows[5])}) == 1
    assert rows[4].workflow != rows[0].workflow


def test_nobody_listening_costs_nothing_more(monitor: Monitor, shared: LoopbackServer) -> None:
    fake = FakeComfy(shared, jobs=True)
    try:
        b = backend(fake, monitor)  # on_job is None: the scheduler gave no tracker
        fake.queue_remaining = 2
        poll(b)
        finish(fake, *list(LOADERS.items())[:2])
        fake.serve_job_details()
        poll(b)
        assert monitor.service("comfyui").totals()["processing_count"] == 2
        assert not [p for p in fake.paths() if p.startswith("/api/jobs/")]
    finally:
        fake.close()


def test_jobs_on_api_jobs_builds_read_each_new_job_once(monitor: Monitor, shared: LoopbackServer) -> None:
    fake = FakeComfy(shared, jobs=True)
    try:
        b = backend(fake, monitor)
        rows, _ = listen(b)
        fake.history = dict(LOAD_RUN)  # finished before monitoring: no job, no detail read
        fake.queue_remaining = 6
        fake.queue = LOADERS_QUEUE
        poll(b)
        assert rows == []
        finish(fake, *list(LOADERS.items())[:1])
        fake.serve_job_details()
        poll(b)
        finish(fake, *list(LOADERS.items())[1:])
        fake.serve_job_details()
        poll(b)
        poll(b)
        assert fake.hits("/api/history") == 0
        for row, label in zip(rows, EXPECTED_JOBS):
            check_job(row, label)
        assert len(rows) == 6
        assert rows[0].workflow == WORKFLOW_ID
        # One /api/jobs/{id} per job that finished, each once: the cost
        # follows the jobs, not the history.
        details = sorted(p for p in fake.paths() if p.startswith("/api/jobs/"))
        assert details == sorted(f"/api/jobs/{pid}" for pid in LOADERS)
    finally:
        fake.close()


def test_a_job_whose_details_fail_is_reported_without_its_model(monitor: Monitor, shared: LoopbackServer) -> None:
    fake = FakeComfy(shared, jobs=True)
    try:
        b = backend(fake, monitor)
        rows, _ = listen(b)
        fake.queue_remaining = 2
        poll(b)
        (gone, e1), (broken, e2) = list(LOADERS.items())[:2]
        finish(fake, (gone, e1), (broken, e2))
        # The first left history between the list and its read (404: as
        # ComfyUI answers an unknown id); the second fails.
        fake.route(f"/api/jobs/{broken}", Reply(500, {"error": "boom"}))
        b.probe()
        with pytest.raises(ProbeError) as err:
            b.collect()
        assert err.value.error_type == "http_5xx"
        assert [r.job_id for r in rows] == [gone, broken]
        assert [(r.model, r.ok) for r in rows] == [(None, True), (None, True)]
        # The list's workflow_id and timings still hold.
        assert rows[0].workflow == WORKFLOW_ID and rows[1].workflow is None
        assert [r.processing_ms for r in rows] == [run_ms(e1), run_ms(e2)]
        assert [r.queue_wait_ms for r in rows] == [wait_ms(e1), wait_ms(e2)]
        assert monitor.stats("comfyui").error_counts == {"http_5xx": 1}
        poll(b)  # not read again: the job was reported
        assert fake.hits(f"/api/jobs/{broken}") == 1 and len(rows) == 2
    finally:
        fake.close()


def test_a_rejected_prompt_is_no_job(comfy: FakeComfy, monitor: Monitor) -> None:
    # POST /prompt with a checkpoint ComfyUI does not have is refused before
    # it is queued (recorded: 400, and /queue stayed empty): it never runs,
    # never reaches history, and so is no job.
    rejected = load_jobs("prompt_post_error_400_missing_model.json")
    assert rejected["error"]["type"] == "prompt_outputs_failed_validation"
    (node,) = rejected["node_errors"].values()
    assert node["class_type"] == "CheckpointLoaderSimple"
    assert node["errors"][0]["type"] == "value_not_in_list"
    b = backend(comfy, monitor)
    rows, queues = listen(b)
    poll(b)
    poll(b)
    assert rows == [] and queues == [[]]
    assert monitor.service("comfyui").totals()["processing_count"] == 0
    assert comfy.hits("/api/queue") == 0


def test_queue_is_reported_as_queued_jobs(comfy: FakeComfy, monitor: Monitor) -> None:
    b = backend(comfy, monitor)
    _, queues = listen(b)
    running, pending = LOADERS_QUEUE["queue_running"], LOADERS_QUEUE["queue_pending"]
    comfy.queue_remaining = load_jobs("prompt_get_busy_loaders.json")["exec_info"]["queue_remaining"]
    assert comfy.queue_remaining == len(running) + len(pending) == 6
    comfy.queue = LOADERS_QUEUE
    before = time.time()
    poll(b)
    poll(b)  # the same count: /queue not read again, nothing new reported
    assert comfy.hits("/api/queue") == 1
    assert len(queues) == 1
    jobs = queues[0]
    assert [(j.job_id, j.state) for j in jobs] == [(item[1], "running") for item in running] + [
        (item[1], "queued") for item in pending]
    by = {j.job_id: j for j in jobs}
    for label, (model, _, _, _) in EXPECTED_JOBS.items():
        job = by[PROMPT_IDS[label]]
        assert (job.service, job.model) == ("comfyui", model)
        created = next(p["create_time"] for p in RECORDING["prompts"] if p["label"] == label)
        assert job.submitted_at is not None and job.submitted_at * 1000 == pytest.approx(created, abs=1e-3)
        assert job.started_at is None and job.progress_fraction is None  # /queue says neither
        assert job.seen_at >= before
    assert by[PROMPT_IDS["frontend"]].workflow == WORKFLOW_ID

    # The running prompt finished: the count fell, /queue is read again; the
    # prompts still waiting keep the time they were first seen.
    first_seen = {j.job_id: j.seen_at for j in jobs}
    rest = {"queue_running": [pending[0]], "queue_pending": pending[1:]}
    comfy.queue, comfy.queue_remaining = rest, 5
    poll(b)
    assert [(j.job_id, j.state) for j in queues[-1]] == [(pending[0][1], "running")] + [
        (item[1], "queued") for item in pending[1:]]
    assert all(j.seen_at == first_seen[j.job_id] for j in queues[-1])

    # Idle: reported once, without a /queue read.
    comfy.queue_remaining = 0
    poll(b)
    poll(b)
    assert queues[-1] == [] and len(queues) == 3
    assert comfy.hits("/api/queue") == 2


def test_labels_from_edited_graphs(comfy: FakeComfy, monitor: Monitor) -> None:
    # A recorded queue item, edited: the checkpoint name wired from another
    # node names nothing; a GGUF UNet (ComfyUI-GGUF custom node) is a base
    # model; node ids order loaders as numbers ("9" before "10").
    item = copy.deepcopy(LOADERS_QUEUE["queue_running"][0])
    graph = item[2]
    graph["10"]["inputs"]["ckpt_name"] = ["30", 0]
    graph["9"] = {"class_type": "UnetLoaderGGUF", "inputs": {"unet_name": "flux1-dev-Q4_K_S.gguf"}}
    graph["30"] = {"class_type": "PrimitiveString", "inputs": {"value": "sd_xl_base_1.0.safetensors"}}
    item[3] = {}  # no workflow id, no create_time
    b = backend(comfy, monitor)
    _, queues = listen(b)
    comfy.queue, comfy.queue_remaining = {"queue_running": [item], "queue_pending": []}, 1
    poll(b)
    (job,) = queues[-1]
    assert job.model == "flux1-dev-Q4_K_S.gguf"
    assert job.workflow is not None and job.workflow.startswith(GRAPH_LABEL_PREFIX)
    assert job.submitted_at is None


def test_jobs_reach_the_monitor_and_a_job_recorded_in_code_counts_once(monitor: Monitor, comfy: FakeComfy) -> None:
    # Through the worker: the scheduler hands rows to monitor.jobs.  The
    # user's code recorded the "frontend" prompt itself (same prompt id):
    # it counts once, as the user's.
    mine = monitor.jobs.job("comfyui", model="sdxl", workflow="shot-010")
    mine.started(job_id=PROMPT_IDS["frontend"])
    mine.finish()
    comfy.queue_remaining = 6
    comfy.queue = LOADERS_QUEUE
    cfg = BackendConfig("comfyui", "comfyui", comfy.url, interval_s=0.05, connect_timeout_s=0.2, read_timeout_s=0.5)
    with Collectors(monitor, [cfg]) as collectors:
        wait_until(lambda: collectors.status()["comfyui"].state == "up", what="up")
        # While queued: listed with the jobs the user's code runs.
        wait_until(lambda: len(monitor.jobs.queued()) == 6, what="6 queued jobs")
        assert {q.job_id for q in monitor.jobs.queued()} == set(PROMPT_IDS.values())
        finish(comfy, *LOADERS.items())
        wait_until(lambda: monitor.service("comfyui").totals()["processing_count"] == 6, what="6 prompts")
        wait_until(lambda: len(monitor.jobs.recent()) == 6, what="6 jobs")
        wait_until(lambda: monitor.jobs.queued() == [], what="queue emptied")
    recent = monitor.jobs.recent()
    assert monitor.jobs.linked == 1
    assert sorted(r.job_id or "" for r in recent) == sorted(PROMPT_IDS.values())
    assert sorted(r.source for r in recent) == ["backend"] * 5 + ["user"]
    by_model = {s.label: s.count for s in monitor.jobs.stats("5m", by="model", service="comfyui")}
    assert by_model["sd_xl_base_1.0.safetensors"] == 1  # the refiner prompt; "frontend" counted as the user's
    assert by_model["sdxl"] == 1


# ---- resources, version, capabilities ------------------------------------------------


def test_memory_and_version_from_system_stats(comfy: FakeComfy, monitor: Monitor) -> None:
    b = backend(comfy, monitor)
    poll(b)
    r = monitor.stats("comfyui").resources
    dev, system = SYSTEM_STATS["devices"][0], SYSTEM_STATS["system"]
    assert r["vram_used_bytes"].last == dev["vram_total"] - dev["vram_free"] == 1_305_669_632
    assert r["vram_total_bytes"].last == dev["vram_total"]
    assert r["ram_used_bytes"].last == system["ram_total"] - system["ram_free"]
    assert r["ram_total_bytes"].last == system["ram_total"]
    assert "gpu_util_pct" not in r
    assert b.version == "0.3.64"

    caps = b.capabilities
    assert set(caps.available) == {"health", "queue", "processing", "resources"}
    assert caps.missing["gpu_util"] == "ComfyUI reports memory only"
    assert "models" in caps.missing and caps.as_dict()["models"] is None


def test_older_build_without_api_prefix(monitor: Monitor, shared: LoopbackServer) -> None:
    fake = FakeComfy(shared, prefix="")
    try:
        fake.history = dict(LOAD_RUN[:1])
        b = backend(fake, monitor)
        poll(b)
        poll(b)
        assert b.capabilities.available["health"] == "GET /prompt"
        assert fake.hits("/api/prompt") == 1  # tried once before detection, 404
        assert fake.hits("/prompt") == 2
        assert monitor.service("comfyui").totals()["processing_count"] == 1
        assert b.version == "0.3.64"
        assert monitor.stats("comfyui").errors == 0
    finally:
        fake.close()


# ---- malformed replies ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        Reply(200, b"<html>not json</html>"),
        Reply(200, [1, 2, 3]),
        Reply(200, {"exec_info": {}}),
        Reply(200, {"exec_info": {"queue_remaining": "four"}}),
    ],
    ids=["html", "list", "no-count", "text-count"],
)
def test_malformed_prompt_reply_is_one_bad_json_request(comfy: FakeComfy, monitor: Monitor, reply: Reply) -> None:
    b = backend(comfy, monitor)
    poll(b)
    comfy.route("/api/prompt", reply)
    with pytest.raises(ProbeError) as e:
        b.probe()
    assert e.value.error_type == "bad_json"
    s = monitor.stats("comfyui")
    assert s.error_counts == {"bad_json": 1}
    assert s.errors == 1


def test_truncated_prompt_reply_is_one_connection_reset(comfy: FakeComfy, monitor: Monitor) -> None:
    # Fewer bytes than the Content-Length promised: the connection was cut.
    b = backend(comfy, monitor)
    poll(b)
    comfy.route("/api/prompt", Reply(200, json.dumps({"exec_info": {"queue_remaining": 4}}), truncate_to=12))
    with pytest.raises(ProbeError) as e:
        b.probe()
    assert e.value.error_type == "connection_reset"
    assert "truncated body (12 of" in str(e.value)
    assert monitor.stats("comfyui").error_counts == {"connection_reset": 1}


def test_one_failing_signal_does_not_stop_the_others(
    comfy: FakeComfy, monitor: Monitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(comfyui, "IDLE_RESOURCES_EVERY_S", 0.0)  # memory read every cycle, idle or not
    b = backend(comfy, monitor)
    poll(b)
    comfy.queue_remaining = 4
    poll(b)
    comfy.route("/api/history", Reply(500, {"error": "boom"}))
    finish(comfy, *LOAD_RUN)
    stats_calls = comfy.hits("/api/system_stats")
    b.probe()
    with pytest.raises(ProbeError) as e:
        b.collect()
    assert e.value.error_type == "http_5xx"
    assert comfy.hits("/api/system_stats") == stats_calls + 1  # resources still read
    assert monitor.stats("comfyui").error_counts == {"http_5xx": 1}
    # The failed read is tried again next cycle: nothing that finished is lost.
    comfy.route("/api/history", comfy._history)
    poll(b)
    assert monitor.service("comfyui").totals()["processing_count"] == 4


# ---- through the worker: transitions, uptime, re-detection -------------------------------


@pytest.fixture
def fixed_port(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Makes the next LoopbackServer bind a chosen port (a restarted server)."""

    def use(port: int) -> None:
        class FixedPortServer(ThreadingHTTPServer):
            def __init__(self, addr: tuple[str, int], handler: Any) -> None:
                super().__init__((addr[0], port), handler)

        monkeypatch.setattr(loopback, "ThreadingHTTPServer", FixedPortServer)

    return use


def test_down_up_transitions_uptime_and_redetect_after_restart(
    monitor: Monitor, fixed_port: Callable[[int], None]
) -> None:
    first = FakeComfy()
    first.history = dict(LOAD_RUN[:2])
    cfg = BackendConfig("comfyui", "comfyui", first.url, interval_s=0.05, connect_timeout_s=0.2, read_timeout_s=0.5)
    with Collectors(monitor, [cfg]) as collectors:
        wait_until(lambda: collectors.status()["comfyui"].state == "up", what="up")
        wait_until(lambda: monitor.service("comfyui").totals()["processing_count"] == 2, what="2 prompts")
        assert collectors.status()["comfyui"].version == "0.3.64"
        time.sleep(1.1)  # uptime is time-weighted in whole seconds

        port = first.server.port
        first.close()  # the server goes away (a request caught mid-close is reset): refused
        wait_until(lambda: collectors.status()["comfyui"].last_error_type == "connection_refused", what="refused")
        assert collectors.status()["comfyui"].state == "down"
        assert monitor.stats("comfyui").up is False
        time.sleep(1.1)

        fixed_port(port)  # restarted on the same port, upgraded
        second = FakeComfy()
        try:
            assert second.server.port == port
            second.stats["system"]["comfyui_version"] = "0.3.70"
            second.history = dict(LOAD_RUN)  # a fresh server; ids already counted stay counted
            wait_until(lambda: collectors.status()["comfyui"].version == "0.3.70", what="re-detect")
            st = collectors.status()["comfyui"]
            assert st.state == "up" and st.failures == 0
            wait_until(lambda: monitor.service("comfyui").totals()["processing_count"] == 4, what="4 prompts")
            s = monitor.stats("comfyui")
            assert s.up is True
            assert s.uptime_pct is not None and 0 < s.uptime_pct < 100
            assert s.error_counts.get("connection_refused", 0) >= 1
            time.sleep(0.3)
            assert monitor.service("comfyui").totals()["processing_count"] == 4
        finally:
            second.close()


def test_server_dropping_connections_is_connection_reset(comfy: FakeComfy, monitor: Monitor) -> None:
    cfg = BackendConfig("comfyui", "comfyui", comfy.url, interval_s=0.05, connect_timeout_s=0.2, read_timeout_s=0.5)
    with Collectors(monitor, [cfg]) as collectors:
        wait_until(lambda: collectors.status()["comfyui"].state == "up", what="up")
        comfy.route("/api/prompt", Reply(drop=True))
        wait_until(lambda: collectors.status()["comfyui"].state == "down", what="down")
        assert collectors.status()["comfyui"].last_error_type == "connection_reset"
        assert monitor.stats("comfyui").error_counts.get("connection_reset", 0) >= 1
        calls = len(comfy.paths())
        comfy.route("/api/prompt", Reply(200, {"exec_info": {"queue_remaining": 0}}))
        wait_until(lambda: collectors.status()["comfyui"].state == "up", what="up again")
        assert len(comfy.paths()) > calls



def test_resources_off_keeps_memory_unread(comfy: FakeComfy, monitor: Monitor) -> None:
    cfg = BackendConfig("comfyui", "comfyui", comfy.url, interval_s=0.05, connect_timeout_s=0.2, read_timeout_s=0.5)
    with Collectors(monitor, [cfg], resources=False) as collectors:
        wait_until(lambda: monitor.stats("comfyui").health_checks >= 3, what="3 polls")
        st = collectors.status()["comfyui"]
        assert st.capabilities["resources"] is None
        assert "resources=False" in st.missing["resources"]
        assert st.version == "0.3.64"  # read once, at detect
        assert comfy.hits("/api/system_stats") == 1
        assert monitor.stats("comfyui").resources == {}


def test_memory_is_read_every_cycle_while_busy_and_every_5_s_while_idle(
    comfy: FakeComfy, monitor: Monitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job's peak VRAM comes from /system_stats: read at every poll while
    a prompt runs or waits; idle, at most every IDLE_RESOURCES_EVERY_S."""
    assert comfyui.IDLE_RESOURCES_EVERY_S == 5.0
    b = backend(comfy, monitor)
    poll(b)
    comfy.queue_remaining = 2
    before = comfy.hits("/api/system_stats")
    for _ in range(3):
        poll(b)
    assert comfy.hits("/api/system_stats") == before + 3
    comfy.queue_remaining = 0
    poll(b)  # the queue is seen empty here: this read is the last busy one
    idle_from = comfy.hits("/api/system_stats")
    for _ in range(3):
        poll(b)
    assert comfy.hits("/api/system_stats") == idle_from
    b._resources_at -= comfyui.IDLE_RESOURCES_EVERY_S  # as if 5 s had passed
    poll(b)
    assert comfy.hits("/api/system_stats") == idle_from + 1
