"""What :class:`~.tracker.LlmTracker` answers, and its export to a file."""

from __future__ import annotations

import csv
import datetime as _dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import IO, Any, Literal

from ..atomic import write_atomic
from ..errors import InvalidValueError
from ..paths import expand_user

__all__ = ["EXPORT_COLUMNS", "ActiveModel", "LlmStats", "write_table"]


@dataclass(frozen=True)
class LlmStats:
    """One model's (or provider's) figures over a window.

    Token counts cover requests whose usage was known (``requests -
    requests_usage_unknown``); ``reasoning`` is part of ``output``.
    ``cost_usd`` is None when any request in the window had no price;
    ``cost_known_usd`` sums the ``cost_known_requests`` that had one.
    Latency and TTFT percentiles come from the model's engine service
    (None without data, for windows its tiers do not cover, and per
    provider when it had several models: percentiles do not merge).
    """

    provider: str
    model: str | None
    service: str
    window_s: int
    requests: int
    errors: int
    error_rate: float | None
    requests_usage_unknown: int
    input_uncached: int
    cache_read: int
    cache_write: int
    output: int
    reasoning: int
    total_tokens: int
    cost_usd: float | None
    cost_known_usd: float | None
    cost_known_requests: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    output_tokens_per_s: float | None
    share_of_requests: float | None
    share_of_tokens: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Columns of ``LlmTracker.export``, in order (CSV header, JSON row keys).
EXPORT_COLUMNS = tuple(f.name for f in fields(LlmStats))


@dataclass(frozen=True)
class ActiveModel:
    """A model used in the window (``requests`` > 0) or reported loaded."""

    provider: str
    model: str
    requests: int
    last_request_at: float | None
    loaded: bool


def write_table(
    path: Path, format: Literal["csv", "json"], stats: Sequence[LlmStats], now: float, meta: Mapping[str, Any]
) -> Path:
    """Writes ``stats`` as CSV (header :data:`EXPORT_COLUMNS`, empty cells
    for None) or JSON (``meta`` plus ``generated_at`` and ``rows``),
    atomically; returns the absolute path."""
    rows = [s.as_dict() for s in stats]
    target = expand_user(path, "export path", InvalidValueError).absolute()
    if format == "csv":
        def write_csv(f: IO[str]) -> None:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(EXPORT_COLUMNS)
            w.writerows([["" if r[c] is None else r[c] for c in EXPORT_COLUMNS] for r in rows])

        write_atomic(target, write_csv)
    else:
        generated = _dt.datetime.fromtimestamp(now, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        doc = {"generated_at": generated, **meta, "rows": rows}
        write_atomic(target, lambda f: json.dump(doc, f, indent=1, allow_nan=False))
    return target
