"""A short soak: 30 simulated hours of 8 services (and 2 LLM models) with
storage, alerts and snapshots, at 30 s steps, in ~15 s (the full run is
``scripts/soak.py``, which this drives with smaller numbers).

What it pins: once the 1-minute tier is full (24 h), the engine's memory
stops growing except for the 1-hour tier, which grows by design for 30
days.  ``plateau_bytes`` is ``memory_bytes()`` minus that tier's exact
size (its blobs plus ring slots, see ``soak.hour_tier_bytes``), so:

* over hours 25..30 it stays within 0.2 % (~10 KB of ~5 MB; measured
  spread ~3 KB, from bucket blobs whose encoded size varies with their
  values), and its least-squares slope is under 1 KiB/h.  8 services
  record 57,600 requests an hour: a leak of one byte per 56 requests
  breaks the slope bound, one byte per 30 breaks the spread bound;
* the hour tier itself does grow (one bucket per service per hour), so
  ``memory_bytes`` alone would not plateau and the subtraction matters.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

HOURS = 30
SERVICES = 8


def _soak() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "scripts" / "soak.py"
    spec = importlib.util.spec_from_file_location("mdm_soak", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


soak = _soak()


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    db = tmp_path_factory.mktemp("soak") / "soak.sqlite3"
    return soak.run(hours=HOURS, services=SERVICES, models=2, step_s=30, flush_every_s=60, storage=db)


def test_one_sample_per_hour(samples: list[Any]) -> None:
    assert [s.hour for s in samples] == list(range(HOURS + 1))


def test_engine_memory_plateaus_once_the_minute_tier_is_full(samples: list[Any]) -> None:
    full = [s for s in samples if s.hour >= soak.PLATEAU_FROM_H]
    plateau = [s.plateau_bytes for s in full]
    spread = max(plateau) - min(plateau)
    table = "\n".join(soak.row(s) for s in samples)
    assert spread < 0.002 * max(plateau), f"plateau_bytes spread {spread:,} B after 24 h:\n{table}"
    fit = soak.fit_samples(samples, lambda s: s.plateau_bytes, fit_hours=24)
    assert fit is not None and fit.points == len(full)
    assert fit.slope_mib_h * 1024 < 1.0, f"plateau_bytes grows {fit.slope_mib_h * 1024:.3f} KiB/h:\n{table}"


def test_the_plateau_is_the_full_tiers_not_an_empty_monitor(samples: list[Any]) -> None:
    by_hour = {s.hour: s for s in samples}
    # The minute tier fills for 24 h: memory keeps rising until then.
    assert by_hour[24].plateau_bytes > 1.5 * by_hour[6].plateau_bytes
    # The hour tier grows by one bucket per service per hour, by design.
    assert by_hour[HOURS].hour_tier_bytes > by_hour[soak.PLATEAU_FROM_H].hour_tier_bytes
    assert by_hour[HOURS].memory_bytes > by_hour[soak.PLATEAU_FROM_H].memory_bytes


def test_ring_capacity_follows_the_engine() -> None:
    # push_capped: doubling from 8, capped at the tier's slots.
    assert [soak.ring_capacity(n) for n in (0, 1, 8, 9, 16, 17, 33, 65, 513, 720)] == [
        0, 8, 8, 16, 16, 32, 64, 128, 720, 720,
    ]  # fmt: skip
