"""Quantile accuracy of ``TDigest`` and of ``Monitor.stats()`` against exact numpy.

The data sets are those of ``shared/bench/peers.py`` (``make_datasets``), with the
same seed, so the numbers here line up with the benchmark's accuracy table:

* ``lognormal``        lognormal(mean=log 200, sigma=0.6)
* ``bimodal``          90 % N(120, 15) + 10 % N(2500, 400), clipped at 1e-3, shuffled
* ``pareto``           (pareto(1.5) + 1) * 50
* ``lognormal-sorted`` the lognormal set sorted ascending (adversarial order)

The exact reference is ``numpy.percentile(x, 100 q, method="linear")``.

Why the bimodal p90 is checked by rank, not by value: exactly 90 % of the bimodal
values come from the low mode, so the linear p90 interpolates between the largest
low-mode value (~190 ms) and the smallest high-mode value (~750 ms), i.e. it lies
in the empty gap between the modes.  Every value in that gap has the same rank
(0.9), so a sketch that answers anything inside the gap is exact in rank, yet
its value can differ from numpy's interpolation point by hundreds of percent.
A relative *value* error there measures nothing, so we assert the rank error
(distance of q from the empirical-CDF interval of the estimate) instead.
"""

from __future__ import annotations

import functools
import math
import pickle

import numpy as np
import pytest

from movie_director_metrics import Monitor, TDigest

SEED = 20240607
START = 1_700_000_000.0

DATASET_NAMES = ("lognormal", "bimodal", "pareto", "lognormal-sorted")
TD_QS = (0.5, 0.9, 0.95, 0.99, 0.999)
STATS_QS = {"p50_ms": 0.5, "p90_ms": 0.9, "p95_ms": 0.95, "p99_ms": 0.99}

TD_MAX_REL_ERR = 0.005  # 0.5 %: the documented bound of the default compression
STATS_MAX_REL_ERR = 0.010  # 1.0 %: 0.39 % binning + digest error
MAX_RANK_ERR = 0.002  # 0.2 percentage points of rank (bimodal p90 only)


# --------------------------------------------------------------------------
# shared data
# --------------------------------------------------------------------------


@functools.cache
def make_datasets(n: int, seed: int = SEED) -> dict[str, np.ndarray]:
    """The four data sets of ``shared/bench/peers.py`` with ``n`` values each.

    Same generator, seed and draw order as the benchmark; the arrays are made
    read-only because they are cached and shared between tests.
    """
    rng = np.random.default_rng(seed)
    logn = rng.lognormal(mean=math.log(200.0), sigma=0.6, size=n)
    k_hi = int(round(0.10 * n))
    bim = np.concatenate([rng.normal(120.0, 15.0, n - k_hi), rng.normal(2500.0, 400.0, k_hi)])
    bim = np.clip(bim, 1e-3, None)
    rng.shuffle(bim)
    par = (rng.pareto(1.5, size=n) + 1.0) * 50.0
    out = {
        "lognormal": logn,
        "bimodal": bim,
        "pareto": par,
        "lognormal-sorted": np.sort(logn),
    }
    for arr in out.values():
        arr.setflags(write=False)
    return out


def exact_linear(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q * 100.0, method="linear"))


def rank_error(sorted_values: np.ndarray, estimate: float, q: float) -> float:
    """Distance of ``q`` from the empirical-CDF interval [lo, hi] of ``estimate``."""
    n = sorted_values.size
    lo = np.searchsorted(sorted_values, estimate, side="left") / n
    hi = np.searchsorted(sorted_values, estimate, side="right") / n
    if lo <= q <= hi:
        return 0.0
    return float(min(abs(lo - q), abs(hi - q)))


def is_gap_quantile(dataset: str, q: float) -> bool:
    """The bimodal p90 sits between the modes (see the module docstring)."""
    return dataset == "bimodal" and q == 0.9


