"""A finished job as one row: the single home of the job row's fields.

Rows are what the history file's ``jobs`` table, the CSV/JSON export and
the recent-jobs views hold.  Tags live only here (never as engine series):
their cardinality is free, so memory is bounded by the row buffers alone.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from ..errors import InvalidValueError

__all__ = [
    "JOB_COLUMNS",
    "MAX_LABEL_CHARS",
    "MAX_TAGS",
    "SOURCES",
    "JobRow",
    "QueuedJob",
    "clean_label",
    "clean_tags",
]

#: Longest model / workflow / job id / error text kept (longer ones are cut).
MAX_LABEL_CHARS = 256
#: Most tags a job keeps; further ones are dropped (and counted by the tracker).
MAX_TAGS = 16
#: Who saw the job: the user's code, or a collector reading the backend.
SOURCES = ("user", "backend")


@dataclass(frozen=True, slots=True)
class JobRow:
    """One finished job.  Times are UTC epoch seconds; durations are
    milliseconds, ``None`` where unknown (never a 0 that looks real)."""

    service: str
    model: str | None
    workflow: str | None
    job_id: str | None
    tags: Mapping[str, str]
    source: str
    submitted_at: float
    started_at: float | None
    finished_at: float
    queue_wait_ms: float | None
    processing_ms: float
    ok: bool
    error: str | None
    peak_vram_bytes: float | None = None

    @property
    def total_ms(self) -> float:
        """Submission to result: queue wait plus processing (processing
        alone spans it when the start is unknown)."""
        return (self.queue_wait_ms or 0.0) + self.processing_ms

    def as_dict(self) -> dict[str, Any]:
        """Plain values in ``JOB_COLUMNS`` order (tags as a dict)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["tags"] = dict(self.tags)
        d["total_ms"] = self.total_ms
        return {c: d[c] for c in JOB_COLUMNS}

    def as_stored(self) -> tuple[Any, ...]:
        """Values for the ``jobs`` table, in ``STORED_COLUMNS`` order."""
        return tuple(
            json.dumps(dict(self.tags), ensure_ascii=False, sort_keys=True) if c == "tags" else getattr(self, c)
            for c in STORED_COLUMNS
        )

    @classmethod
    def from_stored(cls, values: Sequence[Any]) -> JobRow:
        """A row read back from the ``jobs`` table; ``InvalidValueError``
        for anything malformed (a stored row is checked, never trusted)."""
        if len(values) != len(STORED_COLUMNS):
            raise InvalidValueError(f"a stored job row has {len(values)} fields: expected {len(STORED_COLUMNS)}")
        d = dict(zip(STORED_COLUMNS, values))
        try:
            tags = json.loads(d["tags"]) if d["tags"] else {}
        except (TypeError, ValueError) as e:
            raise InvalidValueError(f"stored job tags {d['tags']!r} are not JSON: {e}") from None
        d["tags"] = clean_tags(tags)[0]
        d["ok"] = bool(d["ok"])
        row = cls(**d)
        row.check()
        return row

    def check(self) -> None:
        """Raises ``InvalidValueError`` naming the first bad field."""
        if not (isinstance(self.service, str) and self.service):
            raise InvalidValueError(f"job service={self.service!r}: expected a non-empty string")
        if self.source not in SOURCES:
            raise InvalidValueError(f"job source={self.source!r}: expected one of {', '.join(SOURCES)}")
        for name in ("submitted_at", "finished_at", "processing_ms"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise InvalidValueError(f"job {name}={v!r}: expected a finite number >= 0")
        for name in ("started_at", "queue_wait_ms", "peak_vram_bytes"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise InvalidValueError(f"job {name}={v!r}: expected a finite number >= 0 or None")
        if self.finished_at < self.submitted_at:
            raise InvalidValueError(
                f"job finished_at={self.finished_at!r} is before submitted_at={self.submitted_at!r}"
            )


@dataclass(frozen=True, slots=True)
class QueuedJob:
    """A job a collector sees waiting or running on its backend (ComfyUI's
    ``/queue``, A1111's progress).  Reads like a running ``Job`` for views:
    ``service``, ``model``, ``workflow``, ``job_id``, ``state``,
    ``submitted_at`` (None when the backend does not say), ``progress_fraction``
    and ``elapsed_s()``."""

    service: str
    job_id: str
    state: str  # "queued" | "running"
    model: str | None = None
    workflow: str | None = None
    submitted_at: float | None = None
    started_at: float | None = None
    progress_fraction: float | None = None
    #: When the collector first saw it (UTC epoch seconds): elapsed time
    #: counts from here when the backend gives no submission time.
    seen_at: float = 0.0

    @property
    def key(self) -> tuple[str, str]:
        return (self.service, self.job_id)

    def elapsed_s(self, now: float | None = None) -> float:
        """Seconds since submission (or since first seen)."""
        t = time.time() if now is None else now
        return max(0.0, t - (self.submitted_at if self.submitted_at is not None else self.seen_at))


#: Columns of an exported job row (CSV header, JSON keys), in order.
JOB_COLUMNS: tuple[str, ...] = (
    "service",
    "model",
    "workflow",
    "job_id",
    "source",
    "submitted_at",
    "started_at",
    "finished_at",
    "queue_wait_ms",
    "processing_ms",
    "total_ms",
    "ok",
    "error",
    "peak_vram_bytes",
    "tags",
)
#: Columns of the ``jobs`` table (``total_ms`` is derived, not stored).
STORED_COLUMNS: tuple[str, ...] = tuple(c for c in JOB_COLUMNS if c != "total_ms")


def clean_label(name: str, value: object) -> str | None:
    """A model / workflow / job id / error as stored: ``None`` stays
    ``None``; a string is cut to ``MAX_LABEL_CHARS``; anything else is
    ``InvalidValueError``."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidValueError(f"{name}={value!r}: expected a string or None")
    if not value or not value.isprintable():
        raise InvalidValueError(f"{name}={value!r}: expected a non-empty printable string")
    return value[:MAX_LABEL_CHARS]


def clean_tags(tags: object) -> tuple[dict[str, str], int]:
    """``(tags kept, tags dropped)``: string keys and values (others are
    turned into strings), cut to ``MAX_LABEL_CHARS``, at most ``MAX_TAGS``."""
    if tags is None:
        return {}, 0
    if not isinstance(tags, Mapping):
        raise InvalidValueError(f"tags={tags!r}: expected a mapping of names to values")
    kept: dict[str, str] = {}
    for k, v in tags.items():
        if len(kept) == MAX_TAGS:
            break
        kept[str(k)[:MAX_LABEL_CHARS]] = str(v)[:MAX_LABEL_CHARS]
    return kept, len(tags) - len(kept)
