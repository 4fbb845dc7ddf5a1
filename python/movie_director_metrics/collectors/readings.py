"""Numbers read from a backend's reply, checked against what the engine
accepts before anything is recorded.

A JSON reply can hold any number: ``1e300`` queued prompts, ``-5`` bytes
of RAM, an integer with 400 digits.  The engine refuses readings outside
its ranges (``InvalidValueError``), and ``float()`` of a huge integer
raises ``OverflowError``; neither may escape a collector.  The kinds read
their numbers through these functions inside ``fetch``'s ``parse`` step,
so an impossible reading is a ``ValueError`` there: the reply is recorded
and raised once as ``bad_json``, with a message that names the field, the
value and the range expected, and nothing from that reply is recorded.

Absent and non-numeric fields are not errors here (``None``): servers
leave fields out, and each kind decides what a missing one means.
"""

from __future__ import annotations

import math
from typing import Any

#: Largest queue count ``Service.set_queue`` accepts (the engine stores u32).
QUEUE_MAX = 2**32 - 1
#: Largest byte reading ``Service.set_resource`` accepts (``Gauge::range``).
BYTES_MAX = 1e18


def _shown(value: Any) -> str:
    """``value`` for a message: a huge integer as its digit count, not its
    digits (a 400-digit number would swamp the status line)."""
    if isinstance(value, int) and abs(value) >= 10**20:
        return f"an integer of {len(str(abs(value)))} digits"
    return repr(value)


def number(value: Any, what: str, *, high: float, low: float = 0.0) -> float | None:
    """``value`` as a float in ``[low, high]``; None when it is not a JSON
    number (absent, null, text, a bool).  ``ValueError`` for a number out
    of range, NaN or infinite, or too large for a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        v = float(value)
    except OverflowError:
        v = math.inf
    if not low <= v <= high:  # NaN fails both comparisons
        raise ValueError(f"{what} = {_shown(value)}: expected a number in [{low:g}, {high:g}]")
    return v


def count(value: Any, what: str, *, high: int = QUEUE_MAX) -> int | None:
    """``value`` as an integer in ``[0, high]`` (``2.0`` is 2); None when it
    is not a JSON number.  ``ValueError`` for a negative, fractional, NaN
    or too large one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not value.is_integer():  # also NaN and inf
        raise ValueError(f"{what} = {value!r}: expected a whole number in [0, {high}]")
    n = int(value)
    if not 0 <= n <= high:
        raise ValueError(f"{what} = {_shown(value)}: expected a whole number in [0, {high}]")
    return n


def byte_size(value: Any, what: str) -> float | None:
    """A size in bytes, as :func:`number` in ``[0, BYTES_MAX]``."""
    return number(value, what, high=BYTES_MAX)
