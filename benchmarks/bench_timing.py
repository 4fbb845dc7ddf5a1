"""Per-call timing of tight loops through pytest-benchmark."""

from __future__ import annotations

import gc
import statistics
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


def rounds_s(benchmark: Any, fn: Callable[..., Any], rounds: int, args: tuple[Any, ...] = (),
             setup: Callable[[], Any] | None = None) -> list[float]:
    """Seconds of each of ``rounds`` calls ``fn(*args)`` (or ``fn(setup())``,
    setup untimed) through pytest-benchmark's pedantic mode; with
    ``--benchmark-disable`` the same rounds are timed here instead."""
    if getattr(benchmark, "disabled", False):
        out = []
        for k in range(rounds):
            a = args if setup is None else (setup(),)
            t0 = time.perf_counter()
            if k == 0:  # a disabled fixture just calls fn once; using it keeps pytest-benchmark quiet
                benchmark.pedantic(fn, args=a, rounds=1, iterations=1)
            else:
                fn(*a)
            out.append(time.perf_counter() - t0)
        return out
    if setup is None:
        benchmark.pedantic(fn, args=args, rounds=rounds, iterations=1, warmup_rounds=1)
    else:
        benchmark.pedantic(fn, setup=lambda: ((setup(),), {}), rounds=rounds, iterations=1)
    return list(benchmark.stats.stats.data)


def per_call_ns(benchmark: Any, fn: Callable[..., Any], values: Sequence[Any], rounds: int,
                loop: Callable[..., None] = call_loop) -> float:
    """Median ns per call over ``rounds`` rounds of ``len(values)`` calls each
    (gross: the loop overhead is not subtracted)."""
    times = rounds_s(benchmark, _gc_off(loop), rounds, args=(fn, values))
    return statistics.median(times) * 1e9 / len(values)


def median_s(benchmark: Any, fn: Callable[..., Any], rounds: int, setup: Callable[[], Any] | None = None) -> float:
    """Median seconds of one ``fn()`` (or ``fn(setup())``) call."""
    return statistics.median(rounds_s(benchmark, fn, rounds, setup=setup))
