"""Data sets, exact references and error measures shared by the benchmarks.

Copied from the reference harness (shared/bench/peers.py) so the suite has
no run-time dependency outside the project: same seed, same distributions
(values in milliseconds), same rank-error definition.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

SEED = 20240607
QS = (0.5, 0.9, 0.95, 0.99, 0.999)
QNAMES = ("p50", "p90", "p95", "p99", "p99.9")
DATASETS = ("lognormal", "bimodal", "pareto", "lognormal-sorted")

F64 = npt.NDArray[np.float64]


def make_datasets(n: int, seed: int = SEED) -> dict[str, F64]:
    """The four sets of the reference harness, ``n`` values each."""
    rng = np.random.default_rng(seed)
    logn = rng.lognormal(mean=math.log(200.0), sigma=0.6, size=n)
    k_hi = int(round(0.10 * n))
    bim = np.concatenate([rng.normal(120.0, 15.0, n - k_hi), rng.normal(2500.0, 400.0, k_hi)])
    bim = np.clip(bim, 1e-3, None)
    rng.shuffle(bim)
    par = (rng.pareto(1.5, size=n) + 1.0) * 50.0
    return {
        "lognormal": logn,
        "bimodal": bim,
        "pareto": par,
        "lognormal-sorted": np.sort(logn),
    }


def exact_linear(sorted_arr: F64) -> list[float]:
    """numpy.percentile(method='linear') at QS."""
    return [float(x) for x in np.percentile(sorted_arr, [100.0 * q for q in QS], method="linear")]


def rel_error(est: float, exact: float) -> float:
    return (est - exact) / exact


def rank_error(sorted_arr: F64, value: float, q: float) -> float:
    """Distance (fraction of rank) from q to the empirical-CDF interval of value."""
    n = sorted_arr.size
    lo = np.searchsorted(sorted_arr, value, side="left") / n
    hi = np.searchsorted(sorted_arr, value, side="right") / n
    if lo <= q <= hi:
        return 0.0
    return float(min(abs(lo - q), abs(hi - q)))
