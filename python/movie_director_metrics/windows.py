"""The window grammar for code with no monitor at hand (alert rules,
exports, LLM figures).

The grammar itself lives in the engine, ``_core.parse_window``: ``"90s"``,
``"5m"``, ``"5min"``, ``"1h"``, ``"7d"`` or a number of seconds, rounded to
whole seconds, at least 1.  ``Monitor.stats`` reads its ``window`` with the
same code, so a window one part of the package accepts, every part accepts,
as the same number of seconds.  This wrapper only words the error for a
caller that has no monitor to quote (the engine's message lists a monitor's
named windows) and turns a string the engine cannot take at all (a lone
surrogate) into the same ``InvalidWindowError``.
"""

from __future__ import annotations

from . import _core
from .errors import InvalidWindowError

__all__ = ["NO_LIMIT", "window_seconds"]

#: ``max_s`` for "no upper bound here": the caller checks the length
#: against what it keeps (the monitor's tiers, the LLM buckets) and says so
#: in its own words.  The engine takes ``max_s`` as an unsigned 64-bit count.
NO_LIMIT = 2**64 - 1

#: What a window looks like, for error messages.
EXPECTED = '"90s", "5m", "1h", "24h", "7d" (<n>s, <n>m or <n>min, <n>h, <n>d) or a number of seconds'


def window_seconds(window: str | float, max_s: int = NO_LIMIT, *, name: str = "window") -> int:
    """Seconds of ``window``, from 1 to ``max_s`` (default: no upper bound,
    see :data:`NO_LIMIT`).  ``InvalidWindowError`` names ``name=window``
    and what was expected (bools, ``None``, lists are not windows)."""
    try:
        return _core.parse_window(window, max_s)
    except (InvalidWindowError, UnicodeError):
        bound = ">= 1" if max_s == NO_LIMIT else f"from 1 to {max_s}"
        raise InvalidWindowError(f"{name}={window!r} is not understood: expected e.g. {EXPECTED} {bound}") from None
