"""Timing a block of code into a service."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from ._core import Service


@contextmanager
def timed(service: Service, error: str | None = None) -> Iterator[None]:
    """Records how long the ``with`` block took as one request of ``service``.

    An exception escaping the block records a failure whose error type is
    ``error`` or, by default, the exception's class name; the exception
    propagates unchanged.
    """
    start = time.perf_counter()
    try:
        yield
    except BaseException as exc:
        service.record(
            (time.perf_counter() - start) * 1e3, ok=False, error=error or type(exc).__name__
        )
        raise
    service.record((time.perf_counter() - start) * 1e3)
