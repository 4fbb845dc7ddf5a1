"""`Job`: one generation request, from submission to result.

::

    with monitor.jobs.job("comfyui", model="sdxl.safetensors", workflow="shot") as job:
        job.started()                  # optional: when the backend began
        run()                          # an exception records a failure and propagates

    job = handle.job("comfyui", model="flux")       # asynchronous clients
    ... job.started(); job.progress(0.4); job.finish(ok=False, error="oom")

A job never raises into the code it instruments: bad input and calls after
``finish`` are reported to its sink, which counts them (and raises only in
``strict`` mode).  Times come from ``time.perf_counter`` (durations) and
one ``time.time`` at submission (the wall-clock anchor of the row).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from types import MappingProxyType, TracebackType
from typing import Literal, Protocol

from .. import _core
from ..errors import InvalidValueError
from .rows import JobRow, clean_label, clean_tags

__all__ = ["Job", "JobSink", "PeakVram", "new_job"]

_perf = time.perf_counter
_wall = time.time
_MAX_MS = _core.MAX_DURATION_MS
_NO_TAGS: Mapping[str, str] = MappingProxyType({})
#: (service, model, workflow) triples that passed the checks of ``new_job``
#: unchanged (strings within the limits), so repeats skip them.
_CHECKED: set[tuple[object, object, object]] = set()


#: ``(service, start, end) -> peak VRAM bytes or None``: the highest
#: ``vram_used_bytes`` reading of the service between two UTC epoch times.
PeakVram = Callable[[str, float, float], "float | None"]


class JobSink(Protocol):
    """Where a job reports: a monitor's ``JobTracker`` or the process-wide
    shared handle (which forwards to whichever monitor is published when
    the job finishes)."""

    def job_finished(self, job: Job) -> None: ...
    def job_fault(self, kind: str, message: str) -> None: ...


class Job:
    """A job in flight (see the module doc).  Read its state from the
    attributes; change it only through the methods."""

    __slots__ = (
        "service",
        "model",
        "workflow",
        "tags",
        "job_id",
        "submitted_at",
        "progress_fraction",
        "error",
        "ok",
        "_sink",
        "_t0",
        "_t_start",
        "_t_end",
        "_row",
        "_progress_at",
    )
    # Slot types (set in __init__; a chained None store leaves them untyped).
    _t_start: float | None
    _t_end: float | None
    progress_fraction: float | None
    ok: bool | None
    error: str | None
    _row: JobRow | None
    _progress_at: float | None

    def __init__(
        self,
        sink: JobSink,
        service: str,
        model: str | None,
        workflow: str | None,
        tags: Mapping[str, str],
        job_id: str | None,
    ) -> None:
        self.service = service
        self.model = model
        self.workflow = workflow
        self.tags = tags
        self.job_id = job_id
        self.submitted_at = _wall()
        self._t0 = _perf()
        # One chained store: this constructor is on the recording path.
        self._t_start = self._t_end = self.progress_fraction = self.ok = self.error = self._row = None
        self._progress_at = None
        self._sink = sink

    @property
    def key(self) -> int:
        """Identifies the job among those not finished (its object id: a
        job in flight is referenced by its tracker, so the id is unique)."""
        return id(self)

    # ---- state -------------------------------------------------------------

    @property
    def state(self) -> Literal["queued", "running", "finished"]:
        if self._t_end is not None:
            return "finished"
        return "queued" if self._t_start is None else "running"

    @property
    def started_at(self) -> float | None:
        """UTC epoch seconds the job started, if ``started()`` was called."""
        return None if self._t_start is None else self.submitted_at + (self._t_start - self._t0)

    @property
    def finished_at(self) -> float | None:
        return None if self._t_end is None else self.submitted_at + (self._t_end - self._t0)

    def elapsed_s(self) -> float:
        """Seconds since submission (until the result once finished)."""
        return (self._t_end if self._t_end is not None else time.perf_counter()) - self._t0

    def progress_stalled_s(self) -> float | None:
        """Seconds since the reported progress last moved; None when the
        job reports none (or is finished)."""
        if self._progress_at is None or self._t_end is not None:
            return None
        return _perf() - self._progress_at

    @property
    def queue_wait_ms(self) -> float | None:
        """Submission to start; ``None`` when the start was never reported."""
        if self._t_start is None:
            return None
        return min((self._t_start - self._t0) * 1e3, _core.MAX_DURATION_MS)

    @property
    def processing_ms(self) -> float | None:
        """Start to result (submission to result when the start is unknown)."""
        if self._t_end is None:
            return None
        start = self._t0 if self._t_start is None else self._t_start
        return min((self._t_end - start) * 1e3, _core.MAX_DURATION_MS)

    def timings_ms(self) -> tuple[float | None, float]:
        """``(queue wait or None, processing)`` of a finished job."""
        end = self._t_end
        assert end is not None, "timings of a job still running"
        start = self._t_start
        if start is None:
            return None, min((end - self._t0) * 1e3, _MAX_MS)
        return min((start - self._t0) * 1e3, _MAX_MS), min((end - start) * 1e3, _MAX_MS)

    def row(self, peak_vram: PeakVram | None = None) -> JobRow:
        """The finished job as a row (built once; ``peak_vram`` answers the
        backend's peak VRAM during the job, when it was polled)."""
        if self._row is not None:
            return self._row
        wait, processing = self.timings_ms()
        finished = self.finished_at
        assert finished is not None and self.ok is not None
        row = JobRow(
            service=self.service,
            model=self.model,
            workflow=self.workflow,
            job_id=self.job_id,
            tags=self.tags,
            source="user",
            submitted_at=self.submitted_at,
            started_at=self.started_at,
            finished_at=finished,
            queue_wait_ms=wait,
            processing_ms=processing,
            ok=self.ok,
            error=self.error,
            peak_vram_bytes=None if peak_vram is None else peak_vram(self.service, self.started_at or self.submitted_at, finished),
        )
        self._row = row
        return row

    # ---- reporting -----------------------------------------------------------

    def started(self, job_id: str | None = None) -> Job:
        """The backend began executing (its queue wait ends now); ``job_id``
        is the backend's id when it is known by then."""
        if self._t_end is not None:
            self._sink.job_fault("after_finish", f"job {self.key} of {self.service!r}: started() after finish()")
            return self
        if self._t_start is None:
            self._t_start = _perf()
        if job_id is not None:
            self._set_id(job_id)
        return self

    def progress(self, fraction: float) -> Job:
        """Progress from 0 to 1 (shown on running jobs)."""
        if not (isinstance(fraction, (int, float)) and not isinstance(fraction, bool) and 0 <= fraction <= 1):
            self._sink.job_fault("invalid_value", f"progress({fraction!r}): expected a number from 0 to 1")
            return self
        if self.progress_fraction != float(fraction) or self._progress_at is None:
            self._progress_at = _perf()
        self.progress_fraction = float(fraction)
        if self._t_start is None:
            self._t_start = _perf()  # progress means it runs
        return self

    def finish(self, ok: bool = True, error: str | None = None, job_id: str | None = None) -> None:
        """The result arrived: ``ok=False`` marks a failure of type ``error``
        (default ``"error"``).  A second call is a fault, not a second job."""
        if self._t_end is not None:
            self._sink.job_fault("after_finish", f"job {self.key} of {self.service!r}: finish() called twice")
            return
        self._t_end = _perf()
        if job_id is not None:
            self._set_id(job_id)
        if ok:
            self.ok = True
        else:
            self.ok = False
            if error is None or (isinstance(error, str) and error and error.isprintable()):
                self.error = (error or "error")[:64]
            else:
                self._sink.job_fault("invalid_value", f"finish(error={error!r}): expected a printable string")
                self.error = "error"
        self._sink.job_finished(self)

    def _set_id(self, job_id: object) -> None:
        if isinstance(job_id, str) and job_id and job_id.isprintable():
            self.job_id = job_id[:256]
        else:
            self._sink.job_fault("invalid_value", f"job_id={job_id!r}: expected a printable string")

    # ---- context manager -------------------------------------------------------

    def __enter__(self) -> Job:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        if self._t_end is None:
            if exc_type is None:
                self.finish()
            else:
                self.finish(ok=False, error=exc_type.__name__)
        return False  # the caller sees its own exception, unchanged

    def __repr__(self) -> str:
        what = f"{self.service!r}" + (f" model={self.model!r}" if self.model else "")
        return f"<Job {self.key} {what} {self.state}>"




def new_job(
    sink: JobSink,
    service: str,
    *,
    model: str | None = None,
    workflow: str | None = None,
    tags: Mapping[str, object] | None = None,
    job_id: str | None = None,
) -> Job:
    """A job reporting to ``sink``, its input checked: a bad label, tag set
    or id is reported to the sink (which counts it or, strict, raises) and
    left out; the job is still timed under what is valid."""
    if job_id is None and not tags:
        labels = (service, model, workflow)
        if labels in _CHECKED:  # the common case: labels already checked once
            return Job(sink, service, model, workflow, _NO_TAGS, None)
    else:
        labels = None
    if not (isinstance(service, str) and 0 < len(service) <= _core.MAX_NAME_CHARS and service.isprintable()):
        sink.job_fault(
            "invalid_name",
            f"job service={service!r}: expected a printable name of 1 to {_core.MAX_NAME_CHARS} characters",
        )
        service = "invalid"
    checked: list[str | None] = []
    for name, value in (("model", model), ("workflow", workflow), ("job_id", job_id)):
        try:
            checked.append(clean_label(name, value))
        except InvalidValueError as e:
            sink.job_fault("invalid_value", f"job of {service!r}: {e}")
            checked.append(None)
    try:
        kept, dropped = clean_tags(tags)
    except InvalidValueError as e:
        sink.job_fault("invalid_value", f"job of {service!r}: {e}")
        kept, dropped = {}, 0
    if dropped:
        sink.job_fault("tags_dropped", f"job of {service!r}: {dropped} tags past the limit were dropped")
    if checked == [model, workflow, job_id] and service != "invalid" and labels is not None:
        if len(_CHECKED) >= 4096:  # a cache of valid label triples, not a record
            _CHECKED.clear()
        _CHECKED.add(labels)
    return Job(sink, service, checked[0], checked[1], kept, checked[2])
