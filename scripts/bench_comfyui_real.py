"""CPU per ComfyUI poll cycle against a real ComfyUI, as its history grows
from 1 to 64 finished prompts of a 5-node and of a 60-node graph.

Needs a ComfyUI on loopback (``../shared/tools/comfyui/start.sh`` starts a
real one on the CPU at 127.0.0.1:8188); not part of ``make test`` (CI has
no ComfyUI).  The prompts need no model files: EmptyImage 64x64 ->
ImageBlur x (G-2) -> PreviewImage, each with its own colour so that
ComfyUI's output cache runs every one.  **This clears the server's
history** (``POST /history {"clear": true}``) before each graph size.

Side by side in one run, as in ``benchmarks/test_poll_cost.py``: the
collector as it is, and the same collector made to read the newest 64
finished prompts every cycle (what it did before).  Writes
``benchmarks/reference/comfyui-real-<date>.json`` and prints a table.

    .venv/bin/python scripts/bench_comfyui_real.py [--url http://127.0.0.1:8188] [--cycles 40]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_comfy_standin import graph  # noqa: E402
from bench_poll import EveryCycleComfyUI, cycle_cpu_ms  # noqa: E402

from movie_director_metrics import Monitor  # noqa: E402
from movie_director_metrics.collectors import BackendConfig, comfyui  # noqa: E402
from movie_director_metrics.collectors.comfyui import ComfyUI  # noqa: E402


def call(url: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method="GET" if data is None else "POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        raw = r.read()
    return json.loads(raw) if raw else None


def tiny_graph(nodes: int, color: int) -> dict[str, Any]:
    g = graph(nodes)
    g["1"]["inputs"].update(width=64, height=64, color=color)
    for node in g.values():
        if node["class_type"] == "ImageBlur":
            node["inputs"].update(blur_radius=1, sigma=0.5)
    return g


def fill(url: str, nodes: int, total: int, color0: int) -> None:
    """Submits prompts until ``total`` have finished in history."""
    have = len(call(url, "/history?max_items=10000"))
    for i in range(total - have):
        call(url, "/prompt", {"prompt": tiny_graph(nodes, color0 + i), "client_id": "mdm-bench"})
    deadline = time.monotonic() + 600
    while len(call(url, "/history?max_items=10000")) < total:
        if time.monotonic() > deadline:
            raise SystemExit(f"ComfyUI did not finish {total} prompts in 600 s")
        time.sleep(0.2)


def measure(url: str, cycles: int) -> dict[str, float]:
    out: dict[str, float] = {}
    with Monitor() as m:
        backends = {label: cls(BackendConfig(label, "comfyui", url, read_timeout_s=30.0), m.service(label))
                    for label, cls in (("ours", ComfyUI), ("every", EveryCycleComfyUI))}
        for b in backends.values():
            cycle_cpu_ms(b)
            cycle_cpu_ms(b)
        samples: dict[str, list[float]] = {k: [] for k in backends}
        for _ in range(cycles):  # alternating, so drift falls on both alike
            for k, b in backends.items():
                samples[k].append(cycle_cpu_ms(b))
        saved = comfyui.HISTORY_SWEEP_S
        comfyui.HISTORY_SWEEP_S = 0.0
        try:
            sweep = statistics.median(cycle_cpu_ms(backends["ours"]) for _ in range(max(3, cycles // 4)))
        finally:
            comfyui.HISTORY_SWEEP_S = saved
        out["ours"] = statistics.median(samples["ours"])
        out["every"] = statistics.median(samples["every"])
        out["sweep"] = sweep
        out["amortized"] = out["ours"] + (sweep - out["ours"]) / saved
        out["history_bytes"] = float(len(json.dumps(call(url, "/history?max_items=64"))))
    return out


def run_ms(entry: dict[str, Any]) -> int | None:
    stamps = {name: data.get("timestamp") for name, data in entry["status"]["messages"]}
    end = next((stamps[e] for e in ("execution_success", "execution_error", "execution_interrupted") if e in stamps), None)
    return None if end is None or "execution_start" not in stamps else end - stamps["execution_start"]


def check_nothing_missed(url: str, color0: int) -> dict[str, Any]:
    """The collector polling at 1 Hz (its worker thread, as in Blender)
    while prompts are submitted in bursts, one at a time, and as cached
    re-runs (finished in ms, between two polls): afterwards the processing
    times it recorded must be exactly those of ComfyUI's own history."""
    from movie_director_metrics.collectors.scheduler import Collectors

    call(url, "/history", {"clear": True})
    with Monitor() as m:
        cfg = BackendConfig("comfyui", "comfyui", url, interval_s=1.0, read_timeout_s=30.0)
        with Collectors(m, [cfg]):
            time.sleep(1.5)
            for i in range(6):  # a burst: the queue fills
                call(url, "/prompt", {"prompt": tiny_graph(60, color0 + i), "client_id": "mdm-check"})
            time.sleep(4.0)
            for i in range(3):  # one at a time, apart
                call(url, "/prompt", {"prompt": tiny_graph(5, color0 + 10 + i), "client_id": "mdm-check"})
                time.sleep(1.3)
            for i in range(3):  # cached re-runs of the burst's prompts
                call(url, "/prompt", {"prompt": tiny_graph(60, color0 + i), "client_id": "mdm-check"})
                time.sleep(0.3)
            while call(url, "/prompt")["exec_info"]["queue_remaining"]:
                time.sleep(0.2)
            time.sleep(comfyui.HISTORY_SWEEP_S + 2.0)  # one sweep for what the count never showed
            totals = m.service("comfyui").totals()
    history = call(url, "/history?max_items=10000")
    truth = [ms for ms in (run_ms(e) for e in history.values()) if ms is not None]
    ok = totals["processing_count"] == len(truth) and abs(totals["processing_sum_ms"] - sum(truth)) < 1e-6
    print(f"nothing missed: {len(truth)} prompts in ComfyUI's history, sum {sum(truth)} ms; the collector recorded "
          f"{totals['processing_count']}, sum {totals['processing_sum_ms']:.0f} ms: {'equal' if ok else 'DIFFERENT'}")
    return {"history_prompts": len(truth), "history_sum_ms": sum(truth), "recorded": totals["processing_count"],
            "recorded_sum_ms": totals["processing_sum_ms"], "equal": ok}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8188")
    ap.add_argument("--cycles", type=int, default=40)
    args = ap.parse_args()
    stats = call(args.url, "/system_stats")
    version = stats["system"].get("comfyui_version")
    results = []
    color = 1000
    for nodes in (5, 60):
        call(args.url, "/history", {"clear": True})
        for entries in (1, 64):
            fill(args.url, nodes, entries, color)
            color += 100
            r = measure(args.url, args.cycles)
            results.append(dict(nodes=nodes, entries=entries, **r))
            print(f"{entries:>3} entries x {nodes:>2} nodes: ours {r['amortized']:.3f} ms/cycle "
                  f"(steady {r['ours']:.3f}, sweep {r['sweep']:.3f}); history every cycle {r['every']:.3f} ms; "
                  f"/history?max_items=64 = {r['history_bytes'] / 1024:.0f} KiB", flush=True)
    small = next(r for r in results if (r["entries"], r["nodes"]) == (1, 5))
    large = next(r for r in results if (r["entries"], r["nodes"]) == (64, 60))
    growth = large["amortized"] / small["amortized"]
    before = large["every"] / small["every"]
    print(f"ours: 64 x 60 / 1 x 5 = {growth:.2f}x (flat: <= 1.25x: {'met' if growth <= 1.25 else 'MISSED'}); "
          f"before: {before:.1f}x; at 64 x 60 ours is {large['every'] / large['amortized']:.1f}x cheaper")
    check = check_nothing_missed(args.url, color)
    out = ROOT / "benchmarks" / "reference" / f"comfyui-real-{datetime.date.today().isoformat()}.json"
    out.write_text(json.dumps({"comfyui_version": version, "url": args.url, "cycles": args.cycles,
                               "sweep_s": comfyui.HISTORY_SWEEP_S, "results": results,
                               "growth_64x60_over_1x5": growth, "before_growth": before,
                               "nothing_missed": check}, indent=1) + "\n")
    print(f"written to {out.relative_to(ROOT)}")
    return 0 if growth <= 1.25 and check["equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
