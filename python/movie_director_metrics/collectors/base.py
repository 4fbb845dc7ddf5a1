"""What every backend kind implements, and the capability model the
engine and the UIs share.

A backend kind knows one server's endpoints.  A worker thread (see
``scheduler``) drives it: ``probe()`` once per interval for liveness, then
``collect()`` for whatever else the backend can report.  Every HTTP call a
kind makes goes through ``self.call``/``self.call_json``, which record it on
the service as a request (latency, and the error type on failure), so the
dashboard's response times and error types are the backend's own API.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .._core import Service
from .config import BackendConfig
from .http import HttpClient, ProbeError, Response

#: The signals a backend may or may not be able to report.
SIGNALS: tuple[str, ...] = ("health", "queue", "processing", "resources", "models")


@dataclass
class Capabilities:
    """Which signals a backend reports, and for the ones it cannot, why
    (shown as "n/a" with that reason; never as zeros)."""

    available: dict[str, str] = field(default_factory=dict)  # signal -> where it comes from
    missing: dict[str, str] = field(default_factory=dict)  # signal -> why not

    def has(self, signal: str) -> bool:
        return signal in self.available

    def set(self, signal: str, source: str) -> None:
        self.available[signal] = source
        self.missing.pop(signal, None)

    def lack(self, signal: str, reason: str) -> None:
        self.missing[signal] = reason
        self.available.pop(signal, None)

    def as_dict(self) -> dict[str, str | None]:
        """signal -> source, or None for n/a (every signal present)."""
        return {s: self.available.get(s) for s in SIGNALS}


class Backend(ABC):
    """One configured backend of one kind.

    Subclasses set ``kind`` and ``default_port`` and implement ``probe``,
    ``detect`` and ``collect``.  They must not raise anything but
    :class:`ProbeError` from ``probe``; ``collect`` failures are recorded
    and swallowed by the worker.  Never touch ``bpy`` here: this runs on a
    worker thread.
    """

    kind: ClassVar[str]
    default_port: ClassVar[int | None] = None

    def __init__(self, config: BackendConfig, service: Service, client: HttpClient | None = None) -> None:
        self.config = config
        self.service = service
        self.client = client or HttpClient(
            config.url,
            connect_timeout_s=config.connect_timeout_s,
            read_timeout_s=config.read_timeout_s,
            headers=config.headers(),
        )
        self.capabilities = Capabilities()
        self.detected = False
        #: The server's version, once a probe or detect has read it.
        self.version: str | None = None

    # ---- recorded calls ----------------------------------------------------

    def call(self, method: str, path: str, body: Any = None, *, ok_statuses: tuple[int, ...] = (200,)) -> Response:
        """One HTTP call, recorded on the service as a request."""
        try:
            resp = self.client.request(method, path, body, ok_statuses=ok_statuses)
        except ProbeError as e:
            self.service.record(min(e.latency_ms, 1e9), ok=False, error=e.error_type)
            raise
        self.service.record(min(resp.latency_ms, 1e9))
        return resp

    def call_json(self, method: str, path: str, body: Any = None) -> Any:
        """A recorded call whose body must be JSON (else ``bad_json`` is
        recorded in its place)."""
        try:
            resp = self.client.request(method, path, body)
        except ProbeError as e:
            self.service.record(min(e.latency_ms, 1e9), ok=False, error=e.error_type)
            raise
        try:
            data = resp.json()
        except ProbeError as e:
            self.service.record(min(resp.latency_ms, 1e9), ok=False, error=e.error_type)
            raise
        self.service.record(min(resp.latency_ms, 1e9))
        return data

    # ---- what a kind implements ---------------------------------------------

    @abstractmethod
    def probe(self) -> float:
        """The liveness check: returns its latency in ms, raises
        :class:`ProbeError` when the backend is down.  Recorded by the
        worker as the health result."""

    @abstractmethod
    def detect(self) -> Capabilities:
        """Finds out once (after the first successful probe) which signals
        this server has; fills and returns ``self.capabilities``."""

    @abstractmethod
    def collect(self) -> None:
        """Reads the signals ``self.capabilities`` lists and records them
        (queue, processing times, resources) on ``self.service``."""

    # ---- helpers -------------------------------------------------------------

    @staticmethod
    def now() -> float:
        return time.time()
