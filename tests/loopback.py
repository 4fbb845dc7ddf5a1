"""Real HTTP servers on loopback for collector tests.

``LoopbackServer(routes)`` serves ``routes[(method, path)]`` (path with
its query string, or without to match any query) from a background thread
on 127.0.0.1 and a free port.  A route is a :class:`Reply` or a callable
``(handler) -> Reply`` for replies that change per call.  Faults are real
socket behaviour, not mocks: a reply can be delayed, cut short, or the
connection closed without an answer; ``hang`` accepts and never answers.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

#: Real recorded payloads (a copy of the project's shared fixtures: tests/fixtures/recorded).
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "recorded"


@dataclass
class Reply:
    status: int = 200
    body: bytes | str | Any = b""
    delay_s: float = 0.0
    #: Send only the first n bytes of the body, then close (a truncated reply).
    truncate_to: int | None = None
    #: Close the connection without any response.
    drop: bool = False
    headers: dict[str, str] = field(default_factory=dict)

    def payload(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


def fixture(*parts: str) -> bytes:
    return FIXTURES.joinpath(*parts).read_bytes()


Route = Reply | Callable[[BaseHTTPRequestHandler], Reply]


class LoopbackServer:
    def __init__(self, routes: dict[tuple[str, str], Route] | None = None) -> None:
        self.routes: dict[tuple[str, str], Route] = dict(routes or {})
        self.hits: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        #: Connections being served (clients keep them open between requests).
        self._open: set[socket.socket] = set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with server._lock:
                    server._open.add(self.connection)

            def finish(self) -> None:
                with server._lock:
                    server._open.discard(self.connection)
                super().finish()

            def _serve(self, method: str) -> None:
                with server._lock:
                    server.hits.append((method, self.path))
                route = server.routes.get((method, self.path)) or server.routes.get((method, self.path.split("?")[0]))
                if route is None:
                    reply = Reply(404, {"error": "not found"})
                else:
                    reply = route(self) if callable(route) else route
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if reply.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                body = reply.payload()
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.headers.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(body)))
                for k, v in reply.headers.items():
                    if k != "Content-Type":
                        self.send_header(k, v)
                self.end_headers()
                if reply.truncate_to is not None:
                    self.wfile.write(body[: reply.truncate_to])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

            def _safe(self, method: str) -> None:
                # The client may give up first (its timeout is the point of
                # the test): a closed socket here is expected, not an error.
                try:
                    self._serve(method)
                except (BrokenPipeError, ConnectionResetError, OSError):
                    self.close_connection = True

            def do_GET(self) -> None:
                self._safe("GET")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.request_body = self.rfile.read(length) if length else b""
                self._safe("POST")

            def do_HEAD(self) -> None:
                self._safe("HEAD")

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # A short poll interval: shutdown() waits up to one interval.
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stops as a server process that exits does: the listening socket
        and every connection still open (clients keep them between
        requests) are closed."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join()
        with self._lock:
            open_now, self._open = list(self._open), set()
        for conn in open_now:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> LoopbackServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HangingServer:
    """Accepts connections and never answers (reads nothing, sends nothing)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
                self._held.append(conn)
            except OSError:
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for c in self._held:
            c.close()
        self.sock.close()

    def __enter__(self) -> HangingServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_until(cond: Callable[[], bool], timeout_s: float = 5.0, what: str = "condition") -> None:
    """Polls ``cond`` every 10 ms; AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


def refused_url() -> str:
    """A loopback URL nothing listens on (the port was just freed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"
