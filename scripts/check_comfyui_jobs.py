"""Jobs from a real ComfyUI: the collector's job rows against ComfyUI's own
``/history``, prompt by prompt.

Needs a ComfyUI on loopback (``../shared/tools/comfyui/start.sh`` starts a
real one on the CPU at 127.0.0.1:8188); not part of ``make test`` (CI has
no ComfyUI).  **This clears the server's history** (``POST /history
{"clear": true}``) first.

The collector runs as in Blender (its worker thread, polling at 1 Hz, the
monitor's job tracker listening) while prompts are submitted: a burst that
fills the queue, single ones, a cached re-run that finishes between two
polls, a checkpoint file that is not one (fails at execution), a graph that
fails in a node, an interrupted one, and one refused at ``POST /prompt``
(400: a model ComfyUI does not have).  One prompt finishes before the
collector starts.  The graphs hold loader nodes; where a model file would
be loaded the prompt would fail, so apart from the failing checkpoint the
loaders are not wired to the output (ComfyUI keeps, but neither validates
nor runs, nodes no output needs).  The failing checkpoint is a file of a
few bytes put in ComfyUI's ``models/checkpoints`` (``--models-dir``) for
the run and removed after.  Half the prompts carry
``extra_data.create_time`` as newer ComfyUI builds set it at enqueue
(0.3.64 does not); the other half leave the queue wait unknown.

Afterwards, with ComfyUI's ``/history`` as the truth: one job per prompt
that finished after the collector started (none for the earlier one, none
for the refused one); each job's processing time (``end - execution_start``)
and queue wait (``execution_start - create_time``) equal to the
millisecond, its outcome and error type those of the history entry, its
model and LoRAs the loader names submitted.  Writes
``benchmarks/reference/comfyui-jobs-<date>.json`` and exits 1 on any
difference.

    .venv/bin/python scripts/check_comfyui_jobs.py [--url http://127.0.0.1:8188] [--models-dir /tmp/comfyui/models]
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

from movie_director_metrics import Monitor  # noqa: E402
from movie_director_metrics.collectors import BackendConfig, comfyui  # noqa: E402
from movie_director_metrics.collectors.scheduler import Collectors  # noqa: E402
from movie_director_metrics.jobs import JobRow  # noqa: E402

#: The checkpoint file put in ComfyUI's models dir for the run: a
#: safetensors header that is not JSON, so loading it fails.
FAKE_CHECKPOINT = "mdm-check-not-a-checkpoint.safetensors"
END_EVENTS = ("execution_success", "execution_error", "execution_interrupted")


def call(url: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method="GET" if data is None else "POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw, status = r.read(), r.status
    except urllib.error.HTTPError as e:  # a 400 from POST /prompt is an answer here
        raw, status = e.read(), e.code
    return status, (json.loads(raw) if raw else None)


def get(url: str, path: str) -> Any:
    status, data = call(url, path)
    if status != 200:
        raise SystemExit(f"GET {path}: HTTP {status}")
    return data


# ---- the prompts ------------------------------------------------------------------


@dataclass
class Prompt:
    """One prompt sent, and what its job must say."""

    label: str
    graph: dict[str, Any]
    model: str | None
    tags: dict[str, str] = field(default_factory=dict)
    workflow_id: str | None = None
    create_time: bool = False
    prompt_id: str | None = None
    http_status: int | None = None


def blur_chain(color: int, blurs: int = 2, size: int = 512) -> dict[str, Any]:
    """EmptyImage -> ImageBlur x blurs -> PreviewImage (no model files); a
    colour of its own defeats ComfyUI's output cache."""
    g: dict[str, Any] = {"1": {"class_type": "EmptyImage",
                               "inputs": {"width": size, "height": size, "batch_size": 1, "color": color}}}
    prev = "1"
    for i in range(blurs):
        node = str(2 + i)
        g[node] = {"class_type": "ImageBlur", "inputs": {"image": [prev, 0], "blur_radius": 10, "sigma": 4.0}}
        prev = node
    g[str(2 + blurs)] = {"class_type": "PreviewImage", "inputs": {"images": [prev, 0]}}
    return g


