"""``/metrics`` over HTTP: a small threaded server that renders a monitor's
exposition (:func:`.openmetrics.render`) for each scrape, in the format the
scraper's ``Accept`` header asks for."""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import urlsplit

from .errors import MonitorClosedError
from .openmetrics import CONTENT_TYPE_OPENMETRICS, CONTENT_TYPE_TEXT, MonitorLike, render

__all__ = ["MetricsServer", "negotiate", "serve_metrics"]

_log = logging.getLogger(__name__)


# --- Content negotiation ----------------------------------------------------


def negotiate(accept_header: str | None) -> tuple[bool, str]:
    """``(use_openmetrics, content_type)`` for a request's ``Accept`` header.

    OpenMetrics when the header accepts ``application/openmetrics-text``
    (version 1.0.0, the pre-release 0.0.1 older Prometheus asks for, or
    none) at least as much as plain text; otherwise Prometheus text 0.0.4,
    which every scraper and browser reads.
    """
    om_q = text_q = 0.0
    for media_range in (accept_header or "").split(","):
        media_type, *params = (part.strip() for part in media_range.split(";"))
        options = {k.strip().lower(): v.strip() for k, _, v in (p.partition("=") for p in params)}
        try:
            q = float(options.get("q", "1"))
        except ValueError:
            continue  # malformed range: ignore it rather than fail the scrape
        media_type = media_type.lower()
        if media_type == "application/openmetrics-text":
            if options.get("version", "1.0.0") in ("1.0.0", "0.0.1"):
                om_q = max(om_q, q)
        elif media_type in ("text/plain", "text/*", "*/*"):
            text_q = max(text_q, q)
    if om_q > 0 and om_q >= text_q:
        return True, CONTENT_TYPE_OPENMETRICS
    return False, CONTENT_TYPE_TEXT


# --- HTTP server ------------------------------------------------------------

_PLAIN = "text/plain; charset=utf-8"


class _HTTPServer(ThreadingHTTPServer):
    """Holds what the handlers need; one daemon thread per request."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], monitor: MonitorLike,
        quantile_window: str, uptime_windows: tuple[str, ...],
    ) -> None:
        self.monitor = monitor
        self.quantile_window = quantile_window
        self.uptime_windows = uptime_windows
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _MetricsHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn, a reverse DNS lookup
        # that can stall for seconds on hosts without DNS; we never need it.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A scraper hanging up mid-response is routine, not worth a traceback.
        _log.debug("metrics request from %s failed", client_address, exc_info=True)

    def scrape(self, accept: str | None) -> tuple[int, str, bytes]:
        use_openmetrics, content_type = negotiate(accept)
        try:
            text = render(
                self.monitor, openmetrics=use_openmetrics,
                quantile_window=self.quantile_window, uptime_windows=self.uptime_windows,
            )
        except MonitorClosedError:
            return 503, _PLAIN, b"monitor is closed\n"
        except Exception as exc:  # a bad scrape must not take the server down
            _log.debug("rendering metrics failed", exc_info=True)
            return 500, _PLAIN, f"error rendering metrics: {type(exc).__name__}: {exc}"[:300].encode() + b"\n"
        return 200, content_type, text.encode("utf-8")


class _MetricsHandler(BaseHTTPRequestHandler):
    server: _HTTPServer

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        if urlsplit(self.path).path == "/metrics":
            status, content_type, body = self.server.scrape(self.headers.get("Accept"))
        else:
            status, content_type, body = 404, _PLAIN, b"not found: metrics are at /metrics\n"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # Scrapes arrive every few seconds; a stderr line each would drown the app's output.
        pass


class MetricsServer:
    """Serves ``GET /metrics`` of ``monitor`` from a daemon background thread.

    Binds ``host`` (loopback by default: expose it deliberately) and
    ``port``; ``port=0`` picks a free one, reported by ``.port``/``.url``.
    Each request renders afresh in its own thread; a failed render answers
    500 and a closed monitor 503, and the server keeps running.  ``close()``
    (or leaving ``with``) stops it and frees the port.
    """

    def __init__(
        self,
        monitor: MonitorLike,
        host: str = "127.0.0.1",
        port: int = 9464,
        *,
        quantile_window: str = "5m",
        uptime_windows: Iterable[str] = ("1h", "24h", "7d", "30d"),
    ) -> None:
        self._server = _HTTPServer((host, port), monitor, quantile_window, tuple(uptime_windows))
        self.host = host
        self.port = int(self._server.server_address[1])
        self._closed = False
        self._close_lock = threading.Lock()
        # A short poll interval keeps close() quick; idle polling is cheap.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
            name=f"mdm-metrics-{self.port}", daemon=True,
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stops serving, closes the socket and joins the thread (idempotent)."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MetricsServer({self.url!r}{', closed' if self._closed else ''})"


def serve_metrics(
    monitor: MonitorLike,
    host: str = "127.0.0.1",
    port: int = 9464,
    *,
    quantile_window: str = "5m",
    uptime_windows: Iterable[str] = ("1h", "24h", "7d", "30d"),
) -> MetricsServer:
    """Starts a ``MetricsServer`` (9464 is the usual exporter port)."""
    return MetricsServer(
        monitor, host, port, quantile_window=quantile_window, uptime_windows=uptime_windows
    )
