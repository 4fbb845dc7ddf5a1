"""Time ranges of exports and history reads: a window ending now, or a
start and an optional end, in whole UTC seconds.  One home for the rules
(``export`` and the jobs export use it)."""

from __future__ import annotations

import datetime as _dt
import math
import numbers
from dataclasses import dataclass

from .errors import InvalidWindowError
from .windows import window_seconds

__all__ = ["END_SLACK_S", "TimeRange", "epoch_arg", "iso_utc", "resolve_range"]

#: An explicit ``end`` up to this far past the monitor's clock means "now"
#: (``time.time()`` and a monitor's monotonic clock drift apart slowly).
END_SLACK_S = 60.0


@dataclass(frozen=True)
class TimeRange:
    """Seconds ``[lo, hi)`` in UTC epoch seconds; bucket starts in it are exported."""

    lo: int
    hi: int
    ends_now: bool
    #: The window as given (passed on to ``Monitor.stats``), None for start/end.
    window: str | float | None
    label: str | None


def epoch_arg(name: str, v: object) -> float:
    t = float(v) if isinstance(v, numbers.Real) and not isinstance(v, bool) else math.nan
    if not (math.isfinite(t) and t >= 0):
        raise InvalidWindowError(f"{name}={v!r} is not a time: expected UTC epoch seconds (a finite number >= 0)")
    return t


def iso_utc(epoch_s: float) -> str:
    return _dt.datetime.fromtimestamp(epoch_s, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def resolve_range(
    window: str | float | None, start: float | None, end: float | None, now: float
) -> TimeRange:
    now_s = math.floor(now)
    if window is not None and (start is not None or end is not None):
        raise InvalidWindowError(
            f"window={window!r} and start={start!r}/end={end!r} both given: expected either a window "
            "ending now or a start (and optional end), not both"
        )
    if start is None and end is not None:
        raise InvalidWindowError(f"end={end!r} needs a start=: expected start= (UTC epoch seconds) as well")
    if start is None:
        w = "24h" if window is None else window
        secs = window_seconds(w)
        label = w if isinstance(w, str) else f"{secs}s"
        return TimeRange(now_s + 1 - secs, now_s + 1, True, w, label)
    t0 = epoch_arg("start", start)
    t1 = now if end is None else epoch_arg("end", end)
    if t0 > now:
        raise InvalidWindowError(
            f"start={start!r} ({iso_utc(t0)}) is in the future: expected a time up to now ({now:.3f}, {iso_utc(now)})"
        )
    if t0 >= t1:
        raise InvalidWindowError(
            f"start={start!r} is not before end={t1!r}: expected start < end (UTC epoch seconds)"
        )
    if t1 > now + END_SLACK_S:
        raise InvalidWindowError(
            f"end={end!r} ({iso_utc(t1)}) is in the future: expected a time up to now ({now:.3f}, {iso_utc(now)})"
        )
    ends_now = t1 >= now
    lo, hi = math.ceil(t0), (now_s + 1 if ends_now else math.ceil(t1))
    if hi <= lo:
        raise InvalidWindowError(
            f"start={start!r} to end={end!r} holds no whole second: expected a range of at least 1 s"
        )
    return TimeRange(lo, hi, ends_now, None, None)
