"""Batch ingest throughput from a float64 array (values/s)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from bench_data import F64, SEED
from bench_peers import by_name
from bench_report import Report
from bench_timing import median_s
from movie_director_metrics import Monitor, TDigest

SECTION = "batch ingest (values/s from one float64 array)"
OURS = "ours: handle.record_many(arr)"
FD = "fastdigest(default=1000): batch_update(arr)"


@pytest.fixture(scope="module")
def arr(sizes: dict[str, Any]) -> F64:
    arr: F64 = np.random.default_rng(SEED).lognormal(np.log(200.0), 0.6, sizes["batch_n"])
    return arr


@pytest.fixture(scope="module")
def monitor() -> Iterator[Monitor]:
    m = Monitor(manual_clock=True, start_time=1_767_225_600.0)
    yield m
    m.close()


def _rate(benchmark: Any, report: Report, sizes: dict[str, Any], name: str, make: Callable[[], Any],
          fn: Callable[[Any, F64], Any], arr: F64, ours: bool = False, note: str = "") -> float:
    """A fresh sink per round (setup, untimed) so every round ingests into the same state."""
    s = median_s(benchmark, lambda sink: fn(sink, arr), sizes["rounds"], setup=make)
    rate = arr.size / s
    report.add(SECTION, name, rate, "values/s", ours=ours, note=note or f"n={arr.size:,}")
    return rate


def test_record_many(benchmark: Any, report: Report, sizes: dict[str, Any], arr: F64, monitor: Monitor) -> None:
    counter = iter(range(1 << 30))
    # one fresh service per round; all values land in the open second's bins
    _rate(benchmark, report, sizes, OURS, lambda: monitor.service(f"b{next(counter)}"),
          lambda h, a: h.record_many(a), arr, ours=True, note=f"n={arr.size:,}, one service, one second")


def test_tdigest_update_many(benchmark: Any, report: Report, sizes: dict[str, Any], arr: F64) -> None:
    _rate(benchmark, report, sizes, "ours: TDigest().update_many(arr)", TDigest, lambda t, a: t.update_many(a), arr)


def test_numpy_percentile(benchmark: Any, report: Report, sizes: dict[str, Any], arr: F64) -> None:
    _rate(benchmark, report, sizes, "numpy: np.percentile x5 (exact)", lambda: None,
          lambda _, a: np.percentile(a, [50, 90, 95, 99, 99.9]), arr, note="reference, keeps all values")


@pytest.mark.parametrize("peer", ["fastdigest(default=1000)", "fastdigest(max_centroids=100)",
                                  "pytdigest(compression=100)"])
def test_peer_batch(peer: str, benchmark: Any, report: Report, sizes: dict[str, Any], arr: F64) -> None:
    p = by_name(peer)
    mod = report.need(SECTION, p)
    assert p.batch is not None
    api = "batch_update(arr)" if p.module == "fastdigest" else "update(arr)"
    _rate(benchmark, report, sizes, f"{p.name}: {api}", lambda: p.new(mod), p.batch, arr)


def test_record_many_target(report: Report) -> None:
    ours, fd = report.value(SECTION, OURS), report.value(SECTION, FD)
    if ours is None or fd is None:
        pytest.skip("record_many or fastdigest batch_update not measured in this session")
    ratio = ours / fd
    met = ratio >= 3.0
    report.target(SECTION, "record_many / fastdigest batch_update", ratio, "x", ">= 3x", met,
                  note=f"{ours / 1e6:.1f} M/s vs {fd / 1e6:.1f} M/s")
    report.enforce(met, f"record_many is {ratio:.2f}x fastdigest batch_update (target >= 3x)")