def check_quantiles(
    dataset: str,
    values: np.ndarray,
    estimates: dict[float, float | None],
    max_rel_err: float,
) -> None:
    """Asserts every estimate against numpy; collects all failures first so a
    failing run shows the whole error table, not just the first miss."""
    sorted_values = np.sort(values)
    failures = []
    for q, est in estimates.items():
        assert est is not None, f"{dataset}: quantile {q} is None"
        if is_gap_quantile(dataset, q):
            err = rank_error(sorted_values, est, q)
            if err > MAX_RANK_ERR:
                failures.append(f"q={q}: rank error {err * 100:.3f} pp > {MAX_RANK_ERR * 100} pp (est {est})")
            continue
        exact = exact_linear(sorted_values, q)
        rel = abs(est - exact) / exact
        if rel > max_rel_err:
            failures.append(f"q={q}: est {est!r} vs exact {exact!r}: {rel * 100:.3f} % > {max_rel_err * 100} %")
    assert not failures, f"{dataset}: " + "; ".join(failures)


# --------------------------------------------------------------------------
# TDigest
# --------------------------------------------------------------------------


def check_digest_invariants(td: TDigest, values: np.ndarray) -> None:
    assert td.count == values.size
    assert len(td) == values.size
    assert td.min == values.min()
    assert td.max == values.max()
    assert td.quantile(0.0) == values.min()
    assert td.quantile(1.0) == values.max()
    assert len(td.to_bytes()) <= 4096


@pytest.mark.parametrize("dataset", DATASET_NAMES)
def test_tdigest_batch_1e6_within_half_percent(dataset: str) -> None:
    """Default ``TDigest`` fed 1e6 values through ``update_many`` meets the
    documented ≤ 0.5 % worst relative error at p50…p99.9 on every data set
    (sorted input included), keeps min/max/count exact and serializes to ≤ 4 KiB."""
    values = make_datasets(1_000_000)[dataset]
    td = TDigest()
    td.update_many(values)

    check_digest_invariants(td, values)
    check_quantiles(dataset, values, {q: td.quantile(q) for q in TD_QS}, TD_MAX_REL_ERR)

    # The serialized and pickled forms answer the same quantiles.  Centroid
    # means are stored as f32 when they fit (the "compact" format), so a
    # decoded digest agrees to f32 precision, and re-encoding it is lossless.
    blob = td.to_bytes()
    for clone in (TDigest.from_bytes(blob), pickle.loads(pickle.dumps(td))):
        assert clone.count == td.count
        assert clone.min == td.min and clone.max == td.max
        assert clone.to_bytes() == blob
        for q in TD_QS:
            assert clone.quantile(q) == pytest.approx(td.quantile(q), rel=1e-6)


def test_tdigest_streaming_lognormal_within_half_percent() -> None:
    """Feeding values one at a time through ``update`` (the streaming path)
    meets the same bound as the batch path (2e5 lognormal values; 1e6 single
    Python calls would only make the suite slow)."""
    values = make_datasets(200_000)["lognormal"]
    td = TDigest()
    update = td.update
    for v in values.tolist():
        update(v)

    check_digest_invariants(td, values)
    check_quantiles("lognormal", values, {q: td.quantile(q) for q in TD_QS}, TD_MAX_REL_ERR)


# --------------------------------------------------------------------------
# Monitor.stats()
# --------------------------------------------------------------------------


def covered(values_by_second: list[tuple[float, np.ndarray]], window_start: float) -> np.ndarray:
    """Values recorded at epoch seconds the window covers (``t >= s.start``)."""
    parts = [chunk for t, chunk in values_by_second if t >= window_start]
    return np.concatenate(parts) if parts else np.empty(0)


