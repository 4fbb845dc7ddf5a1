"""Peer sketches, configured as in the reference harness (shared/bench/peers.py).

Each peer is optional: ``load(peer)`` returns the module or raises
``PeerMissing`` with the import error, which the tests turn into a
"missing: <reason>" table row plus a skip.
"""

from __future__ import annotations

import collections
import importlib
import json
import math
import pickle
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


from bench_data import F64, QS


class PeerMissing(Exception):
    pass


def load(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except Exception as exc:  # ImportError or anything raised at import time
        raise PeerMissing(f"{type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True)
class Peer:
    name: str
    module: str | None
    new: Callable[[Any], Any]                       # module -> sketch
    insert: Callable[[Any], Callable[[Any], Any]]   # sketch -> bound single insert
    quantiles: Callable[[Any, Any], list[float | None]]  # (module, sketch) -> ms at QS
    serialized: Callable[[Any, Any], int | None]    # (module, sketch) -> bytes
    prep: Callable[[list[float]], list[Any]] = lambda v: v
    batch: Callable[[Any, F64], None] | None = None
    stream_cap: int | None = None                   # cap on values for streaming accuracy
    note: str = ""

    def mod(self) -> Any:
        return load(self.module) if self.module else None


def _prom_new(mod: Any) -> Any:
    reg = mod.CollectorRegistry()
    h = mod.Histogram("lat_seconds", "latency", registry=reg)
    h._bench_registry = reg
    return h


def _prom_quantiles(mod: Any, h: Any) -> list[float | None]:
    """histogram_quantile()-style linear interpolation inside the bucket."""
    bounds, cum = [], []
    for m in h.collect():
        for s in m.samples:
            if s.name.endswith("_bucket"):
                le = s.labels["le"]
                bounds.append(math.inf if le == "+Inf" else float(le))
                cum.append(s.value)
    total = cum[-1]
    out: list[float | None] = []
    for q in QS:
        r = q * total
        i = next(k for k, c in enumerate(cum) if c >= r)
        if math.isinf(bounds[i]):
            out.append(1000.0 * bounds[i - 1])
            continue
        lo = bounds[i - 1] if i > 0 else 0.0
        clo = cum[i - 1] if i > 0 else 0.0
        frac = (r - clo) / (cum[i] - clo) if cum[i] > clo else 0.0
        out.append(1000.0 * (lo + (bounds[i] - lo) * frac))
    return out


def _seed_quantiles(_mod: Any, d: Any) -> list[float | None]:
    data = list(d)
    qs = statistics.quantiles(data, n=20)
    return [statistics.median(data), qs[17], qs[18], None, None]


def seed_stats(d: collections.deque[float]) -> tuple[float, float, float]:
    """The seed design's stats call: mean + median + p95 on the deque."""
    data = list(d)
    return statistics.mean(data), statistics.median(data), statistics.quantiles(data, n=20)[18]


PEERS: tuple[Peer, ...] = (
    Peer("fastdigest(default=1000)", "fastdigest", lambda m: m.TDigest(), lambda o: o.update,
         lambda m, o: [o.quantile(q) for q in QS], lambda m, o: len(o.to_bytes()),
         batch=lambda o, a: o.batch_update(a)),
    Peer("fastdigest(max_centroids=100)", "fastdigest", lambda m: m.TDigest(max_centroids=100),
         lambda o: o.update, lambda m, o: [o.quantile(q) for q in QS], lambda m, o: len(o.to_bytes()),
         batch=lambda o, a: o.batch_update(a)),
    Peer("pytdigest(compression=100)", "pytdigest", lambda m: m.TDigest(100), lambda o: o.update,
         lambda m, o: [float(x) for x in o.inverse_cdf(list(QS))],
         lambda m, o: (o.force_merge(), o.get_centroids().nbytes)[1],
         batch=lambda o, a: o.update(a), note="serialized = centroid array"),
    Peer("tdigest(pure Python)", "tdigest", lambda m: m.TDigest(), lambda o: o.update,
         lambda m, o: [o.percentile(100.0 * q) for q in QS], lambda m, o: len(json.dumps(o.to_dict())),
         stream_cap=100_000, note="serialized = JSON to_dict"),
    Peer("ddsketch(rel_acc=0.01)", "ddsketch", lambda m: m.DDSketch(0.01), lambda o: o.add,
         lambda m, o: [o.get_quantile_value(q) for q in QS], lambda m, o: len(pickle.dumps(o)),
         note="serialized = pickle"),
    Peer("hdrh(1us..1h, 3 sig)", "hdrh.histogram", lambda m: m.HdrHistogram(1, 3_600_000_000, 3),
         lambda o: o.record_value, lambda m, o: [o.get_value_at_percentile(100.0 * q) / 1000.0 for q in QS],
         lambda m, o: len(o.encode()), prep=lambda v: [max(1, int(round(x * 1000.0))) for x in v],
         note="int us values; serialized = compressed base64"),
    Peer("prometheus Histogram(default buckets)", "prometheus_client", _prom_new, lambda o: o.observe,
         _prom_quantiles, lambda m, o: len(m.generate_latest(o._bench_registry)),
         prep=lambda v: [x / 1000.0 for x in v], note="seconds; serialized = text exposition"),
    Peer("seed deque(maxlen=1000)+statistics", None, lambda m: collections.deque(maxlen=1000),
         lambda o: o.append, _seed_quantiles, lambda m, o: None, note="keeps the last 1000 values only"),
)


def by_name(name: str) -> Peer:
    return next(p for p in PEERS if p.name == name)
