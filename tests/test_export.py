"""Exports (``Monitor.export``): real CSV and JSON files read back with
``csv``/``json`` (and pandas when installed), checked against an exact
oracle of what was recorded, against ``Monitor.stats``, and against the
shipped JSON Schema; history from disk after a restart; and failures that
must leave no file, no temporary file and an existing export untouched.

The monitors run on a manual clock from ``T0 = 1_700_000_000``, which is
20 s into a UTC minute and 800 s into an hour, so the first buckets are
partial and alignment is exercised.
"""

from __future__ import annotations

import bisect
import csv
import json
import math
import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import movie_director_metrics as mdm
from movie_director_metrics import export as ex

jsonschema = pytest.importorskip("jsonschema")

T0 = 1_700_000_000
TTL = 60  # the engine's default health_ttl_s
GiB = 2**30
QS = {"p50_ms": 0.5, "p90_ms": 0.9, "p95_ms": 0.95, "p99_ms": 0.99}

#: Seconds after T0 with nothing at all recorded (buckets there are left out).
QUIET = range(5400, 5700)
#: Seconds after T0 with health, queue, gauges and processing but no requests.
NO_REQUESTS = range(7200, 7500)
#: Seconds after T0 when the health checks say "down".
DOWN = range(3600, 3900)


# ---- the oracle ---------------------------------------------------------------


