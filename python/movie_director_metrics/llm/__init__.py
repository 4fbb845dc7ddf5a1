"""LLM usage, cost and speed per model.

Quick use::

    from movie_director_metrics import Monitor
    from movie_director_metrics.llm import LlmTracker

    monitor = Monitor()
    llm = LlmTracker(monitor)                      # shipped prices (LiteLLM fields)
    llm.record("openai", "gpt-4o", response, latency_ms=820, ttft_ms=240)
    for chunk in llm.track_stream("ollama", "llama3.1:8b", stream):
        ...                                        # chunks pass through unchanged
    for s in llm.stats("1h"):
        print(s.model, s.requests, s.output, s.cost_usd, s.ttft_p95_ms)

* :mod:`.usage`: ``normalize_usage`` / ``usage_from_stream`` -> ``Usage``.
* :mod:`.prices`: ``PriceTable`` in LiteLLM's field names; ``cost()``.
* :mod:`.tracker`: ``LlmTracker`` (engine services ``llm:<provider>/<model>``
  for latency and TTFT, Python buckets for tokens and cost).
* :mod:`.rows`: the per-request rows storage keeps.
"""

from __future__ import annotations

from .prices import LOCAL_PROVIDERS, PriceEntry, PriceTable, is_loopback, normalize_provider
from .rows import ROW_COLUMNS
from .tracker import EXPORT_COLUMNS, ActiveModel, LlmStats, LlmTracker
from .usage import UNKNOWN_USAGE, StreamUsage, Usage, normalize_usage, usage_from_stream

__all__ = [
    "EXPORT_COLUMNS",
    "LOCAL_PROVIDERS",
    "ROW_COLUMNS",
    "UNKNOWN_USAGE",
    "ActiveModel",
    "LlmStats",
    "LlmTracker",
    "PriceEntry",
    "PriceTable",
    "StreamUsage",
    "Usage",
    "is_loopback",
    "normalize_provider",
    "normalize_usage",
    "usage_from_stream",
]
