"""The public TDigest: API, serialization, pickling, merge, errors."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from movie_director_metrics import DEFAULT_COMPRESSION, TDigest, errors


def test_empty_digest() -> None:
    td = TDigest()
    assert td.compression == DEFAULT_COMPRESSION == 500.0
    assert (td.count, len(td), td.min, td.max, td.sum) == (0, 0, None, None, 0.0)
    assert td.quantile(0.5) is None
    assert td.cdf(1.0) is None


def test_small_inputs_are_exact() -> None:
    td = TDigest(100)
    xs = [5.0, 1.0, 3.0, 2.0, 4.0]
    for x in xs:
        td.update(x)
    for q in (0.0, 0.1, 0.25, 0.5, 0.9, 1.0):
        assert td.quantile(q) == pytest.approx(np.percentile(xs, 100 * q))
    assert (td.min, td.max, td.count, td.sum) == (1.0, 5.0, 5, 15.0)
    assert td.cdf(0.0) == 0.0 and td.cdf(10.0) == 1.0


def test_identical_values() -> None:
    td = TDigest()
    td.update_many(np.full(100_000, 3.0))
    assert all(td.quantile(q) == 3.0 for q in (0.0, 0.01, 0.5, 0.999, 1.0))


def test_quantile_monotone_and_cdf_inverse() -> None:
    rng = np.random.default_rng(1)
    td = TDigest()
    td.update_many(rng.lognormal(5, 1, 100_000))
    qs = np.linspace(0, 1, 201)
    vals = [td.quantile(q) for q in qs]
    assert all(a is not None and b is not None and a <= b for a, b in zip(vals, vals[1:]))
    for q in (0.1, 0.5, 0.9, 0.99):
        v = td.quantile(q)
        assert v is not None
        assert td.cdf(v) == pytest.approx(q, abs=2e-3)


def test_merge_equals_union_within_bounds() -> None:
    rng = np.random.default_rng(2)
    a_vals, b_vals = rng.normal(100, 10, 50_000), rng.normal(300, 30, 50_000)
    a, b, u = TDigest(), TDigest(), TDigest()
    a.update_many(a_vals)
    b.update_many(b_vals)
    u.update_many(np.concatenate([a_vals, b_vals]))
    a.merge(b)
    assert a.count == 100_000
    assert a.min == u.min and a.max == u.max
    allv = np.sort(np.concatenate([a_vals, b_vals]))
    for q in (0.05, 0.5, 0.95, 0.999):
        est = a.quantile(q)
        assert est is not None
        rank = np.searchsorted(allv, est) / len(allv)
        assert abs(rank - q) < 2e-3, (q, rank)


def test_bytes_round_trip_and_size() -> None:
    rng = np.random.default_rng(3)
    td = TDigest()
    td.update_many(rng.pareto(1.5, 200_000) + 1)
    blob = td.to_bytes()
    assert isinstance(blob, bytes) and len(blob) <= 4096
    back = TDigest.from_bytes(blob)
    assert (back.count, back.min, back.max, back.compression) == (td.count, td.min, td.max, td.compression)
    for q in (0.5, 0.99, 0.999):
        assert back.quantile(q) == pytest.approx(td.quantile(q), rel=1e-6)
    assert td.nbytes > 0 and td.centroid_count > 0


def test_pickle_round_trip_including_buffered_values() -> None:
    td = TDigest(200)
    for x in (1.0, 2.0, 3.0):
        td.update(x)
    back = pickle.loads(pickle.dumps(td))
    assert isinstance(back, TDigest)
    assert (back.count, back.min, back.max, back.quantile(0.5)) == (3, 1.0, 3.0, 2.0)


@pytest.mark.parametrize("blob", [b"", b"TD", b"\x00" * 10, b"garbage bytes that are not a digest", b"TD\x01" + b"\xff" * 64])
def test_from_bytes_rejects_garbage_clearly(blob: bytes) -> None:
    with pytest.raises(errors.DecodeError):
        TDigest.from_bytes(blob)


def test_truncated_blobs_are_rejected() -> None:
    td = TDigest()
    td.update_many(np.arange(1000.0))
    blob = td.to_bytes()
    for cut in (1, 5, len(blob) // 2, len(blob) - 1):
        with pytest.raises(errors.DecodeError):
            TDigest.from_bytes(blob[:cut])


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_rejected(bad: float) -> None:
    td = TDigest()
    td.update(1.0)
    with pytest.raises(errors.InvalidValueError):
        td.update(bad)
    with pytest.raises(errors.InvalidValueError, match="index 1"):
        td.update_many(np.array([2.0, bad, 3.0]))
    assert td.count == 1 and td.max == 1.0, "nothing of a rejected call is kept"


@pytest.mark.parametrize("q", [-0.1, 1.1, math.nan])
def test_bad_quantile(q: float) -> None:
    td = TDigest()
    td.update(1.0)
    with pytest.raises(ValueError):
        td.quantile(q)


@pytest.mark.parametrize("c", [0, 5, 20_000, math.nan, math.inf])
def test_bad_compression(c: float) -> None:
    with pytest.raises(errors.InvalidConfigError):
        TDigest(c)


def test_negative_values_allowed_in_general_digest() -> None:
    td = TDigest()
    td.update_many(np.linspace(-100, 100, 10_001))
    assert td.quantile(0.5) == pytest.approx(0.0, abs=0.5)
    assert td.min == -100.0


def test_repr() -> None:
    td = TDigest(100)
    td.update(1.0)
    assert repr(td) == "TDigest(compression=100.0, count=1, min=1.0, max=1.0)"
    assert repr(TDigest()) == "TDigest(compression=500.0, count=0, min=None, max=None)"
