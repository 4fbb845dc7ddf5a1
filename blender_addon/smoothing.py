"""Smoothing of the sidebar's bars between refreshes.  Pure Python, no
``bpy`` (tested without Blender).

The rule, per bar and per refresh, with ``target`` the bar's true length
(0…1) and ``level`` its colour (ok/warn/bad/none).  A refresh is a timer
tick, at most one per :data:`STEP_S` seconds: ticks run sooner (a range
or preference edit refreshes at once) show jumps but do not hurry a glide.

- the bar moves a fraction :data:`ALPHA` of the way from where it is drawn
  to ``target`` (exponential smoothing), and lands on ``target`` once
  within :data:`SNAP` of it, so it settles (and stops asking for redraws)
  after a few refreshes: a full-length swing in 7 at ALPHA 0.5;
- it jumps to ``target`` at once, never smoothed, when
  - the level changed (a threshold colour was crossed: the colour and the
    length always agree), or
  - ``target`` is above every target of the last :data:`PEAK_REFRESHES`
    refreshes (a new maximum: a spike shows in the refresh it happens);
- the first value of a bar, and every bar after a change of range or of
  thresholds (:meth:`BarSmoother.begin` with a new context), is drawn as is.

So only moves inside one colour band and below a recent high glide; the
numbers written on the bars are always the true values, and sparklines are
the raw series.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass

__all__ = ["ALPHA", "PEAK_REFRESHES", "SNAP", "STEP_S", "BarSmoother", "Smoothed", "smooth_step"]

#: Fraction of the remaining distance a bar moves per refresh.
ALPHA = 0.5
#: Within this of the target (1 % of the bar) a bar lands on it.
SNAP = 0.01
#: Refreshes a target counts for the "new maximum" rule.
PEAK_REFRESHES = 30
#: Least time between two smoothing steps (the timer runs every 1 to 5 s).
STEP_S = 0.5


@dataclass(frozen=True)
class Smoothed:
    """One bar's state: the length drawn, its level and the recent targets."""

    shown: float
    level: str
    recent: tuple[float, ...] = ()


def smooth_step(
    prev: Smoothed | None,
    target: float,
    level: str,
    alpha: float = ALPHA,
    snap: float = SNAP,
    peak_refreshes: int = PEAK_REFRESHES,
    advance: bool = True,
) -> Smoothed:
    """The bar's state after one refresh (see the module's rule).  With
    ``advance`` False (a tick sooner than STEP_S after the last step) a
    jump still shows, but a glide waits for the next step."""
    t = min(1.0, max(0.0, target)) if math.isfinite(target) else 0.0
    recent = ((prev.recent if prev is not None else ()) + (t,))[-max(1, peak_refreshes) :]
    if prev is None or level != prev.level or not prev.recent or t > max(prev.recent):
        return Smoothed(t, level, recent)
    if not advance:
        return prev
    shown = prev.shown + alpha * (t - prev.shown)
    if abs(t - shown) <= snap:
        shown = t
    return Smoothed(shown, level, recent)


class BarSmoother:
    """The smoothing state of every bar on screen, keyed by the caller
    (e.g. ``(service, "p95")``).  Per refresh: :meth:`begin` with what
    the bars are measured against, :meth:`factor` for each bar, :meth:`end`
    (forgets bars no longer drawn)."""

    def __init__(self, step_s: float = STEP_S) -> None:
        self._state: dict[Hashable, Smoothed] = {}
        self._context: Hashable = None
        self._touched: set[Hashable] = set()
        self._step_s = step_s
        self._last_step: float | None = None
        self._advance = True

    def begin(self, context: Hashable = None, now: float | None = None) -> None:
        """Starts a refresh; a ``context`` (range, thresholds) other than
        the last one's draws every bar as is this time.  ``now`` (a
        monotonic clock): glides step only when ``step_s`` has passed since
        their last step (None: always)."""
        if context != self._context:
            self._state.clear()
            self._context = context
        self._touched = set()
        self._advance = now is None or self._last_step is None or now - self._last_step >= self._step_s
        if self._advance and now is not None:
            self._last_step = now

    def factor(self, key: Hashable, target: float, level: str) -> float:
        st = smooth_step(self._state.get(key), target, level, advance=self._advance)
        self._state[key] = st
        self._touched.add(key)
        return st.shown

    def end(self) -> None:
        for key in [k for k in self._state if k not in self._touched]:
            del self._state[key]

    def __len__(self) -> int:
        return len(self._state)
