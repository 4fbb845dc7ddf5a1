"""Run in a fresh interpreter: builds the load and prints memory figures as JSON.

Usage: python bench_memory_child.py SERVICES HOURS LLM_MODELS [storage]

With ``storage``: the tiers a monitor with storage keeps (the default ones
plus 30 days of hourly buckets, filled as a reload would).
"""

from __future__ import annotations

import gc
import json
import sys


def vm_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main() -> None:
    services, hours, llm_models = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    with_storage = sys.argv[4:] == ["storage"]
    import numpy as np

    import movie_director_metrics  # noqa: F401
    from bench_load import build, fill_hour_tier
    from movie_director_metrics.monitor import STORAGE_TIERS

    np.random.default_rng(0).lognormal(size=8)  # numpy.random loads ~7 MB lazily: not ours
    import movie_director_metrics.llm  # noqa: F401  # code, not retention: imported lazily on first use
    gc.collect()
    before = vm_rss_bytes()
    m = build(services, hours, tiers=list(STORAGE_TIERS) if with_storage else None, llm_models=llm_models)
    if with_storage:
        fill_hour_tier(m)
    gc.collect()
    after = vm_rss_bytes()
    print(json.dumps({"services": services, "hours": hours, "llm_models": llm_models,
                      "engine_services": len(m.services()), "memory_bytes": m.memory_bytes(),
                      "rss_delta": after - before}))
    m.close()


if __name__ == "__main__":
    main()
