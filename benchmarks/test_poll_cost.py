"""What one ComfyUI poll cycle costs the host, against history size and
workflow size.

A ComfyUI stand-in (``bench_comfy_standin``, another process) serves
histories of 1, 16 and 64 finished prompts of a 5-node and a 60-node graph
(entries shaped like the one recorded from a real ComfyUI).  One cycle is
what a collector worker runs each interval: ``probe()``, then
``collect()``.  Its CPU is the calling thread's CPU time
(``time.thread_time``), so the server's own work is not counted.

Side by side in one run: the collector as it is, and the same collector
made to read the newest ``HISTORY_ITEMS`` finished prompts every cycle
(what it did before it read history only when a prompt finished), whose
cost grows with both sizes.  Ours is reported steady (nothing finished),
amortized at 1 Hz (plus one read of the newest entry every
``HISTORY_SWEEP_S``), and for the cycle in which one prompt finished.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bench_poll import EveryCycleComfyUI, cycle_cpu_ms
from bench_report import Report
from movie_director_metrics import Monitor
from movie_director_metrics.collectors import BackendConfig, comfyui
from movie_director_metrics.collectors.comfyui import HISTORY_ITEMS, ComfyUI

SECTION = "ComfyUI poll cycle: CPU vs history size and graph size (1 Hz)"
HISTORIES = (1, 16, 64)
GRAPHS = (5, 60)
#: CPU per cycle at the largest history and graph over that at the smallest
#: still called flat (the rest is this shared box's noise).
FLAT_RATIO = 1.25


def _finish(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(url + "/finish", data=b"{}", method="POST"), timeout=5).read()


def test_poll_cost_is_flat_in_history_and_graph_size(report: Report, sizes: dict[str, Any],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cycles = max(3, sizes["repeats"])
    here = Path(__file__).resolve().parent
    server = subprocess.Popen([sys.executable, str(here / "bench_comfy_standin.py"),
                               ",".join(map(str, HISTORIES)), ",".join(map(str, GRAPHS))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    results: dict[tuple[int, int], dict[str, float]] = {(h, g): {} for h in HISTORIES for g in GRAPHS}
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        monkeypatch.setattr(comfyui, "HISTORY_SWEEP_S", 3600.0)
        with Monitor() as m:
            backends: dict[tuple[str, int, int], ComfyUI] = {}
            for (h, g), row in results.items():
                for label, cls in (("ours", ComfyUI), ("every", EveryCycleComfyUI)):
                    cfg = BackendConfig(f"{label}-{h}-{g}", "comfyui", f"http://127.0.0.1:{port}/h{h}g{g}",
                                        read_timeout_s=5.0)
                    b = backends[(label, h, g)] = cls(cfg, m.service(cfg.name))
                    row[f"{label} first"] = cycle_cpu_ms(b)  # detect + the first read of HISTORY_ITEMS
                    cycle_cpu_ms(b)
            # Round-robin over the sizes, so that drift on this shared box
            # falls on every size alike rather than on whichever ran last.
            samples: dict[tuple[str, int, int], list[float]] = {k: [] for k in backends}
            for _ in range(cycles):
                for key, b in backends.items():
                    samples[key].append(cycle_cpu_ms(b))
            monkeypatch.setattr(comfyui, "HISTORY_SWEEP_S", 0.0)
            sweeps: dict[tuple[int, int], list[float]] = {k: [] for k in results}
            for _ in range(max(3, cycles // 4)):
                for h, g in results:
                    sweeps[(h, g)].append(cycle_cpu_ms(backends[("ours", h, g)]))
            monkeypatch.setattr(comfyui, "HISTORY_SWEEP_S", 3600.0)
            finished: dict[tuple[int, int], list[float]] = {k: [] for k in results}
            for _ in range(max(3, cycles // 4)):
                for h, g in results:
                    b = backends[("ours", h, g)]
                    _finish(b.config.url)
                    cycle_cpu_ms(b)  # the count rose to 1
                    _finish(b.config.url)  # ... and fell back to 0: one entry landed
                    finished[(h, g)].append(cycle_cpu_ms(b))
            for (h, g), row in results.items():
                recorded = m.service(f"ours-{h}-{g}").totals()["processing_count"]
                assert recorded == min(h, HISTORY_ITEMS) + len(finished[(h, g)]), (h, g, recorded)
                row["ours"] = statistics.median(samples[("ours", h, g)])
                row["every"] = statistics.median(samples[("every", h, g)])
                row["sweep"] = statistics.median(sweeps[(h, g)])
                row["finished"] = statistics.median(finished[(h, g)])
                # At 1 Hz a sweep replaces one steady cycle in HISTORY_SWEEP_S.
                row["amortized"] = row["ours"] + (row["sweep"] - row["ours"]) / comfyui.HISTORY_SWEEP_S
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(timeout=30)

    for (h, g), row in results.items():
        report.add(SECTION, f"ours, {h} entries x {g} nodes", row["amortized"], "ms", ours=(h, g) == (64, 60),
                   note=f"steady {row['ours']:.3f} ms; sweep cycle {row['sweep']:.3f} ms; "
                        f"cycle with 1 prompt finished {row['finished']:.3f} ms; first cycle {row['ours first']:.2f} ms")
    for (h, g), row in results.items():
        report.add(SECTION, f"history every cycle, {h} entries x {g} nodes", row["every"], "ms",
                   note="the collector before: /history?max_items=64 each cycle")
    amortized = [row["amortized"] for row in results.values()]
    small, large = results[(HISTORIES[0], GRAPHS[0])]["amortized"], results[(HISTORIES[-1], GRAPHS[-1])]["amortized"]
    report.add(SECTION, "largest / smallest CPU per cycle over all sizes", max(amortized) / min(amortized), "x",
               note="noise on this shared box, where no size is systematically above another")
    growth = large / small
    met = report.target(SECTION, f"CPU per cycle, {HISTORIES[-1]} x {GRAPHS[-1]} / {HISTORIES[0]} x {GRAPHS[0]}",
                        growth, "x", f"<= {FLAT_RATIO} (flat)", growth <= FLAT_RATIO,
                        note=f"{cycles} cycles per size, round-robin; CPU of the polling thread only; "
                             f"before: {results[(HISTORIES[-1], GRAPHS[-1])]['every'] / results[(HISTORIES[0], GRAPHS[0])]['every']:.1f}x")
    report.enforce(met, f"poll cost grows {growth:.2f}x from the smallest to the largest history (target <= {FLAT_RATIO}x)")