def with_nodes(graph: dict[str, Any], **nodes: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """``graph`` plus unwired nodes: id -> (class_type, inputs)."""
    out = dict(graph)
    for node_id, (class_type, inputs) in nodes.items():
        out[node_id.removeprefix("n")] = {"class_type": class_type, "inputs": inputs}
    return out


def ui_workflow(workflow_id: str) -> dict[str, Any]:
    """The shape ComfyUI's frontend sends as ``extra_pnginfo.workflow``."""
    return {"id": workflow_id, "revision": 0, "last_node_id": 12, "last_link_id": 0, "nodes": [], "links": [],
            "groups": [], "config": {}, "extra": {}, "version": 0.4}


def prompts(color: int) -> tuple[Prompt, list[Prompt], list[Prompt], Prompt, Prompt, Prompt]:
    """(before the collector, burst, singles, cached re-run, interrupted,
    refused)."""
    sdxl = ("CheckpointLoaderSimple", {"ckpt_name": "sd_xl_base_1.0.safetensors"})
    lora = ("LoraLoader", {"model": ["10", 0], "clip": ["10", 1], "lora_name": "detail-tweaker-xl.safetensors",
                           "strength_model": 0.8, "strength_clip": 0.8})
    wf = str(uuid.uuid4())
    before = Prompt("before-start", with_nodes(blur_chain(color), n10=sdxl), "sd_xl_base_1.0.safetensors")
    burst = [
        Prompt(f"burst-{i}", with_nodes(blur_chain(color + 1 + i), n10=sdxl, n11=lora), "sd_xl_base_1.0.safetensors",
               {"loras": "detail-tweaker-xl.safetensors"}, workflow_id=wf, create_time=i % 2 == 0)
        for i in range(3)
    ]
    failing_ckpt = {
        "10": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": FAKE_CHECKPOINT}},
        "11": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "12": {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["10", 2]}},
        "13": {"class_type": "PreviewImage", "inputs": {"images": ["12", 0]}},
    }
    failing_node = {  # ImageToMask "alpha" of a 3-channel image: IndexError
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": color}},
        "2": {"class_type": "ImageToMask", "inputs": {"image": ["1", 0], "channel": "alpha"}},
        "3": {"class_type": "MaskToImage", "inputs": {"mask": ["2", 0]}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
        "20": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux1-dev.safetensors", "weight_dtype": "default"}},
    }
    singles = [
        Prompt("unet", with_nodes(blur_chain(color + 10), n20=("UNETLoader", {"unet_name": "flux1-dev.safetensors",
                                                                              "weight_dtype": "default"})),
               "flux1-dev.safetensors", create_time=True),
        Prompt("not-a-checkpoint", failing_ckpt, FAKE_CHECKPOINT, workflow_id=wf, create_time=True),
        Prompt("node-error", failing_node, "flux1-dev.safetensors"),
        Prompt("two-models", with_nodes(blur_chain(color + 11), n10=sdxl,
                                        n11=("CheckpointLoaderSimple", {"ckpt_name": "sd_xl_refiner_1.0.safetensors"}),
                                        n12=("LoraLoaderModelOnly", {"model": ["11", 0], "lora_name": "film-grain.safetensors",
                                                                     "strength_model": 0.5})),
               "sd_xl_base_1.0.safetensors",
               {"models": "sd_xl_base_1.0.safetensors, sd_xl_refiner_1.0.safetensors", "loras": "film-grain.safetensors"},
               create_time=True),
        Prompt("unclip", with_nodes(blur_chain(color + 12), n30=("unCLIPCheckpointLoader", {"ckpt_name": "sd21-unclip-h.ckpt"})),
               "sd21-unclip-h.ckpt"),
    ]
    # The last single again: every node is in ComfyUI's output cache, so it
    # finishes in milliseconds, between two polls.
    cached = Prompt("cached-rerun", singles[-1].graph, singles[-1].model, workflow_id=wf, create_time=True)
    interrupted = Prompt("interrupted", with_nodes(blur_chain(color + 20, blurs=8, size=1024),
                                                   n40=("ImageOnlyCheckpointLoader", {"ckpt_name": "svd_xt.safetensors"})),
                         "svd_xt.safetensors", create_time=True)
    refused = Prompt("refused", {
        "10": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
        "11": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "12": {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["10", 2]}},
        "13": {"class_type": "PreviewImage", "inputs": {"images": ["12", 0]}},
    }, None)
    return before, burst, singles, cached, interrupted, refused


def submit(url: str, p: Prompt) -> None:
    extra: dict[str, Any] = {}
    if p.workflow_id is not None:
        extra["extra_pnginfo"] = {"workflow": ui_workflow(p.workflow_id)}
    if p.create_time:
        extra["create_time"] = int(time.time() * 1000)  # as newer builds set it at enqueue
    p.http_status, reply = call(url, "/prompt", {"prompt": p.graph, "client_id": "mdm-check-jobs", "extra_data": extra})
    if p.http_status == 200:
        p.prompt_id = reply["prompt_id"]


