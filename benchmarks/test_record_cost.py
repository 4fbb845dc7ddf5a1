"""Single-call record cost from Python (ns/call, net of the bare loop)
against every peer's single-value insert."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from bench_data import SEED
from bench_peers import PEERS, by_name
from bench_report import Report
from bench_timing import empty_loop_ns, noarg_loop, per_call_ns
from movie_director_metrics import Monitor

SECTION = "record cost (ns/call from Python, net of loop overhead)"
OURS = "ours: handle.record(x)"


@pytest.fixture(scope="module")
def values(sizes: dict[str, Any]) -> list[float]:
    rng = np.random.default_rng(SEED)
    return [float(x) for x in rng.lognormal(np.log(200.0), 0.6, sizes["calls"])]


@pytest.fixture(scope="module")
def loop_ns(values: list[float], report: Report) -> float:
    ns = empty_loop_ns(values)
    report.add(SECTION, "bare for-loop overhead (subtracted)", ns, "ns")
    return ns


@pytest.fixture(scope="module")
def handle() -> Iterator[Any]:
    m = Monitor()
    yield m.service("bench")
    m.close()


def _measure(benchmark: Any, report: Report, sizes: dict[str, Any], loop_ns: float, name: str,
             fn: Callable[..., Any], values: list[Any], ours: bool = False, note: str = "",
             loop: Callable[..., None] | None = None) -> float:
    kw = {} if loop is None else {"loop": loop}
    ns = per_call_ns(benchmark, fn, values, sizes["rounds"], **kw) - loop_ns
    report.add(SECTION, name, ns, "ns", ours=ours, note=note or f"{len(values):,} calls/round")
    return ns


def _failure_loop(h: Any, values: list[float]) -> None:
    for v in values:
        h.record(v, ok=False, error="timeout")


def _queue_loop(h: Any, values: list[float]) -> None:
    for _ in values:
        h.set_queue(1, 2)


def _health_loop(h: Any, values: list[float]) -> None:
    for _ in values:
        h.health(True)


# name -> (pre-bound callable or None, loop); calls with fixed arguments are
# written out in the loop (attribute call at the call site, as in app code).
OUR_CALLS: dict[str, tuple[bool, Callable[..., None] | None]] = {
    OURS: (True, None),
    "ours: record(x, ok=False, error='timeout')": (False, _failure_loop),
    "ours: set_queue(1, 2)": (False, _queue_loop),
    "ours: health(True)": (False, _health_loop),
}


@pytest.mark.parametrize("name", list(OUR_CALLS))
def test_ours(name: str, benchmark: Any, report: Report, sizes: dict[str, Any], loop_ns: float, handle: Any,
              values: list[float]) -> None:
    bound, loop = OUR_CALLS[name]
    fn = handle.record if bound else handle
    note = "pre-bound method" if bound else "h.method(...) written in the loop (attribute call)"
    _measure(benchmark, report, sizes, loop_ns, name, fn, values, ours=name == OURS, note=note, loop=loop)


@pytest.mark.parametrize("peer", [p.name for p in PEERS])
def test_peer_insert(peer: str, benchmark: Any, report: Report, sizes: dict[str, Any], loop_ns: float,
                     values: list[float]) -> None:
    p = by_name(peer)
    mod = report.need(SECTION, p)
    n = {"tdigest": sizes["slow_calls"], "pytdigest": sizes["slow_calls"] * 10}.get(p.module or "", len(values))
    vals = p.prep(values[:n])
    conv = {"hdrh.histogram": "; values pre-converted to int us", "prometheus_client": "; values in s"}
    _measure(benchmark, report, sizes, loop_ns, f"{p.name}: single insert", p.insert(p.new(mod)), vals,
             note=f"pre-bound; {len(vals):,} calls/round" + conv.get(p.module or "", ""))


@pytest.mark.parametrize("kind", ["Counter.inc()", "Gauge.set(v)"])
def test_prometheus_counter_gauge(kind: str, benchmark: Any, report: Report, sizes: dict[str, Any], loop_ns: float,
                                  values: list[float]) -> None:
    prom = by_name("prometheus Histogram(default buckets)")
    mod = report.need(SECTION, prom)
    reg = mod.CollectorRegistry()
    if kind == "Counter.inc()":
        fn, loop, note = mod.Counter("c_total", "c", registry=reg).inc, noarg_loop, "peer of ok/error counts"
    else:
        fn, loop, note = mod.Gauge("g", "g", registry=reg).set, None, "peer of set_queue"
    _measure(benchmark, report, sizes, loop_ns, f"prometheus {kind}", fn, values, note=note, loop=loop)


@pytest.mark.parametrize("peer,target", [("fastdigest(default=1000)", 0.5),
                                         ("prometheus Histogram(default buckets)", 1 / 15)])
def test_record_ratio_target(peer: str, target: float, report: Report) -> None:
    """Checks ratios of the figures measured above in this same session."""
    ours = report.value(SECTION, OURS)
    theirs = report.value(SECTION, f"{peer}: single insert")
    if ours is None or theirs is None:
        pytest.skip("ours or the peer was not measured in this session (missing peer or deselected)")
    ratio = ours / theirs
    met = ratio <= target
    report.target(SECTION, f"record / {peer} insert", ratio, "x", f"<= {target:.3g}x", met,
                  note=f"{ours:.1f} ns vs {theirs:.1f} ns")
    report.enforce(met, f"record is {ratio:.3f}x {peer} insert (target <= {target:.3g}x)")
