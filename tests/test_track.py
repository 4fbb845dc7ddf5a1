"""``track``: timing your own code into a service, as a context manager and
as a decorator, with failures typed by exception class."""

from __future__ import annotations

import asyncio
import threading
import time
import traceback
from collections.abc import Iterator

import pytest

from movie_director_metrics import Monitor, _core
from movie_director_metrics.track import Tracker, track


@pytest.fixture
def monitor() -> Iterator[Monitor]:
    with Monitor() as m:
        yield m


class RenderFailed(RuntimeError):
    pass


def test_with_block_records_its_elapsed_time(monitor: Monitor) -> None:
    with monitor.track("comfyui"):
        time.sleep(0.02)
    s = monitor.stats("comfyui")
    assert (s.count, s.errors) == (1, 0)
    assert s.min_ms is not None and 20 <= s.min_ms < 500


def test_op_names_the_service(monitor: Monitor) -> None:
    with monitor.track("comfyui", "upscale"):
        pass
    with monitor.track("comfyui", "upscale"):
        pass
    assert monitor.stats("comfyui:upscale").count == 2
    assert "comfyui" not in monitor.services()


def test_exception_recorded_by_class_name_and_reraised_unchanged(monitor: Monitor) -> None:
    error = RenderFailed("out of memory")

    def render() -> None:
        raise error

    with pytest.raises(RenderFailed) as caught:
        with monitor.track("comfyui", "render"):
            render()
    assert caught.value is error  # the same object
    frames = [f.name for f in traceback.extract_tb(caught.value.__traceback__)]
    assert "render" in frames  # where it was raised is still in the traceback
    s = monitor.stats("comfyui:render")
    assert (s.count, s.errors, s.error_counts) == (1, 1, {"RenderFailed": 1})
    assert s.last_error == "RenderFailed"


def test_decorator_on_a_function(monitor: Monitor) -> None:
    @monitor.track("ollama", "generate")
    def generate(prompt: str, *, tokens: int = 3) -> str:
        """Docs survive."""
        if prompt == "boom":
            raise KeyError(prompt)
        time.sleep(0.01)
        return prompt * tokens

    assert generate.__name__ == "generate" and generate.__doc__ == "Docs survive."
    assert generate("a") == "aaa"
    assert generate("b", tokens=1) == "b"
    with pytest.raises(KeyError):
        generate("boom")
    s = monitor.stats("ollama:generate")
    assert (s.count, s.errors, s.error_counts) == (3, 1, {"KeyError": 1})
    assert s.max_ms is not None and s.max_ms >= 10


def test_decorator_on_a_coroutine_function_times_the_awaited_run(monitor: Monitor) -> None:
    @monitor.track("llm")
    async def ask(delay_s: float) -> str:
        await asyncio.sleep(delay_s)
        if delay_s > 0.025:
            raise TimeoutError("too slow")
        return "ok"

    async def main() -> list[object]:
        return list(await asyncio.gather(ask(0.02), ask(0.02), ask(0.03), return_exceptions=True))

    results = asyncio.run(main())
    assert results[:2] == ["ok", "ok"] and isinstance(results[2], TimeoutError)
    s = monitor.stats("llm")
    assert (s.count, s.errors, s.error_counts) == (3, 1, {"TimeoutError": 1})
    # Interleaved tasks keep their own start times: each took its own sleep.
    assert s.min_ms is not None and s.min_ms >= 20
    assert s.max_ms is not None and 30 <= s.max_ms < 500


def test_nested_and_reused_tracker(monitor: Monitor) -> None:
    outer = monitor.track("job")
    with outer:
        time.sleep(0.01)
        with outer:  # the same object, nested
            pass
    s = monitor.stats("job")
    assert s.count == 2
    assert s.min_ms is not None and s.min_ms < 10 <= s.max_ms  # type: ignore[operator]


def test_one_tracker_from_many_threads_counts_exactly(monitor: Monitor) -> None:
    shared = monitor.track("shared")

    @monitor.track("decorated")
    def work(i: int) -> None:
        if i % 10 == 0:
            raise ValueError(i)

    def run() -> None:
        for i in range(200):
            with shared:
                pass
            try:
                work(i)
            except ValueError:
                pass

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert monitor.stats("shared").count == 1600
    d = monitor.stats("decorated")
    assert (d.count, d.errors, d.error_counts) == (1600, 160, {"ValueError": 160})


def test_sources_engine_monitor_and_getter() -> None:
    with _core.Monitor() as engine:
        with track(engine, "a"):
            pass
        looked_up: list[str] = []

        def getter(name: str) -> _core.Service:
            looked_up.append(name)
            return engine.service(name)

        t = track(getter, "b", "op")
        assert isinstance(t, Tracker) and t.name == "b:op"
        with t:
            pass
        with t:
            pass
        assert looked_up == ["b:op", "b:op"]  # looked up at each use
        assert engine.stats("a").count == 1 and engine.stats("b:op").count == 2


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="monitor or a name"):
        track(42, "x")  # type: ignore[arg-type]
    with Monitor() as m, pytest.raises(TypeError, match="expected strings"):
        track(m, 3)  # type: ignore[arg-type]
    with Monitor() as m, pytest.raises(ValueError):
        with m.track("bad\nname"):
            pass