@pytest.mark.parametrize("dataset", DATASET_NAMES)
def test_stats_5m_percentiles_within_one_percent(dataset: str) -> None:
    """2e5 values spread over the last 4 minutes (one ``record_many`` chunk per
    second): the 5-minute ``stats()`` percentiles are within 1 % of numpy on
    exactly those values, and count, min, max and avg are exact."""
    values = make_datasets(200_000)[dataset]
    monitor = Monitor(manual_clock=True, start_time=START)
    svc = monitor.service("gen")

    recorded: list[tuple[float, np.ndarray]] = []
    for chunk in np.array_split(values, 240):
        chunk = np.ascontiguousarray(chunk)
        recorded.append((monitor.now(), chunk))
        svc.record_many(chunk)
        monitor.advance(1.0)

    s = monitor.stats("gen", "5m")
    assert s.end == monitor.now()
    expected = covered(recorded, s.start)
    assert expected.size == values.size, "a 5 m window must cover all 240 s of data"

    assert s.count == expected.size
    assert s.errors == 0
    assert s.min_ms == expected.min()
    assert s.max_ms == expected.max()
    assert s.avg_ms == pytest.approx(float(np.mean(expected)), rel=1e-9)
    check_quantiles(
        dataset,
        expected,
        {q: getattr(s, field) for field, q in STATS_QS.items()},
        STATS_MAX_REL_ERR,
    )


def test_stats_24h_after_tier_rollups_within_one_percent() -> None:
    """A day of lognormal data (20 values per simulated minute) that has been
    rolled up through the 1 s → 10 s → 1 min tiers still answers the 24 h
    window's p50/p95/p99 within 1 % of numpy on the covered values, with an
    exact count, min and max."""
    per_minute, minutes = 20, 1440
    values = make_datasets(per_minute * minutes)["lognormal"]
    monitor = Monitor(manual_clock=True, start_time=START)
    svc = monitor.service("gen")

    recorded: list[tuple[float, np.ndarray]] = []
    for i in range(minutes):
        chunk = np.ascontiguousarray(values[i * per_minute : (i + 1) * per_minute])
        recorded.append((monitor.now(), chunk))
        svc.record_many(chunk)
        monitor.advance(60.0)

    s = monitor.stats("gen", "24h")
    assert s.end == monitor.now()
    # Whole 1-minute buckets: the start may lag end - 24 h by up to a minute.
    assert s.end - 86_400 <= s.start <= s.end - 86_400 + 60
    expected = covered(recorded, s.start)
    # Most of the day is covered; at most the oldest minute or two drop out.
    assert values.size - 2 * per_minute <= expected.size <= values.size

    assert s.count == expected.size
    assert s.min_ms == expected.min()
    assert s.max_ms == expected.max()
    assert s.avg_ms == pytest.approx(float(np.mean(expected)), rel=1e-9)
    check_quantiles(
        "lognormal",
        expected,
        {0.5: s.p50_ms, 0.95: s.p95_ms, 0.99: s.p99_ms},
        STATS_MAX_REL_ERR,
    )


@pytest.mark.parametrize("window", [60, 80, 120, 300], ids=lambda w: f"window={w}s")
def test_stats_count_follows_reported_start_as_window_slides(window: int) -> None:
    """``count`` agrees with ``start`` at every step while a window slides
    past a service's last request: the request is counted exactly while
    ``start`` is at or before its second, whatever that second's offset in
    its 10 s bucket.

    Regression guard: windows of 80 s to 5 min are answered by the 1 s tier
    for their first, partial 10 s and by the 10 s tier for the rest.  The
    1 s tier keeps its newest sealed second in a "building" bucket; when a
    service's last request sits in the window's first partial 10 s, that
    bucket must still be read.
    """
    failures = []
    for offset in range(10):
        monitor = Monitor(manual_clock=True, start_time=START)  # START: multiple of 10 s
        svc = monitor.service("gen")
        monitor.advance(100.0 + offset)
        recorded_at = monitor.now()
        svc.record(123.0)  # the service's last request
        for _ in range(window + 2):
            monitor.advance(1.0)
            s = monitor.stats("gen", window)
            expected = 1 if recorded_at >= s.start else 0
            if s.count != expected:
                failures.append(
                    f"offset {offset}: now=rec+{monitor.now() - recorded_at:.0f}s "
                    f"start=rec{s.start - recorded_at:+.0f}s count={s.count} expected={expected}"
                )
        assert monitor.stats("gen", window).count == 0  # slid past at last
    assert not failures, f"{len(failures)} mismatches, first: " + "; ".join(failures[:4])
