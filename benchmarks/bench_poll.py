"""What the poll-cost benchmarks share: one collector cycle timed in CPU,
and the ComfyUI collector as it was before it read history only when a
prompt finished (the side-by-side baseline)."""

from __future__ import annotations

import time

from movie_director_metrics.collectors.comfyui import ComfyUI


class EveryCycleComfyUI(ComfyUI):
    """The collector before: the newest HISTORY_ITEMS prompts every cycle.
    (Sets the flag the collector keeps for its first read after detection,
    the one read that still covers HISTORY_ITEMS.)"""

    def collect(self) -> None:
        self._first_read = True
        super().collect()


def cycle_cpu_ms(b: ComfyUI) -> float:
    """One worker cycle (probe, detect once, collect); returns the calling
    thread's CPU time in ms (``time.thread_time``: the server's work, in
    another process, is not counted)."""
    t0 = time.thread_time()
    b.probe()
    if not b.detected:
        b.detect()
        b.detected = True
    b.collect()
    return (time.thread_time() - t0) * 1e3