def wait_idle(url: str, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while get(url, "/prompt")["exec_info"]["queue_remaining"]:
        if time.monotonic() > deadline:
            raise SystemExit(f"ComfyUI still busy after {timeout_s:.0f} s")
        time.sleep(0.2)


def interrupt_when_running(url: str, prompt_id: str, after_s: float = 0.5) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if any(item[1] == prompt_id for item in get(url, "/queue")["queue_running"]):
            time.sleep(after_s)
            call(url, "/interrupt", {"prompt_id": prompt_id})
            return
        time.sleep(0.02)
    raise SystemExit("the prompt to interrupt never ran")


def seen_queued(m: Monitor, ids: set[str | None], timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """The monitor's queued jobs from ComfyUI's ``/queue`` once it lists
    any of ``ids`` (the collector reads it within a poll of the count
    changing)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        jobs = [q for q in m.jobs.queued() if q.service == "comfyui" and q.job_id in ids]
        if jobs:
            return [{"job_id": q.job_id, "state": getattr(q, "state", None), "model": q.model,
                     "workflow": q.workflow} for q in jobs]
        time.sleep(0.05)
    return []


# ---- the truth, and the comparison ------------------------------------------------


def truth_of(entry: dict[str, Any]) -> dict[str, Any]:
    """What ComfyUI's history entry says of a prompt."""
    stamps = {name: data.get("timestamp") for name, data in entry["status"]["messages"]}
    end_event = next(e for e in END_EVENTS if e in stamps)
    start, end = stamps["execution_start"], stamps[end_event]
    created = entry["prompt"][3].get("create_time")
    error = None
    if end_event == "execution_error":
        event = next(data for name, data in entry["status"]["messages"] if name == "execution_error")
        error = event["exception_type"].rsplit(".", 1)[-1]
    elif end_event == "execution_interrupted":
        error = "interrupted"
    return {"end_event": end_event, "status_str": entry["status"]["status_str"], "processing_ms": end - start,
            "queue_wait_ms": None if created is None else start - created, "ok": end_event == "execution_success",
            "error": error}


def compare(p: Prompt, truth: dict[str, Any], row: JobRow | None) -> dict[str, Any]:
    out: dict[str, Any] = {"label": p.label, "prompt_id": p.prompt_id, "truth": truth, "problems": []}
    if row is None:
        out["problems"].append("no job")
        return out
    out["job"] = {"model": row.model, "workflow": row.workflow, "tags": dict(row.tags), "ok": row.ok, "error": row.error,
                  "processing_ms": row.processing_ms, "queue_wait_ms": row.queue_wait_ms}
    diffs = {"processing_ms": abs(row.processing_ms - truth["processing_ms"])}
    if (row.queue_wait_ms is None) != (truth["queue_wait_ms"] is None):
        out["problems"].append(f"queue wait {row.queue_wait_ms} vs {truth['queue_wait_ms']}")
    elif row.queue_wait_ms is not None:
        diffs["queue_wait_ms"] = abs(row.queue_wait_ms - truth["queue_wait_ms"])
    out["abs_diff_ms"] = diffs
    for name, diff in diffs.items():
        if diff != 0:
            out["problems"].append(f"{name} differs by {diff} ms")
    for name, want, got in (("ok", truth["ok"], row.ok), ("error", truth["error"], row.error),
                            ("model", p.model, row.model), ("tags", p.tags, dict(row.tags))):
        if want != got:
            out["problems"].append(f"{name}: {got!r}, expected {want!r}")
    if p.workflow_id is not None and row.workflow != p.workflow_id:
        out["problems"].append(f"workflow {row.workflow!r}, expected the frontend's id {p.workflow_id!r}")
    if p.workflow_id is None and not (row.workflow or "").startswith(comfyui.GRAPH_LABEL_PREFIX):
        out["problems"].append(f"workflow {row.workflow!r}, expected a {comfyui.GRAPH_LABEL_PREFIX}... label")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8188")
    ap.add_argument("--models-dir", default="/tmp/comfyui/models", help="ComfyUI's models folder (for the failing checkpoint)")
    ap.add_argument("--color", type=int, default=int(time.time()) % 1_000_000, help="first EmptyImage colour")
    args = ap.parse_args()
    url = args.url
    version = get(url, "/system_stats")["system"].get("comfyui_version")
    fake = Path(args.models_dir) / "checkpoints" / FAKE_CHECKPOINT
    fake.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a safetensors header")
    before, burst, singles, cached, interrupted, refused = prompts(args.color)
    started = time.time()
    try:
        call(url, "/history", {"clear": True})
        submit(url, before)
        wait_idle(url)
        with Monitor() as m:
            cfg = BackendConfig("comfyui", "comfyui", url, interval_s=1.0, read_timeout_s=30.0)
            with Collectors(m, [cfg]) as collectors:
                time.sleep(2.5)  # detected, and its first read of history done
                for p in [*burst, interrupted]:  # the queue fills
                    submit(url, p)
                queued = seen_queued(m, {p.prompt_id for p in [*burst, interrupted]})
                assert interrupted.prompt_id is not None
                interrupt_when_running(url, interrupted.prompt_id)
                wait_idle(url)
                time.sleep(1.5)
                for p in singles:  # one at a time, apart
                    submit(url, p)
                    wait_idle(url)
                    time.sleep(1.3)
                submit(url, refused)
                submit(url, cached)
                wait_idle(url)
                time.sleep(comfyui.HISTORY_SWEEP_S + 2.5)  # one sweep for what the count never showed
                status = collectors.status()["comfyui"]
                jobs = [r for r in m.jobs.recent(1000) if r.source == "backend"]
                totals = m.service("comfyui").totals()
                requests = totals["count"]
    finally:
        fake.unlink(missing_ok=True)
    history = get(url, "/history?max_items=10000")

    sent = [before, *burst, interrupted, *singles, cached]
    rows = {r.job_id: r for r in jobs}
    problems: list[str] = []
    if refused.http_status != 400 or refused.prompt_id is not None:
        problems.append(f"the refused prompt got HTTP {refused.http_status}")
    if any(p.http_status != 200 for p in sent):
        problems.append("a prompt was not accepted: " + ", ".join(f"{p.label} {p.http_status}" for p in sent if p.http_status != 200))
    if set(history) != {p.prompt_id for p in sent}:
        problems.append(f"history holds {len(history)} prompts, {len(sent)} were accepted")
    if before.prompt_id in rows:
        problems.append("the prompt that finished before the collector started became a job")
    results = []
    for p in sent[1:]:
        r = compare(p, truth_of(history[p.prompt_id]), rows.get(p.prompt_id))
        problems.extend(f"{p.label}: {x}" for x in r["problems"])
        results.append(r)
    models = {p.prompt_id: p.model for p in sent}
    if not queued:
        problems.append("the queued prompts never showed as queued jobs")
    problems.extend(f"queued {q['job_id']}: model {q['model']!r}, expected {models[q['job_id']]!r}"
                    for q in queued if q["model"] != models[q["job_id"]])
    if len(jobs) != len(sent) - 1:
        problems.append(f"{len(jobs)} jobs, expected {len(sent) - 1}")
    diffs = [d for r in results for d in r.get("abs_diff_ms", {}).values()]
    max_diff = max(diffs) if diffs else None
    outcomes = {e: sum(1 for r in results if r["truth"]["end_event"] == e) for e in END_EVENTS}
    print(f"ComfyUI {version}: {len(sent)} prompts accepted, 1 refused (HTTP {refused.http_status}); "
          f"{len(jobs)} jobs recorded for the {len(sent) - 1} that finished after the collector started "
          f"({outcomes['execution_success']} success, {outcomes['execution_error']} error, "
          f"{outcomes['execution_interrupted']} interrupted); max |difference| {max_diff} ms over {len(diffs)} "
          f"processing times and queue waits; processing_count {totals['processing_count']} (with the earlier prompt); "
          f"{len(queued)} of the burst seen as queued jobs")
    for r in results:
        job = r.get("job", {})
        print(f"  {r['label']:<17} {r['truth']['end_event']:<22} {r['truth']['processing_ms']:>6} ms "
              f"wait {r['truth']['queue_wait_ms']!s:>6}  model {job.get('model')!s:<32} "
              f"{'ok' if not r['problems'] else '; '.join(r['problems'])}")
    for x in problems:
        print("PROBLEM:", x)
    out = ROOT / "benchmarks" / "reference" / f"comfyui-jobs-{datetime.date.today().isoformat()}.json"
    out.write_text(json.dumps({
        "comfyui_version": version, "url": url, "started_at": started, "poll_interval_s": 1.0,
        "sweep_s": comfyui.HISTORY_SWEEP_S, "prompts_accepted": len(sent), "prompts_refused": 1,
        "refused_http_status": refused.http_status, "jobs_expected": len(sent) - 1, "jobs_recorded": len(jobs),
        "outcomes": outcomes, "max_abs_diff_ms": max_diff, "compared_values": len(diffs),
        "processing_count": totals["processing_count"], "collector_requests": requests,
        "collector_state": status.state, "queued_jobs_seen": queued, "results": results, "problems": problems,
        "equal": not problems,
    }, indent=1) + "\n")
    print(f"written to {out.relative_to(ROOT)}: {'equal' if not problems else 'DIFFERENT'}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
