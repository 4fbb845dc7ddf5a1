"""Per-request rows: what :class:`~.tracker.LlmTracker` hands to storage
and takes back at start.

A row is a dict with the keys :data:`ROW_COLUMNS` (also accepted as a
sequence in that order, as a SQLite cursor gives it):

==================  ========================================================
at_s                UTC epoch seconds of the request (REAL, not null)
provider, model     TEXT, not null (provider normalised, lower case)
input_uncached,     INTEGER token counts; all NULL when usage_known is 0
cache_read,         (unknown usage is never stored as zeros)
cache_write,
output, reasoning
cost_usd            REAL, NULL when there was no price
latency_ms          REAL, not null
ttft_ms             REAL, NULL when not measured
ok                  INTEGER 0/1
error               TEXT, NULL on success
usage_known         INTEGER 0/1
output_tokens_per_s REAL, NULL unless the backend reported or timing gave it
==================  ========================================================
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import InvalidValueError

__all__ = ["ROW_COLUMNS", "TOKEN_COLUMNS", "check_row"]

TOKEN_COLUMNS = ("input_uncached", "cache_read", "cache_write", "output", "reasoning")

ROW_COLUMNS = (
    "at_s",
    "provider",
    "model",
    *TOKEN_COLUMNS,
    "cost_usd",
    "latency_ms",
    "ttft_ms",
    "ok",
    "error",
    "usage_known",
    "output_tokens_per_s",
)

Row = dict[str, Any]


def _number(row: Mapping[str, Any], key: str, *, nullable: bool) -> float | None:
    v = row.get(key)
    if v is None and nullable:
        return None
    if isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v)) and float(v) >= 0:
        return float(v)
    raise InvalidValueError(f"row {key}={v!r} is invalid: expected a finite number >= 0{' or null' if nullable else ''}")


def _flag(row: Mapping[str, Any], key: str) -> bool:
    v = row.get(key)
    if isinstance(v, bool) or v in (0, 1):
        return bool(v)
    raise InvalidValueError(f"row {key}={v!r} is invalid: expected true/false (or 0/1)")


def check_row(raw: Mapping[str, Any] | Sequence[Any]) -> Row:
    """A validated copy of ``raw`` (dict or sequence in ROW_COLUMNS order);
    ``InvalidValueError`` names the bad column."""
    if isinstance(raw, Mapping):
        row = dict(raw)
    elif isinstance(raw, Sequence) and not isinstance(raw, (str, bytes)):
        if len(raw) not in (len(ROW_COLUMNS), len(ROW_COLUMNS) - 1):  # output_tokens_per_s is optional
            raise InvalidValueError(f"row has {len(raw)} values: expected {len(ROW_COLUMNS)} ({', '.join(ROW_COLUMNS)})")
        row = dict(zip(ROW_COLUMNS, raw))
    else:
        raise InvalidValueError(f"row {raw!r} is not a row: expected a dict or a sequence of {len(ROW_COLUMNS)} values")
    for key in ("provider", "model"):
        if not (isinstance(row.get(key), str) and row[key]):
            raise InvalidValueError(f"row {key}={row.get(key)!r} is invalid: expected a non-empty string")
    out: Row = {"at_s": _number(row, "at_s", nullable=False), "provider": row["provider"], "model": row["model"]}
    known = _flag(row, "usage_known")
    for key in TOKEN_COLUMNS:
        v = row.get(key)
        if not known:
            out[key] = None
        elif isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            out[key] = v
        else:
            raise InvalidValueError(f"row {key}={v!r} is invalid: expected an integer >= 0 (usage_known is true)")
    if known and out["reasoning"] > out["output"]:
        raise InvalidValueError(f"row reasoning={out['reasoning']} exceeds output={out['output']}")
    out["cost_usd"] = _number(row, "cost_usd", nullable=True)
    out["latency_ms"] = _number(row, "latency_ms", nullable=False)
    out["ttft_ms"] = _number(row, "ttft_ms", nullable=True)
    out["ok"] = _flag(row, "ok")
    error = row.get("error")
    if error is not None and not isinstance(error, str):
        raise InvalidValueError(f"row error={error!r} is invalid: expected a string or null")
    out["error"] = error
    out["usage_known"] = known
    out["output_tokens_per_s"] = _number(row, "output_tokens_per_s", nullable=True)
    return out
