"""A plain HTTP health check: ``GET config.path``, up when the status is
``config.expect_status``.  For servers with no API this package knows (a
render farm's ``/healthz``, a reverse proxy); liveness and response time
are all it can report."""

from __future__ import annotations

from typing import ClassVar

from .base import SIGNALS, Backend, Capabilities


class HttpProbe(Backend):
    """Any HTTP(S) endpoint (kind ``"http"``)."""

    kind: ClassVar[str] = "http"
    default_port: ClassVar[int | None] = None

    def probe(self) -> float:
        # Any other status raises ProbeError with the status's error type
        # (http_4xx, http_5xx, server_busy, unexpected_status), recorded by call().
        return self.call("GET", self.config.path, ok_statuses=(self.config.expect_status,)).latency_ms

    def detect(self) -> Capabilities:
        caps = self.capabilities
        caps.set("health", f"GET {self.config.path} -> HTTP {self.config.expect_status}")
        for signal in SIGNALS:
            if signal != "health":
                caps.lack(signal, "a plain HTTP health check reports liveness and response time only")
        return caps

    def collect(self) -> None:
        """Nothing beyond the probe."""
