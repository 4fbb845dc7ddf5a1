"""Per-call timing of tight loops through pytest-benchmark."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from typing import Any


def call_loop(fn: Callable[[Any], Any], values: Sequence[Any]) -> None:
    for v in values:
        fn(v)


def noarg_loop(fn: Callable[[], Any], values: Sequence[Any]) -> None:
    for _ in values:
        fn()


def empty_loop(_fn: Any, values: Sequence[Any]) -> None:
    for _ in values:
        pass


def _gc_off(loop: Callable[..., None]) -> Callable[..., None]:
    def run(fn: Any, values: Sequence[Any]) -> None:
        was = gc.isenabled()
        gc.disable()
        try:
            loop(fn, values)
        finally:
            if was:
                gc.enable()
    return run


def empty_loop_ns(values: Sequence[Any], repeats: int = 5) -> float:
    """Overhead of the bare for-loop per item (min of repeats)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        empty_loop(None, values)
        best = min(best, (time.perf_counter_ns() - t0) / len(values))
    return best


def per_call_ns(benchmark: Any, fn: Callable[..., Any], values: Sequence[Any], rounds: int,
                loop: Callable[..., None] = call_loop) -> float:
    """Median ns per call over ``rounds`` rounds of ``len(values)`` calls each
    (gross: the loop overhead is not subtracted)."""
    run = _gc_off(loop)
    benchmark.pedantic(run, args=(fn, values), rounds=rounds, iterations=1, warmup_rounds=1)
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable: time one round ourselves
        t0 = time.perf_counter_ns()
        run(fn, values)
        return (time.perf_counter_ns() - t0) / len(values)
    return float(stats.stats.median) * 1e9 / len(values)


def median_s(benchmark: Any, fn: Callable[[], Any], rounds: int, setup: Callable[[], Any] | None = None) -> float:
    """Median seconds of one ``fn()`` call."""
    if setup is None:
        benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)
    else:
        benchmark.pedantic(lambda *a: fn(*a), setup=lambda: ((setup(),), {}), rounds=rounds, iterations=1)
    stats = getattr(benchmark, "stats", None)
    if stats is None:
        t0 = time.perf_counter()
        fn(*(() if setup is None else (setup(),)))
        return time.perf_counter() - t0
    return float(stats.stats.median)