@dataclass
class Oracle:
    """Everything recorded, per service, by whole UTC epoch second."""

    requests: dict[str, list[tuple[int, float, str | None]]] = field(default_factory=dict)
    health: dict[str, list[tuple[int, bool]]] = field(default_factory=dict)
    queue: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    gauges: dict[str, list[tuple[int, str, float]]] = field(default_factory=dict)
    processing: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    def total(self, svc: str) -> int:
        return len(self.requests.get(svc, []))

    def uptime(self, svc: str, lo: int, hi: int) -> tuple[int, int]:
        """(up, down) seconds in [lo, hi): a result at s vouches for
        [s, min(s + TTL, next result))."""
        results = self.health.get(svc, [])
        up = down = 0
        first = bisect.bisect_left(results, (lo - TTL,))
        for i in range(first, bisect.bisect_left(results, (hi,))):
            s, ok = results[i]
            end = s + TTL if i + 1 == len(results) else min(s + TTL, results[i + 1][0])
            n = max(0, min(end, hi) - max(s, lo))
            up, down = (up + n, down) if ok else (up, down + n)
        return up, down

    def buckets(self, svc: str, res: int, lo: int, hi: int, now_s: int) -> dict[int, dict[str, Any]]:
        """Bucket start -> what was recorded in it, for starts in [lo, hi),
        buckets with anything in them only (as the export keeps them)."""
        out: dict[int, dict[str, Any]] = {}

        def b(t: int) -> dict[str, Any] | None:
            start = t - t % res
            if not (lo <= start < hi):
                return None
            return out.setdefault(
                start,
                {"lat": [], "errors": Counter(), "health": 0, "queue": [], "gauges": {}, "processing": 0},
            )

        for t, ms, err in self.requests.get(svc, []):
            if (d := b(t)) is not None:
                d["lat"].append(ms)
                if err:
                    d["errors"][err] += 1
        for t, _ in self.health.get(svc, []):
            if (d := b(t)) is not None:
                d["health"] += 1
        for t, depth in self.queue.get(svc, []):
            if (d := b(t)) is not None:
                d["queue"].append(depth)
        for t, g, v in self.gauges.get(svc, []):
            if (d := b(t)) is not None:
                d["gauges"].setdefault(g, []).append(v)
        for t, _ in self.processing.get(svc, []):
            if (d := b(t)) is not None:
                d["processing"] += 1
        # Buckets only vouched for by an earlier health result count too.
        first = -(-lo // res) * res
        for start in range(first, hi, res):
            up, down = self.uptime(svc, start, min(start + res, now_s + 1))
            if up + down:
                b(start)
            if start in out:
                out[start]["up"], out[start]["down"] = up, down
        return out


def simulate(m: mdm.Monitor, oracle: Oracle, seconds: int, seed: int = 7, rate: int = 5) -> None:
    """``seconds`` of traffic from the monitor's current time: ``rate``
    lognormal requests a second on "comfyui" (every 17th a timeout, every
    29th an oom), health every 10 s (down in DOWN), queue every 5 s, VRAM
    and GPU temperature every 15 s, processing times every 2 s; one request
    a minute on "ollama".  QUIET and NO_REQUESTS as documented above."""
    rng = np.random.default_rng(seed)
    comfy, ollama = m.service("comfyui"), m.service("ollama")
    for name in ("comfyui", "ollama"):
        for table in (oracle.requests, oracle.health, oracle.queue, oracle.gauges, oracle.processing):
            table.setdefault(name, [])
    for _ in range(seconds):
        t = int(m.now())
        rel = t - T0
        if rel in QUIET:
            m.advance(1.0)
            continue
        if rel not in NO_REQUESTS:
            for x in rng.lognormal(math.log(200.0), 0.5, rate):
                k = len(oracle.requests["comfyui"])
                err = "timeout" if k % 17 == 0 else "oom" if k % 29 == 0 else None
                comfy.record(float(x), ok=err is None, error=err)
                oracle.requests["comfyui"].append((t, float(x), err))
        if rel % 10 == 0:
            up = rel not in DOWN
            comfy.health(up)
            oracle.health["comfyui"].append((t, up))
        if rel % 5 == 0:
            comfy.set_queue(1, (rel // 5) % 4)
            oracle.queue["comfyui"].append((t, 1 + (rel // 5) % 4))
        if rel % 15 == 0:
            # Whole GiB and whole degrees: gauge maxima are kept as f32 by
            # the engine, exact for these values.
            vram, temp = float((4 + (rel // 15) % 4) * GiB), float(50 + (rel // 15) % 20)
            comfy.set_resource(vram_used_bytes=vram, gpu_temp_c=temp)
            oracle.gauges["comfyui"] += [(t, "vram_used_bytes", vram), (t, "gpu_temp_c", temp)]
        if rel % 2 == 0:
            comfy.record_processing(1000.0 + (rel % 97) * 3)
            oracle.processing["comfyui"].append((t, 1000.0 + (rel % 97) * 3))
        if rel % 60 == 7:
            bad = (rel // 60) % 5 == 0
            ollama.record(50.0 + rel % 13, ok=not bad, error="timeout" if bad else None)
            oracle.requests["ollama"].append((t, 50.0 + rel % 13, "timeout" if bad else None))
        m.advance(1.0)


# ---- reading exports back -----------------------------------------------------


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        r = csv.DictReader(f)
        rows = list(r)
        return list(r.fieldnames or []), rows


def read_json(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    jsonschema.validate(doc, SCHEMA)
    return doc


SCHEMA = json.loads(ex.SCHEMA_PATH.read_text(encoding="utf-8"))


def num(cell: str) -> float | None:
    return None if cell == "" else float(cell)


def error_cell(counts: Counter[str]) -> str:
    return ";".join(f"{k}={n}" for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def expected_summary(st: mdm.ServiceStats) -> dict[str, Any]:
    """What the JSON summary must hold for ``st``, mapped field by field."""
    d: dict[str, Any] = {"requests": st.count, "covered_start_epoch_s": st.start, "covered_end_epoch_s": st.end}
    for k in ex.JSON_SUMMARY_FIELDS:
        if k in d:
            continue
        g = next((g for g in mdm.GAUGES if k in (f"{g}_avg", f"{g}_max")), None)
        if g is not None:
            gs = st.resources.get(g)
            d[k] = None if gs is None else (gs.avg if k.endswith("_avg") else gs.max)
        else:
            d[k] = getattr(st, k)
    return d


def rank_error(sorted_values: np.ndarray, q: float, estimate: float) -> float:
    """Distance of ``q`` from the empirical-CDF interval of ``estimate``,
    widened by 0.5 % in value (the engine's log-linear bins are 0.39 %
    wide, so an estimate may sit just beside the value it stands for)."""
    n = len(sorted_values)
    below = np.searchsorted(sorted_values, estimate / 1.005, "left") / n
    at_or_below = np.searchsorted(sorted_values, estimate * 1.005, "right") / n
    return float(max(0.0, below - q, q - at_or_below))


def check_rows_against_oracle(
    rows: list[dict[str, str]],
    oracle: Oracle,
    svc: str,
    res: int,
    lo: int,
    hi: int,
    now_s: int,
    engine: dict[int, mdm.ServiceStats] | None = None,
) -> None:
    """Every exported bucket of ``svc`` holds exactly what was recorded in
    it; every bucket with data is exported.

    Percentiles: a few hundred values a minute are too few for a value
    bound (at p99 neighbouring order statistics of this lognormal are ~6 %
    apart), so those are checked by rank (within 1 % + one value) and
    against ``engine``, the engine's own answer for the same bucket;
    buckets of 5000+ values are checked within 1 % of numpy's exact value
    (``test_bucket_percentiles_within_one_percent`` does so densely)."""
    want = oracle.buckets(svc, res, lo, hi, now_s)
    got = {int(r["bucket_start_epoch_s"]): r for r in rows if r["service"] == svc}
    assert sorted(got) == sorted(want)
    for start, r in got.items():
        w = want[start]
        lat = np.array(w["lat"])
        assert r["bucket_start"] == f"{np.datetime64(start, 's')}Z"
        assert int(r["bucket_end_epoch_s"]) == start + res and int(r["resolution_s"]) == res
        assert int(r["requests"]) == len(lat), start
        assert int(r["errors"]) == sum(w["errors"].values())
        assert r["error_types"] == error_cell(w["errors"])
        assert int(r["health_checks"]) == w["health"]
        assert int(r["processing_count"]) == w["processing"]
        assert int(r["uptime_known_s"]) == w["up"] + w["down"]
        assert num(r["uptime_pct"]) == (100.0 * w["up"] / (w["up"] + w["down"]) if w["up"] + w["down"] else None)
        if len(lat):
            assert float(r["min_ms"]) == lat.min() and float(r["max_ms"]) == lat.max()
            assert float(r["avg_ms"]) == pytest.approx(lat.mean(), rel=1e-12)
            assert float(r["success_rate"]) == pytest.approx(1 - sum(w["errors"].values()) / len(lat), rel=1e-12)
            ordered = np.sort(lat)
            for col, q in QS.items():
                got = float(r[col])
                assert rank_error(ordered, q, got) <= 0.01 + 1 / len(lat), (start, col)
                if len(lat) >= 5000:
                    exact = float(np.percentile(lat, 100 * q, method="linear"))
                    assert got == pytest.approx(exact, rel=0.01), (start, col)
                if engine is not None:
                    # The newest bucket is still building in the engine (exact
                    # bins); the export reads it sealed (a digest).
                    rel = 1e-3 if start + res > now_s else 0
                    assert got == pytest.approx(getattr(engine[start], col), rel=rel, abs=0), (start, col)
        else:  # no requests: empty cells, not zeros
            for col in ("success_rate", "avg_ms", "min_ms", "max_ms", *QS):
                assert r[col] == "", (start, col)
            assert float(r["rpm"]) == 0.0
        if w["queue"]:
            assert float(r["queue_depth_avg"]) == sum(w["queue"]) / len(w["queue"])
            assert int(r["queue_depth_max"]) == max(w["queue"])
        else:
            assert r["queue_depth_avg"] == r["queue_depth_max"] == ""
        for g in mdm.GAUGES:
            vals = w["gauges"].get(g)
            if vals:
                assert float(r[f"{g}_avg"]) == sum(vals) / len(vals)
                assert float(r[f"{g}_max"]) == max(vals)
            else:
                assert r[f"{g}_avg"] == r[f"{g}_max"] == ""


# ---- fixtures -------------------------------------------------------------------


@dataclass
class Recorded:
    monitor: mdm.Monitor
    oracle: Oracle

    @property
    def now_s(self) -> int:
        return math.floor(self.monitor.now())


@pytest.fixture(scope="module")
def mem() -> Iterator[Recorded]:
    """Three hours of traffic in a monitor without storage (read-only use)."""
    with mdm.Monitor(manual_clock=True, start_time=float(T0)) as m:
        oracle = Oracle()
        simulate(m, oracle, 3 * 3600)
        yield Recorded(m, oracle)


def open_db(path: Path, start: float, **kw: Any) -> mdm.Monitor:
    return mdm.Monitor(storage=path, manual_clock=True, start_time=start, flush_interval_s=3600, **kw)


# ---- layout ---------------------------------------------------------------------


def test_columns_are_stable_and_the_schema_describes_them() -> None:
    gauge_cols = [f"{g}_{a}" for g in mdm.GAUGES for a in ("avg", "max")]
    assert ex.CSV_COLUMNS[:5] == ("service", "bucket_start", "bucket_start_epoch_s", "bucket_end_epoch_s", "resolution_s")
    assert ex.CSV_COLUMNS[5:25] == (
        "requests", "errors", "success_rate", "rpm", "avg_ms", "min_ms", "max_ms",
        "p50_ms", "p90_ms", "p95_ms", "p99_ms", "uptime_pct", "uptime_known_s", "health_checks",
        "queue_depth_avg", "queue_depth_max", "processing_count", "processing_avg_ms",
        "processing_p50_ms", "processing_p95_ms",
    )  # fmt: skip
    assert list(ex.CSV_COLUMNS[25:-1]) == gauge_cols and ex.CSV_COLUMNS[-1] == "error_types"
    assert "vram_used_bytes_avg" in ex.CSV_COLUMNS and "vram_used_bytes_max" in ex.CSV_COLUMNS
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    defs = SCHEMA["$defs"]
    stats = list(defs["statistics"]["properties"])
    assert set(stats) | set(defs["bucket"]["properties"]) == set(ex.JSON_SERIES_FIELDS)
    assert set(stats) | set(defs["summary"]["properties"]) == set(ex.JSON_SUMMARY_FIELDS)
    assert [c for c in ex.CSV_COLUMNS if c not in ("service", "error_types")] == [
        c for c in ex.JSON_SERIES_FIELDS if c != "error_counts"
    ]


# ---- minute buckets, no storage ------------------------------------------------


def test_csv_minute_buckets_hold_exactly_what_was_recorded(mem: Recorded, tmp_path: Path) -> None:
    m, o = mem.monitor, mem.oracle
    out = m.export(tmp_path / "day.csv", "csv", window="24h", resolution="1m")
    assert out == tmp_path / "day.csv"
    header, rows = read_csv(out)
    assert header == list(ex.CSV_COLUMNS)
    hi = mem.now_s + 1
    for svc in ("comfyui", "ollama"):
        engine = {round(x.start): x for x in m.series_stats(svc, "24h", resolution_s=60)}
        check_rows_against_oracle(rows, o, svc, 60, hi - 86_400, hi, mem.now_s, engine)
        st = m.stats(svc, "24h")
        assert sum(int(r["requests"]) for r in rows if r["service"] == svc) == st.count == o.total(svc)
    # Quiet minutes (nothing recorded, no health vouching) are left out...
    starts = {int(r["bucket_start_epoch_s"]) for r in rows if r["service"] == "comfyui"}
    assert not any(T0 + 5460 <= s < T0 + 5640 for s in starts)
    # ...while minutes with health but no requests are kept with empty latency cells.
    gap = [r for r in rows if r["service"] == "comfyui" and T0 + 7240 <= int(r["bucket_start_epoch_s"]) < T0 + 7440]
    assert len(gap) == 4 and all(r["requests"] == "0" and r["p95_ms"] == "" for r in gap)
    # Gauges never reported are empty columns; the ones reported are filled.
    assert all(r["cpu_pct_avg"] == "" for r in rows)
    assert rows[0]["service"] == "comfyui" and rows[0]["vram_used_bytes_max"] != ""
    # Most frequent error type first.
    assert next(r for r in rows if r["errors"] not in ("0", "")).get("error_types", "").startswith("timeout=")


def test_json_summary_equals_stats_and_rows_match_csv(mem: Recorded, tmp_path: Path) -> None:
    m = mem.monitor
    m.export(tmp_path / "day.csv", "csv", window="24h")
    doc = read_json(m.export(tmp_path / "day.json", "json", window="24h"))
    _, rows = read_csv(tmp_path / "day.csv")
    hi = mem.now_s + 1
    assert doc["schema_version"] == 1 and doc["generator"] == f"movie_director_metrics {mdm.__version__}"
    assert doc["window"] == {
        "start": f"{np.datetime64(hi - 86_400, 's')}Z",
        "end": f"{np.datetime64(hi, 's')}Z",
        "start_epoch_s": hi - 86_400,
        "end_epoch_s": hi,
        "seconds": 86_400,
        "label": "24h",
    }
    assert (doc["resolution"], doc["resolution_s"], doc["retention"]) == ("1m", 60, None)
    assert [s["service"] for s in doc["services"]] == m.services() == ["comfyui", "ollama"]
    for s in doc["services"]:
        st = m.stats(s["service"], "24h")
        assert s["summary"] == expected_summary(st)  # exact, field by field
        assert list(s["summary"]["error_counts"]) == list(st.error_counts)  # order too
        csv_rows = [r for r in rows if r["service"] == s["service"]]
        assert len(s["series"]) == len(csv_rows)
        for j, c in zip(s["series"], csv_rows):
            for col in ex.CSV_COLUMNS[1:-1]:
                assert j[col] == (None if c[col] == "" else type(j[col])(c[col])), col
            assert c["error_types"] == ";".join(f"{k}={n}" for k, n in j["error_counts"].items())
    # No requests in a minute: nulls, not zeros.
    gap = next(b for b in doc["services"][0]["series"] if b["bucket_start_epoch_s"] == T0 + 7300)
    assert gap["requests"] == 0 and gap["p50_ms"] is None and gap["success_rate"] is None
    assert gap["queue_depth_max"] is not None


def test_explicit_past_range_summary_covers_exactly_the_buckets(mem: Recorded, tmp_path: Path) -> None:
    m, o = mem.monitor, mem.oracle
    start, end = T0 + 1000.5, T0 + 4000  # unaligned start; end on a whole minute
    doc = read_json(m.export(tmp_path / "r.json", "json", start=start, end=end, services=["comfyui"]))
    _, rows = read_csv(m.export(tmp_path / "r.csv", start=start, end=end, services="comfyui"))
    assert doc["window"]["start_epoch_s"] == T0 + 1001 and doc["window"]["end_epoch_s"] == T0 + 4000
    assert doc["window"]["label"] is None
    check_rows_against_oracle(rows, o, "comfyui", 60, T0 + 1001, T0 + 4000, mem.now_s)
    series, summ = doc["services"][0]["series"], doc["services"][0]["summary"]
    assert series[0]["bucket_start_epoch_s"] == T0 + 1060 and series[-1]["bucket_start_epoch_s"] == T0 + 3940
    assert summ["requests"] == sum(b["requests"] for b in series)
    assert summ["errors"] == sum(b["errors"] for b in series)
    assert summ["min_ms"] == min(b["min_ms"] for b in series)
    assert summ["max_ms"] == max(b["max_ms"] for b in series)
    assert summ["error_counts"] == dict(sum((Counter(b["error_counts"]) for b in series), Counter()).most_common())
    up, down = o.uptime("comfyui", T0 + 1060, T0 + 4000)  # across DOWN
    assert (summ["uptime_known_s"], summ["uptime_pct"]) == (up + down, 100.0 * up / (up + down))
    assert summ["uptime_known_s"] == sum(b["uptime_known_s"] for b in series)
    lat = np.array([ms for t, ms, _ in o.requests["comfyui"] if T0 + 1060 <= t < T0 + 4000])
    assert summ["p95_ms"] == pytest.approx(float(np.percentile(lat, 95)), rel=0.01)
    assert (summ["covered_start_epoch_s"], summ["covered_end_epoch_s"]) == (T0 + 1060, T0 + 4000)


def test_start_without_end_runs_to_now(mem: Recorded, tmp_path: Path) -> None:
    m = mem.monitor
    # An explicit start includes its own second; a window ends with the
    # current second, so it starts one second later.
    a = read_json(m.export(tmp_path / "a.json", "json", start=m.now() - 3600))
    b = read_json(m.export(tmp_path / "b.json", "json", window=3600))
    assert a["window"]["start_epoch_s"] == mem.now_s - 3600 and a["window"]["seconds"] == 3601
    assert b["window"]["start_epoch_s"] == mem.now_s + 1 - 3600 and b["window"]["seconds"] == 3600
    assert a["window"]["end_epoch_s"] == b["window"]["end_epoch_s"] == mem.now_s + 1
    assert a["window"]["label"] is None and b["window"]["label"] == "3600s"
    for sa, sb in zip(a["services"], b["services"]):
        assert sa["series"] == sb["series"]
        assert sa["summary"]["requests"] == sum(x["requests"] for x in sa["series"])


def test_bucket_percentiles_within_one_percent(tmp_path: Path) -> None:
    """6000 lognormal values a minute: every minute's p50/p90/p95/p99 in the
    export is within 1 % of numpy's exact (linear) percentile of the values
    recorded in that minute."""
    rng = np.random.default_rng(20240607)
    per_minute: dict[int, list[float]] = {}
    with mdm.Monitor(manual_clock=True, start_time=float(T0)) as m:
        svc = m.service("comfyui")
        for _ in range(30 * 60):
            t = int(m.now())
            x = rng.lognormal(math.log(200.0), 0.6, 100)
            svc.record_many(x)
            per_minute.setdefault(t - t % 60, []).extend(x.tolist())
            m.advance(1)
        _, rows = read_csv(m.export(tmp_path / "dense.csv", window="1h"))
    assert [int(r["bucket_start_epoch_s"]) for r in rows] == sorted(per_minute)
    for r in rows:
        lat = np.array(per_minute[int(r["bucket_start_epoch_s"])])
        assert int(r["requests"]) == len(lat)
        for col, q in QS.items():
            exact = float(np.percentile(lat, 100 * q, method="linear"))
            assert float(r[col]) == pytest.approx(exact, rel=0.01), (r["bucket_start"], col)


def test_one_hour_resolution_needs_an_hour_tier_or_storage(mem: Recorded, tmp_path: Path) -> None:
    with pytest.raises(mdm.InvalidValueError, match=r"resolution='1h'.*3600 s.*'raw', '1m'"):
        mem.monitor.export(tmp_path / "h.csv", resolution="1h")
    assert not (tmp_path / "h.csv").exists()


# ---- raw: the live tiers --------------------------------------------------------


@pytest.mark.parametrize(("window", "res"), [("5m", 1), ("1h", 10), ("24h", 60)])
def test_raw_uses_the_finest_live_tier(mem: Recorded, tmp_path: Path, window: str, res: int) -> None:
    m, o = mem.monitor, mem.oracle
    doc = read_json(m.export(tmp_path / "raw.json", "json", window=window, resolution="raw"))
    _, rows = read_csv(m.export(tmp_path / "raw.csv", window=window, resolution="raw"))
    assert (doc["resolution"], doc["resolution_s"]) == ("raw", res)
    hi = mem.now_s + 1
    lo = hi - doc["window"]["seconds"]
    for svc in ("comfyui", "ollama"):
        engine = {round(x.start): x for x in m.series_stats(svc, window)}
        check_rows_against_oracle(rows, o, svc, res, lo, hi, mem.now_s, engine)
        st = m.stats(svc, window)
        summary = next(s["summary"] for s in doc["services"] if s["service"] == svc)
        assert summary == expected_summary(st)
        assert sum(int(r["requests"]) for r in rows if r["service"] == svc) == st.count


# ---- pandas ---------------------------------------------------------------------


def test_exports_load_in_pandas(mem: Recorded, tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    m = mem.monitor
    out = m.export(tmp_path / "day.csv", window="24h")
    _, rows = read_csv(out)
    df = pd.read_csv(out)
    assert list(df.columns) == list(ex.CSV_COLUMNS) and len(df) == len(rows)
    for col in ("requests", "errors", "bucket_start_epoch_s", "resolution_s", "uptime_known_s", "health_checks"):
        assert df[col].dtype == np.int64, col
    for col in ("p50_ms", "rpm", "uptime_pct", "vram_used_bytes_avg", "cpu_pct_avg"):
        assert df[col].dtype == np.float64, col
    assert df["cpu_pct_avg"].isna().all() and df["p50_ms"].isna().sum() == (df["requests"] == 0).sum()
    assert pd.api.types.is_string_dtype(df["service"]) or df["service"].dtype == object
    # Empty cells are missing values: an integer column with gaps loads as nullable Int64.
    nullable = pd.read_csv(out, dtype={"queue_depth_max": "Int64"})
    assert nullable["queue_depth_max"].isna().sum() == sum(r["queue_depth_max"] == "" for r in rows) > 0
    assert nullable["queue_depth_max"].dropna().astype(int).tolist() == [
        int(r["queue_depth_max"]) for r in rows if r["queue_depth_max"]
    ]
    when = pd.to_datetime(df["bucket_start"], utc=True)
    assert (when == pd.to_datetime(df["bucket_start_epoch_s"], unit="s", utc=True)).all()
    assert df.groupby("service")["requests"].sum().to_dict() == {
        s: m.stats(s, "24h").count for s in ("comfyui", "ollama")
    }
    doc = read_json(m.export(tmp_path / "day.json", "json", window="24h"))
    flat = pd.json_normalize(doc["services"], record_path="series", meta=["service"])
    assert len(flat) == len(df)
    assert (flat["requests"].to_numpy() == df["requests"].to_numpy()).all()


# ---- storage ----------------------------------------------------------------------


COUNT_COLS = (
    "requests", "errors", "min_ms", "max_ms", "error_types", "health_checks", "processing_count",
    "queue_depth_max", "vram_used_bytes_max", "gpu_temp_c_avg",
)  # fmt: skip


def test_history_from_disk_exports_the_same_buckets(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite3"
    o = Oracle()
    end = T0 + 10_000  # a whole hour: the last buckets are whole
    with open_db(db, T0) as m:
        simulate(m, o, end - T0)
        assert m.now() == end
        live = {
            (res, fmt): m.export(tmp_path / f"live-{res}.{fmt}", fmt, start=T0 - 3600, end=end - 0.5, resolution=res)
            for res in ("1m", "1h")
            for fmt in ("csv", "json")
        }
        day = m.export(tmp_path / "live-day.csv", window="24h")
        day_count = m.stats("comfyui", "24h").count
    # A new process ten minutes later: everything comes from the file.
    with open_db(db, end + 600) as m2:
        for (res, fmt), path in live.items():
            again = m2.export(tmp_path / f"disk-{res}.{fmt}", fmt, start=T0 - 3600, end=end, resolution=res)
            if fmt == "csv":
                h1, a = read_csv(path)
                h2, b = read_csv(again)
                assert h1 == h2 == list(ex.CSV_COLUMNS)
                assert a == b and len(a) > 0  # every cell
                check_rows_against_oracle(a, o, "comfyui", 3600 if res == "1h" else 60, T0 - 3600, end, end)
            else:
                ja, jb = read_json(path), read_json(again)
                assert ja["services"] == jb["services"]
                assert ja["retention"] == jb["retention"] == {"minute_days": 7.0, "hour_days": 365.0}
        _, a = read_csv(day)
        _, b = read_csv(m2.export(tmp_path / "disk-day.csv", start=T0 - 3600, end=end))
        assert [{c: r[c] for c in COUNT_COLS} for r in a if int(r["bucket_start_epoch_s"]) < end] == [
            {c: r[c] for c in COUNT_COLS} for r in b
        ]
        assert sum(int(r["requests"]) for r in b if r["service"] == "comfyui") == day_count == o.total("comfyui")


def test_seven_days_at_one_hour_with_storage(tmp_path: Path) -> None:
    """Three days, ten-minute steps, with a restart in the middle: history
    partly from the file, partly live, plus the hour still being built."""
    db = tmp_path / "h.sqlite3"
    per_hour: Counter[int] = Counter()
    per_minute: Counter[int] = Counter()
    errors: Counter[str] = Counter()

    def run(m: mdm.Monitor, steps: int) -> None:
        svc = m.service("comfyui")
        for _ in range(steps):
            t = int(m.now())
            for k in range(3):
                bad = (t // 600 + k) % 7 == 0
                err = ("oom" if t % 1200 else "timeout") if bad else None
                svc.record(100.0 + (t // 600) % 50 + k, ok=not bad, error=err)
                per_hour[t - t % 3600] += 1
                per_minute[t - t % 60] += 1
                errors[err or ""] += bool(err)
            svc.health((t // 600) % 12 != 0)
            m.advance(600)
            if t % 3600 < 600:
                m.flush()  # what the background thread does every few seconds

    with open_db(db, T0) as m:
        run(m, 216)  # 1.5 days
        middle = m.now()
    with open_db(db, middle) as m:
        run(m, 216)
        m.advance(1234)  # mid-hour: the newest hour is partial
        st = m.stats("comfyui", "7d")
        doc = read_json(m.export(tmp_path / "week.json", "json", window="7d", resolution="1h"))
        _, rows = read_csv(m.export(tmp_path / "week.csv", window="7d", resolution="1h"))
        _, minutes = read_csv(m.export(tmp_path / "week-min.csv", window="7d", resolution="1m"))
        assert st.count == sum(per_hour.values()) == 432 * 3
        assert doc["resolution_s"] == 3600 and doc["window"]["seconds"] == 7 * 86_400
        summary = doc["services"][0]["summary"]
        assert summary == expected_summary(st)
        assert summary["error_counts"] == {k: n for k, n in errors.most_common() if k}
        got = {int(r["bucket_start_epoch_s"]): int(r["requests"]) for r in rows}
        assert {k: v for k, v in got.items() if v} == dict(per_hour)
        assert sum(got.values()) == st.count
        assert [b["requests"] for b in doc["services"][0]["series"]] == [int(r["requests"]) for r in rows]
        got_min = {int(r["bucket_start_epoch_s"]): int(r["requests"]) for r in minutes}
        assert {k: v for k, v in got_min.items() if v} == dict(per_minute)


def test_a_service_only_on_disk_is_exported(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite3"
    o = Oracle()
    end = T0 + 10_000
    with open_db(db, T0) as m:
        simulate(m, o, end - T0)
        before = m.export(tmp_path / "before.csv", start=T0 - 3600, end=end - 1, resolution="1h")
    # 40 days later the services' history is older than every live tier.
    with open_db(db, end + 40 * 86_400) as m2:
        assert m2.services() == []
        after = m2.export(tmp_path / "after.csv", start=T0 - 3600, end=end, resolution="1h")
        h, b = read_csv(after)
        assert read_csv(before)[1] == b and {r["service"] for r in b} == {"comfyui", "ollama"}
        one = read_json(m2.export(tmp_path / "one.json", "json", start=T0 - 3600, end=end, resolution="1h", services=["ollama"]))
        assert [s["service"] for s in one["services"]] == ["ollama"]
        assert one["services"][0]["summary"]["requests"] == o.total("ollama")
        assert one["services"][0]["summary"]["error_counts"] == {"timeout": sum(1 for *_, e in o.requests["ollama"] if e)}
        # Nothing in the last day: on-disk services without data in range are left out.
        assert read_csv(m2.export(tmp_path / "day.csv", window="24h", resolution="1h"))[1] == []
        with pytest.raises(mdm.InvalidValueError, match="'comfyui' has history on disk only"):
            m2.export(tmp_path / "raw.csv", window="5m", resolution="raw", services=["comfyui"])
        with pytest.raises(mdm.InvalidWindowError, match="retention of 60 s buckets"):
            m2.export(tmp_path / "old.csv", start=T0, end=end, resolution="1m")
        assert m2.services() == []  # exporting history creates no live services



def test_unusable_history_file_still_exports_what_is_in_memory(small_fs: Path, tmp_path: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    with pytest.warns(mdm.StorageWarning, match="cannot write metrics history"):
        m = open_db(small_fs / "h.sqlite3", T0)
    try:
        o = Oracle()
        simulate(m, o, 900)
        with pytest.warns(mdm.StorageWarning, match="exporting without the newest history on disk"):
            out = m.export(tmp_path / "x.csv", window="1h")
        _, rows = read_csv(out)
        check_rows_against_oracle(rows, o, "comfyui", 60, T0 + 901 - 3600, T0 + 901, T0 + 900)
        assert sum(int(r["requests"]) for r in rows if r["service"] == "comfyui") == o.total("comfyui") > 0
    finally:
        m.close()

# ---- bad arguments ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"format": "xlsx"}, mdm.InvalidValueError, r"format='xlsx'.*'csv' or 'json'"),
        ({"resolution": "5m"}, mdm.InvalidValueError, r"resolution='5m'.*\['raw', '1m', '1h'\]"),
        ({"window": "fortnight"}, mdm.InvalidWindowError, r"window='fortnight'.*\"24h\""),
        ({"window": 0}, mdm.InvalidWindowError, r"window=0"),
        ({"window": "7d"}, mdm.InvalidWindowError, r"window='7d'.*86400 s.*storage"),
        ({"window": "1h", "start": T0}, mdm.InvalidWindowError, r"either a window .* not both"),
        ({"end": T0 + 60}, mdm.InvalidWindowError, r"end=1700000060 needs a start="),
        ({"start": T0 + 60, "end": T0}, mdm.InvalidWindowError, r"start=1700000060 is not before end"),
        ({"start": T0 + 10**6}, mdm.InvalidWindowError, r"start=1701000000 .* is in the future"),
        ({"start": T0, "end": T0 + 10**6}, mdm.InvalidWindowError, r"end=1701000000 .* is in the future"),
        ({"start": float("nan")}, mdm.InvalidWindowError, r"start=nan is not a time"),
        ({"start": T0, "end": T0 + 3600, "resolution": "raw"}, mdm.InvalidValueError, r"'raw' .* ranges ending now"),
        ({"window": "2d", "resolution": "raw"}, mdm.InvalidWindowError, r"window='2d' spans 172800 s.*86400 s"),
        ({"services": ["comfyui", "nope"]}, mdm.UnknownServiceError, r"'nope'.*\['comfyui', 'ollama'\]"),
        ({"services": []}, mdm.InvalidValueError, r"services=\[\] selects nothing"),
        ({"start": T0 + 30.2, "end": T0 + 30.7}, mdm.InvalidWindowError, r"no whole second"),
        ({"start": T0 + 41, "end": T0 + 45}, mdm.InvalidWindowError, r"no start of a 60 s bucket"),
    ],
)
def test_bad_arguments_name_the_value_and_what_was_expected(
    mem: Recorded, tmp_path: Path, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    fmt = kwargs.pop("format", "csv")
    with pytest.raises(error, match=match):
        mem.monitor.export(tmp_path / "x.csv", fmt, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_a_closed_monitor_refuses(tmp_path: Path) -> None:
    m = mdm.Monitor(manual_clock=True, start_time=float(T0))
    m.service("a").record(1.0)
    m.close()
    with pytest.raises(mdm.MonitorClosedError, match="closed"):
        m.export(tmp_path / "x.csv")


# ---- failures: nothing half-written -------------------------------------------------


def small_monitor() -> mdm.Monitor:
    m = mdm.Monitor(manual_clock=True, start_time=float(T0))
    for s in range(120):
        m.service("a").record(10.0 + s)
        m.advance(1)
    return m


def test_missing_directory_raises_and_leaves_nothing(tmp_path: Path) -> None:
    with small_monitor() as m:
        target = tmp_path / "no" / "such" / "x.csv"
        with pytest.raises(mdm.ExportError, match=r"x\.csv.*does not exist") as e:
            m.export(target)
        assert isinstance(e.value, OSError)
        assert list(tmp_path.iterdir()) == []
        # A directory in the way of the file: same, and the directory is untouched.
        (tmp_path / "d.csv").mkdir()
        with pytest.raises(mdm.ExportError, match=r"d\.csv"):
            m.export(tmp_path / "d.csv")
        assert [p.name for p in tmp_path.iterdir()] == ["d.csv"] and list((tmp_path / "d.csv").iterdir()) == []


def _mount(target: Path, opts: str) -> bool:
    return subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(target)], capture_output=True).returncode == 0


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (root only): a real full disk and, remounted, a real
    read-only one."""
    target = tmp_path / "mnt"
    target.mkdir()
    if os.geteuid() != 0 or not _mount(target, "size=64k"):
        pytest.skip("needs permission to mount a tmpfs (root)")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def test_read_only_location_raises_and_leaves_nothing(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = False
    if os.geteuid() == 0:  # root writes through file modes: mount a read-only tmpfs instead
        mounted = _mount(ro, "size=64k,ro")
        if not mounted:
            pytest.skip("root without permission to mount a read-only tmpfs")
    else:
        ro.chmod(0o555)
    try:
        with small_monitor() as m:
            with pytest.raises(mdm.ExportError, match=r"ro/x\.json.*(Read-only|Permission denied)"):
                m.export(ro / "x.json", "json")
        assert list(ro.iterdir()) == []
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(ro)], check=False)
        else:
            ro.chmod(0o755)


def test_full_disk_keeps_the_previous_export(small_fs: Path) -> None:
    with mdm.Monitor(manual_clock=True, start_time=float(T0)) as m:
        simulate(m, Oracle(), 1800)
        target = small_fs / "x.json"
        m.export(target, "json", window="5m", services=["ollama"])
        before = target.read_bytes()
        with pytest.raises(mdm.ExportError, match=r"x\.json.*No space left"):
            m.export(target, "json", window="1h", resolution="raw")
        assert target.read_bytes() == before
        assert [p.name for p in small_fs.iterdir()] == ["x.json"]


def test_failure_mid_write_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with small_monitor() as m:
        target = tmp_path / "x.json"
        m.export(target, "json")
        before = target.read_bytes()

        # Simulates a serialization failure after part of the document was
        # written to the temporary file (json.dump is what the export calls).
        def failing_dump(obj: object, fp: Any, **kw: Any) -> None:
            fp.write('{"schema_version": 1, "services": [')
            raise RuntimeError("simulated serialization failure")

        monkeypatch.setattr(json, "dump", failing_dump)
        with pytest.raises(mdm.ExportError, match=r"x\.json.*simulated serialization failure") as e:
            m.export(target, "json")
        assert isinstance(e.value.__cause__, RuntimeError)
        assert target.read_bytes() == before
        assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
        monkeypatch.undo()

        # The rename itself failing: the temporary file goes too.
        def failing_replace(src: str, dst: object) -> None:
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(os, "replace", failing_replace)
        with pytest.raises(mdm.ExportError, match="Permission denied"):
            m.export(tmp_path / "y.csv")
        assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_replacing_keeps_the_file_mode(tmp_path: Path) -> None:
    with small_monitor() as m:
        target = tmp_path / "x.csv"
        fresh = m.export(target)
        umask = os.umask(0o022)
        os.umask(umask)
        assert fresh.stat().st_mode & 0o777 == 0o666 & ~umask  # not the temporary file's 0600
        target.chmod(0o640)
        m.export(target)
        assert target.stat().st_mode & 0o777 == 0o640
