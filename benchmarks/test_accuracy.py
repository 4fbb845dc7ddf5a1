"""Quantile accuracy (not timed) on the four reference sets, and each
sketch's serialized size, next to every peer."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from bench_data import DATASETS, F64, QNAMES, QS, exact_linear, make_datasets, rank_error, rel_error
from bench_load import START
from bench_peers import PEERS, Peer
from bench_report import Report
from movie_director_metrics import Monitor, TDigest

VALUE = "accuracy: worst |relative value error| vs numpy.percentile(linear), 4 sets"
RANK = "accuracy: worst rank error (percentage points of rank), 4 sets"
SIZE = "serialized size after the lognormal set"
VALUE_NOTE = "bimodal p90 excluded: it sits in the gap between the modes (any rank error is a huge value error there)"

Estimator = Callable[[F64], tuple[list[float | None], Any]]  # values -> (quantiles at QS, sketch)


class Sets:
    """Data sets and their sorted copies per size, built once per module."""

    def __init__(self) -> None:
        self._cache: dict[int, dict[str, tuple[F64, F64, list[float]]]] = {}

    def get(self, n: int) -> dict[str, tuple[F64, F64, list[float]]]:
        if n not in self._cache:
            self._cache[n] = {}
            for name, arr in make_datasets(n).items():
                s = np.sort(arr)
                self._cache[n][name] = (arr, s, exact_linear(s))
        return self._cache[n]


@pytest.fixture(scope="module")
def sets() -> Sets:
    return Sets()


def _errors(est: list[float | None], sorted_arr: F64, exact: list[float], dname: str) -> tuple[dict[str, float], dict[str, float]]:
    val: dict[str, float] = {}
    rank: dict[str, float] = {}
    for q, qn, e, x in zip(QS, QNAMES, est, exact):
        if e is None:
            continue
        rank[qn] = rank_error(sorted_arr, e, q)
        if not (dname == "bimodal" and qn == "p90"):
            val[qn] = rel_error(e, x)
    return val, rank


def evaluate(report: Report, label: str, estimate: Estimator, data: dict[str, tuple[F64, F64, list[float]]],
             ours: bool = False, size_of: Callable[[Any], int | None] | None = None, size_note: str = "") -> float:
    """Adds the value-error, rank-error and size rows; returns the worst value error."""
    worst_val: dict[str, float] = {}
    worst_rank: dict[str, float] = {}
    detail: dict[str, Any] = {}
    n = 0
    for dname in DATASETS:
        arr, s, exact = data[dname]
        est, sketch = estimate(arr)
        n = arr.size
        val, rank = _errors(est, s, exact, dname)
        detail[dname] = {"estimates": est, "exact": exact, "rel": val, "rank": rank}
        for qn, v in val.items():
            worst_val[qn] = max(worst_val.get(qn, 0.0), abs(v))
        for qn, v in rank.items():
            worst_rank[qn] = max(worst_rank.get(qn, 0.0), v)
        if dname == "lognormal" and size_of is not None:
            report.add(SIZE, label, size_of(sketch), "B", ours=ours, note=size_note)
    wv = max(worst_val.values()) if worst_val else math.nan
    per_q = " ".join(f"{qn} {100 * worst_val[qn]:.3f}%" for qn in QNAMES if qn in worst_val)
    report.add(VALUE, label, 100 * wv, "%", ours=ours, note=f"n={n:,}; {per_q}", extra=detail)
    per_q = " ".join(f"{qn} {100 * worst_rank[qn]:.4f}" for qn in QNAMES if qn in worst_rank)
    report.add(RANK, label, 100 * max(worst_rank.values()), "pp", ours=ours, note=per_q)
    return wv


def _tdigest(stream: bool) -> Estimator:
    def run(arr: F64) -> tuple[list[float | None], Any]:
        t = TDigest()
        if stream:
            up = t.update
            for v in arr.tolist():
                up(v)
        else:
            t.update_many(arr)
        return [t.quantile(q) for q in QS], t
    return run


@pytest.mark.parametrize("stream", [False, True], ids=["update_many", "stream"])
def test_tdigest(stream: bool, report: Report, sizes: dict[str, Any], mode: str, sets: Sets) -> None:
    n = sizes["stream_n"] if stream else sizes["n"]
    label = f"ours: TDigest() {'update() stream' if stream else 'update_many'}"
    wv = evaluate(report, label, _tdigest(stream), sets.get(n), ours=not stream,
                  size_of=lambda t: len(t.to_bytes()), size_note="len(to_bytes())")
    size = report.value(SIZE, label)
    assert size is not None
    met_v = report.target(VALUE, f"{label}: worst value error", 100 * wv, "%", "<= 0.5 %", wv <= 0.005,
                          note=VALUE_NOTE)
    met_s = report.target(SIZE, f"{label}: size", size, "B", "<= 4 KiB", size <= 4096)
    report.enforce(met_v and met_s, f"{label}: worst {100 * wv:.3f}% at {size} B (target <= 0.5 % at <= 4 KiB)")


def _stats_24h(data: dict[str, tuple[F64, F64, list[float]]], minutes: int) -> dict[str, Any]:
    """Spreads each set over ``minutes`` simulated minutes (one record_many per
    minute), reads stats(24h) and compares on exactly the covered values."""
    out = {}
    for dname in DATASETS:
        arr = data[dname][0]
        m = Monitor(manual_clock=True, start_time=START)
        h = m.service("s")
        chunks = np.array_split(arr, minutes)
        stamps = []
        for c in chunks:
            stamps.append(m.now())
            h.record_many(np.ascontiguousarray(c))
            m.advance(60)
        st = m.stats("s", "24h")
        covered = np.concatenate([c for c, t in zip(chunks, stamps) if t >= st.start])
        m.close()
        out[dname] = (st, covered)
    return out


def test_stats_24h(report: Report, sizes: dict[str, Any], sets: Sets) -> None:
    minutes = 1440 if sizes["hours"] >= 24 else 60
    runs = _stats_24h(sets.get(sizes["n"]), minutes)
    counts = {d: (st.count, c.size) for d, (st, c) in runs.items()}
    assert all(a == b for a, b in counts.values()), f"stats count != covered values: {counts}"

    def estimate(arr: F64) -> tuple[list[float | None], Any]:
        st, _ = next(v for v in runs.values() if v[1] is arr)
        return [st.p50_ms, st.p90_ms, st.p95_ms, st.p99_ms, None], st

    data = {}
    for d, (_, covered) in runs.items():
        s = np.sort(covered)
        data[d] = (covered, s, exact_linear(s))
    label = f"ours: stats('24h') after tier roll-ups ({minutes} record_many, 1/min)"
    evaluate(report, label, estimate, data)
    worst = max(abs(v) for d in DATASETS for qn, v in
                _errors(estimate(data[d][0])[0], data[d][1], data[d][2], d)[0].items() if qn in ("p95", "p99"))
    met = report.target(VALUE, "stats('24h') worst p95/p99 value error", 100 * worst, "%", "<= 1 %", worst <= 0.01,
                        note="p99.9 is not a stats() field")
    report.enforce(met, f"stats('24h') p95/p99 worst error {100 * worst:.3f}% (target <= 1 %)")


def _peer_estimator(peer: Peer, mod: Any, batch: bool) -> Estimator:
    def run(arr: F64) -> tuple[list[float | None], Any]:
        obj = peer.new(mod)
        if batch:
            assert peer.batch is not None
            peer.batch(obj, arr)
        else:
            ins = peer.insert(obj)
            for v in peer.prep(arr.tolist()):
                ins(v)
        return peer.quantiles(mod, obj), obj
    return run


PEER_RUNS = [(p.name, False) for p in PEERS] + [(p.name, True) for p in PEERS if p.batch and p.module != "tdigest"]


@pytest.mark.parametrize("peer,batch", PEER_RUNS, ids=[f"{n}-{'batch' if b else 'stream'}" for n, b in PEER_RUNS])
def test_peer(peer: str, batch: bool, report: Report, sizes: dict[str, Any], sets: Sets) -> None:
    p = next(x for x in PEERS if x.name == peer)
    mod = report.need(VALUE, p, RANK)
    n = sizes["n"]
    if not batch and p.stream_cap:
        n = min(n, p.stream_cap // (10 if sizes["n"] < 1_000_000 else 1))
    label = f"{p.name} {'batch' if batch else 'stream'}"
    evaluate(report, label, _peer_estimator(p, mod, batch), sets.get(n),
             size_of=None if batch else (lambda o: p.serialized(mod, o)), size_note=p.note)
