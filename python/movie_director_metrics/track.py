"""Instrumenting your own code: time a block or a function as one request
of a service.

::

    with monitor.track("comfyui", "upscale"):     # service "comfyui:upscale"
        run_upscale()

    @monitor.track("ollama")
    def ask(prompt: str) -> str: ...

An exception records a failure whose error type is the exception's class
name, then propagates unchanged (the same object, its traceback intact).
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal, ParamSpec, Protocol, TypeVar, cast

from ._core import MAX_DURATION_MS, Service

P = ParamSpec("P")
R = TypeVar("R")

__all__ = ["Tracker", "track"]


def _record(service: Service, start: float, exc_type: type[BaseException] | None) -> None:
    elapsed_ms = min((time.perf_counter() - start) * 1e3, MAX_DURATION_MS)
    if exc_type is None:
        service.record(elapsed_ms)
    else:
        service.record(elapsed_ms, ok=False, error=exc_type.__name__)


class _HasService(Protocol):
    def service(self, name: str) -> Service: ...


#: A monitor (anything with ``.service(name)``) or a function name -> Service.
ServiceSource = _HasService | Callable[[str], Service]


class Tracker:
    """Times ``with`` blocks and decorated calls into one service.

    One tracker may be entered from many threads and nested: each ``with``
    entry keeps its own start time (per thread, innermost first; a tracker
    object shared by interleaved asyncio tasks should be used as a
    decorator, or created per block).  The service
    handle is looked up at each entry, so a getter may hand out a new
    monitor's service later.
    """

    def __init__(self, source: ServiceSource, service: str, op: str | None = None) -> None:
        if not isinstance(service, str) or (op is not None and not isinstance(op, str)):
            raise TypeError(f"track(service={service!r}, op={op!r}): expected strings")
        self.name = service if op is None else f"{service}:{op}"
        lookup = getattr(source, "service", None)
        if callable(lookup):
            self._lookup: Callable[[str], Service] = lookup
        elif callable(source):
            self._lookup = source
        else:
            raise TypeError(f"track() needs a monitor or a name -> Service function, not {type(source).__name__}")
        self._starts = threading.local()

    def _service(self) -> Service:
        return self._lookup(self.name)

    # ---- context manager ------------------------------------------------------

    def __enter__(self) -> Tracker:
        stack: list[tuple[Service, float]] | None = getattr(self._starts, "stack", None)
        if stack is None:
            stack = self._starts.stack = []
        # Looked up before the clock starts: the lookup is not the block's time.
        stack.append((self._service(), time.perf_counter()))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        service, start = self._starts.stack.pop()
        _record(service, start, exc_type)
        return False  # never swallow: the caller sees the original exception

    # ---- decorator --------------------------------------------------------------

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        """Times every call of ``func``; for a coroutine function, the
        awaited run (not the creation of the coroutine).  Each call keeps
        its start time in its own frame, so concurrent calls -- threads or
        interleaved asyncio tasks -- never mix their timings."""
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                service = self._service()
                start = time.perf_counter()
                try:
                    result = await func(*args, **kwargs)
                except BaseException as e:
                    _record(service, start, type(e))
                    raise
                _record(service, start, None)
                return result

            return cast(Callable[P, R], run_async)

        @functools.wraps(func)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            service = self._service()
            start = time.perf_counter()
            try:
                result = func(*args, **kwargs)
            except BaseException as e:
                _record(service, start, type(e))
                raise
            _record(service, start, None)
            return result

        return run

    def __repr__(self) -> str:
        return f"Tracker({self.name!r})"


def track(source: ServiceSource, service: str, op: str | None = None) -> Tracker:
    """A :class:`Tracker` recording into ``service`` (or ``"service:op"``)
    of ``source`` (a ``Monitor``, an engine ``_core.Monitor``, or a
    function name -> Service).  Use it as ``with track(...):`` or as a
    decorator."""
    return Tracker(source, service, op)
