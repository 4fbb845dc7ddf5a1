"""A small HTTP client for probes: separate connect and read timeouts, a
size cap, and every failure turned into one of a fixed set of error types.

The standard library's ``http.client`` is enough here (JSON GETs and
POSTs to a handful of local servers) and keeps the Blender add-on free of
third-party networking code.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import ssl
import sys
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

#: Error types a probe failure is recorded as (the engine's error type).
ERROR_TYPES: tuple[str, ...] = (
    "timeout",             # connect or read took longer than its timeout
    "connection_refused",  # nothing listens on the port
    "connection_reset",    # the server closed the connection mid-request
    "dns",                 # the host name does not resolve
    "tls",                 # TLS handshake or certificate failure
    "http_4xx",            # client error status (401/403/404 ...)
    "http_5xx",            # server error status other than "busy"
    "server_busy",         # 503 / 429: the backend is up but refusing work
    "bad_json",            # the body is not the JSON the endpoint promises
    "oom",                 # the backend reported running out of memory
    "unreachable",         # any other network error (no route, host down)
    "unexpected_status",   # a 1xx/2xx/3xx other than the one expected
)

#: Failures that say nothing about whether an endpoint exists (the server
#: was slow, restarting or busy): a detection read that fails with one of
#: these is tried again later rather than taken as "not here".
TRANSIENT_ERRORS = frozenset({"timeout", "connection_reset", "connection_refused", "unreachable", "http_5xx", "server_busy"})

#: Largest response body read, in bytes (history endpoints can be big).
MAX_BODY_BYTES = 16 * 1024 * 1024


class ProbeError(Exception):
    """A failed request: ``error_type`` is one of :data:`ERROR_TYPES`,
    ``latency_ms`` how long it took to fail, ``status`` the HTTP status if
    one came back.  ``body`` is the reply's body when the failure is the
    status itself (one not accepted), so a caller can read the server's own
    error text; None for every other failure."""

    def __init__(
        self, error_type: str, message: str, latency_ms: float, status: int | None = None, *, body: bytes | None = None
    ) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.latency_ms = latency_ms
        self.status = status
        self.body = body


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    latency_ms: float
    headers: dict[str, str]

    def json(self) -> Any:
        """The body as JSON; ``ProbeError("bad_json")`` when it is not."""
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as e:
            raise ProbeError("bad_json", f"malformed JSON ({e})", self.latency_ms, self.status) from None
        except RecursionError:
            # json.loads recurses once per nesting level; a body nested
            # deeper than the interpreter's limit is no reply of ours.
            raise ProbeError(
                "bad_json", f"malformed JSON (nested deeper than {sys.getrecursionlimit()} levels)", self.latency_ms, self.status
            ) from None


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class HttpClient:
    """Requests against one base URL (``http://host:port[/prefix]``).

    Not thread-safe: one client per backend, used by that backend's worker.
    Each request opens a fresh connection, so a hung server can only cost
    one connect timeout plus one read timeout.
    """

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout_s: float = 0.5,
        read_timeout_s: float = 2.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url {base_url!r} is not an http(s) URL with a host")
        self.base_url = base_url.rstrip("/")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.headers = dict(headers or {})

    def get(self, path: str, *, ok_statuses: tuple[int, ...] = (200,)) -> Response:
        return self.request("GET", path, ok_statuses=ok_statuses)

    def get_json(self, path: str) -> Any:
        return self.get(path).json()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        ok_statuses: tuple[int, ...] = (200,),
    ) -> Response:
        """One request; returns the response when its status is in
        ``ok_statuses``, else raises :class:`ProbeError` with the error
        type the failure maps to."""
        start = time.perf_counter()

        def elapsed() -> float:
            return (time.perf_counter() - start) * 1e3

        headers = dict(self.headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn: http.client.HTTPConnection
        if self.scheme == "https":
            conn = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.connect_timeout_s, context=ssl.create_default_context()
            )
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.connect_timeout_s)
        try:
            conn.connect()
            # Connected: from here on the (longer) read timeout applies.
            assert conn.sock is not None
            conn.sock.settimeout(self.read_timeout_s)
            conn.request(method, self.prefix + path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read(MAX_BODY_BYTES + 1)
            if len(raw) > MAX_BODY_BYTES:
                raise ProbeError("bad_json", f"{path}: body larger than {MAX_BODY_BYTES} bytes", elapsed(), resp.status)
            # read(n) returns what arrived when the server closes early; a
            # body shorter than its Content-Length is a cut connection.
            declared = resp.getheader("Content-Length")
            if declared is not None and declared.isdigit() and len(raw) < int(declared):
                raise ProbeError(
                    "connection_reset",
                    f"{method} {path}: truncated body ({len(raw)} of {declared} bytes)",
                    elapsed(),
                    resp.status,
                )
            out = Response(resp.status, raw, elapsed(), {k.lower(): v for k, v in resp.getheaders()})
        except ProbeError:
            raise
        except (TimeoutError, socket.timeout) as e:
            raise ProbeError("timeout", f"{method} {path}: timed out ({e})", elapsed()) from None
        except ConnectionRefusedError:
            raise ProbeError("connection_refused", f"{method} {path}: connection refused", elapsed()) from None
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, http.client.RemoteDisconnected) as e:
            raise ProbeError("connection_reset", f"{method} {path}: connection closed ({e})", elapsed()) from None
        except http.client.IncompleteRead as e:
            raise ProbeError("connection_reset", f"{method} {path}: truncated body ({e})", elapsed()) from None
        except socket.gaierror as e:
            raise ProbeError("dns", f"{self.host}: name does not resolve ({e})", elapsed()) from None
        except ssl.SSLError as e:
            raise ProbeError("tls", f"{self.host}: TLS failed ({e})", elapsed()) from None
        except (OSError, http.client.HTTPException) as e:
            raise ProbeError("unreachable", f"{method} {path}: {type(e).__name__}: {e}", elapsed()) from None
        finally:
            conn.close()
        if out.status not in ok_statuses:
            raise ProbeError(
                status_error_type(out.status), f"{method} {path}: HTTP {out.status}", out.latency_ms, out.status, body=out.body
            )
        return out


def status_error_type(status: int) -> str:
    """The error type of an unexpected HTTP status."""
    if status in (429, 503):
        return "server_busy"
    if 400 <= status < 500:
        return "http_4xx"
    if status >= 500:
        return "http_5xx"
    return "unexpected_status"
