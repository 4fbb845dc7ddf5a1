"""Run in a fresh interpreter: builds the load and prints memory figures as JSON.

Usage: python bench_memory_child.py SERVICES HOURS LLM_MODELS [storage] [baseline] [untrimmed] [jobs]

With ``jobs``: 3 of the services also finish jobs (``bench_load``'s job
load: 5 models x 3 workflows, a job every 30 s each, a distinct tag each).

With ``storage``: the tiers a monitor with storage keeps (the default ones
plus 30 days of hourly buckets, filled as a reload would).  With
``baseline``: everything but the load (imports, warm-up, the same
measurements), the "same process without the load" to compare against.
With ``untrimmed``: the old way (no warm-up, no trim), to show its drift.

How the figure is kept honest and stable.  A plain ``VmRSS`` after minus
before the build is not the load's footprint:

* glibc keeps memory that imports freed (a few MiB: module loading, numpy's
  start-up) resident in the heap and hands it out again, so the load first
  fills pages that are already counted; how much there is depends on the
  venv's import history (``.pth`` hooks, whether ``.pyc`` files existed,
  what the interpreter imported at start-up), so the same load measured
  9.2 MiB in one venv and 9.9-10.9 MiB in fresh clones;
* the first run of a code path faults in the pages of its code (numpy's and
  our ``.so``: ~0.5 MiB), shared file pages that are not the load's memory;
* lazily imported modules (``zipfile``, ``importlib.resources`` for the
  price table) are code, not retention.

So the child first warms up (a throwaway monitor through the same code
paths, closed again), then brings the heap to a canonical state before each
reading: ``gc.collect()`` and ``malloc_trim(0)``, which returns every free
page to the kernel, also pages inside the heap.  What remains is what the
load holds: its live allocations, the allocator's per-chunk overhead, and
the heap pages that free holes between live chunks keep (fragmentation).
``anon_delta`` (``RssAnon``) leaves out file pages entirely.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import sys
from typing import Any


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0]) * 1024
    return out


def _libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim  # noqa: B018  # glibc only
        libc.mallinfo2  # noqa: B018
    except (OSError, AttributeError, TypeError):
        return None
    return libc


LIBC = _libc()


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def settle(trim: bool = True) -> dict[str, int]:
    """Collects garbage, returns free heap pages to the kernel, and reads
    RSS and (glibc) the allocator's in-use and free bytes."""
    gc.collect()
    out = {}
    if LIBC is not None and trim:
        LIBC.malloc_trim(0)
    if LIBC is not None:
        LIBC.mallinfo2.restype = _MallInfo2
        mi = LIBC.mallinfo2()
        out = {"malloc_in_use": mi.uordblks + mi.hblkhd, "malloc_free": mi.fordblks}
    return {**_status(), **out}


def main() -> None:
    services, hours, llm_models = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    flags = set(sys.argv[4:])
    with_storage, baseline, untrimmed = "storage" in flags, "baseline" in flags, "untrimmed" in flags
    job_services = 3 if "jobs" in flags else 0
    import numpy as np

    import movie_director_metrics  # noqa: F401
    from bench_load import build, fill_hour_tier
    from movie_director_metrics.monitor import STORAGE_TIERS

    np.random.default_rng(0).lognormal(size=8)  # numpy.random loads ~7 MB lazily: not ours
    import movie_director_metrics.llm  # noqa: F401  # code, not retention: imported lazily on first use
    tiers = list(STORAGE_TIERS) if with_storage else None
    if not untrimmed:
        # Warm-up: the load's code paths once, on a throwaway monitor (code
        # pages, lazy imports, the price table's first load).
        # Short tiers so that every tier seals, rolls up and rolls off.
        short = [(1, 4), (10, 3), (60, 3)] + ([(3600, 3)] if with_storage else [])
        warm = build(min(services, 2), 3.1, extra_s=0, tiers=short, llm_models=min(llm_models, 1),
                     job_services=min(job_services, 1))
        if with_storage:
            fill_hour_tier(warm, hours=3)
        warm.close()
        del warm
    before = settle(trim=not untrimmed)
    m = None
    if not baseline:
        m = build(services, hours, tiers=tiers, llm_models=llm_models, job_services=job_services)
        if with_storage:
            fill_hour_tier(m)
    after = settle(trim=not untrimmed)
    result: dict[str, Any] = {
        "services": services, "hours": hours, "llm_models": llm_models, "baseline": baseline,
        "trimmed": LIBC is not None and not untrimmed,
        "engine_services": len(m.services()) if m else 0,
        "memory_bytes": m.memory_bytes() if m else 0,
        "llm_bucket_bytes": m.llm._store.nbytes() if m and llm_models else 0,
        "job_engine_bytes": m.jobs.memory_bytes() if m and job_services else 0,
        "rss_before": before["VmRSS"], "rss_after": after["VmRSS"],
        "rss_delta": after["VmRSS"] - before["VmRSS"],
        "anon_delta": after["RssAnon"] - before["RssAnon"],
        "file_delta": after["RssFile"] - before["RssFile"],
    }
    if "malloc_in_use" in after:
        result["malloc_in_use_delta"] = after["malloc_in_use"] - before["malloc_in_use"]
        result["malloc_free_after"] = after["malloc_free"]
    print(json.dumps(result))
    if m is not None:
        m.close()


if __name__ == "__main__":
    main()
