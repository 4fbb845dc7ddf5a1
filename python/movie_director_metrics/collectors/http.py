"""A small HTTP client for probes: separate connect and read timeouts, a
size cap, and every failure turned into one of a fixed set of error types.

JSON GETs and POSTs to a handful of local servers need little HTTP: a
small HTTP/1.1 client on the standard library's sockets does it at a
fraction of ``http.client``'s CPU (see :class:`HttpClient`) and keeps the
Blender add-on free of third-party networking code.
"""

from __future__ import annotations

import json
import select
import socket
import ssl
import sys
import time
from collections.abc import Callable
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


class _ConnectTimeout(Exception):
    """No connection within the connect timeout (told apart from a read
    timeout, which has another remedy)."""


class ProbeError(Exception):
    """A failed request: ``error_type`` is one of :data:`ERROR_TYPES`,
    ``latency_ms`` how long it took to fail, ``status`` the HTTP status if
    one came back.  ``body`` is the reply's body when the failure is the
    status itself (one not accepted), so a caller can read the server's own
    error text; None for every other failure."""

    def __init__(
        self,
        error_type: str,
        message: str,
        latency_ms: float,
        status: int | None = None,
        *,
        body: bytes | None = None,
        phase: str | None = None,
    ) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.latency_ms = latency_ms
        self.status = status
        self.body = body
        #: For a timeout: "connect" (no connection within the connect
        #: timeout) or "read" (connected, no reply within the read timeout).
        self.phase = phase


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


#: Longest status line plus headers read, in bytes.
MAX_HEAD_BYTES = 64 * 1024

#: A body of at most this many bytes that arrives at least STALL_MS after
#: its headers on a kept-open connection was held by the server's Nagle
#: (see :class:`HttpClient`).
STALL_BODY_BYTES = 16 * 1024
STALL_MS = 20.0

#: ``socket.TCP_QUICKACK`` where the platform has it (Linux).
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


class _IdleClosed(Exception):
    """A kept-open connection the server closed while it was idle: the
    request may be sent once more on a fresh one."""


class HttpClient:
    """Requests against one base URL (``http://host:port[/prefix]``).

    Not thread-safe: one client per backend, used by that backend's worker.

    HTTP/1.1 on a plain socket, kept open between requests.  What a poll
    costs the host's process (in Blender, with the GIL) is mostly per
    request, not per byte: at a 1 Hz cadence a request on a kept-open
    loopback connection takes ~180 us of CPU, one on a fresh connection
    ~480 us, and ``http.client`` (fresh, its reply parsed by the ``email``
    package) more still.  Only what probes need is spoken: a request with
    a JSON body or none, a reply framed by ``Content-Length``, chunked or
    read-to-close, no compression (``Accept-Encoding: identity``), no
    redirects.  The latency is that of the request itself, without a TCP
    or TLS handshake, as for an application's own client that keeps its
    connection.

    Kept-open connections have two hazards, both handled:

    - the server closes an idle connection (uvicorn after 5 s): a
      GET whose reply never starts on a reused connection is sent once
      more on a fresh one; other methods go on a kept-open connection only
      when it is not readable (closed, or holding bytes nobody asked for);
    - a server that writes a reply's headers and body in two small writes
      without TCP_NODELAY (Python's ``http.server``, cpp-httplib's
      default) has the body held by Nagle until the client ACKs the
      headers -- with delayed ACKs 40 ms on Linux, 200 ms on Windows
      (measured here: 44 ms a request).  On Linux each reply is read with
      TCP_QUICKACK; elsewhere, a small body that arrives 20 ms or more
      after its headers marks the server: the reply's latency is taken at
      its headers and the client uses a fresh connection (which starts in
      quick-ACK mode) per request from then on.

    Any failure closes the connection, so a hung server costs at most one
    connect timeout plus one read timeout.
    """

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout_s: float = 0.5,
        read_timeout_s: float = 2.0,
        headers: dict[str, str] | None = None,
        keep_alive: bool = True,
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
        #: Keep the connection open between requests (see the class docs;
        #: cleared for good when the server turns out to stall replies).
        self.keep_alive = keep_alive
        self._sock: socket.socket | None = None
        self._buf = b""  # bytes received but not yet taken by the reply's reader
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        self._host_header = host if self.port == default else f"{host}:{self.port}"

    def __del__(self) -> None:
        self.close()

    def get(self, path: str, *, ok_statuses: tuple[int, ...] = (200,)) -> Response:
        return self.request("GET", path, ok_statuses=ok_statuses)

    def get_json(self, path: str) -> Any:
        return self.get(path).json()

    def close(self) -> None:
        """Closes the kept-open connection, if any (idempotent; the next
        request opens a new one)."""
        sock, self._sock, self._buf = getattr(self, "_sock", None), None, b""
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

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
            return _ms_since(start)

        data = None if body is None else json.dumps(body).encode()
        head = [f"{method} {self.prefix + path} HTTP/1.1", f"Host: {self._host_header}", "Accept-Encoding: identity"]
        if not self.keep_alive:
            head.append("Connection: close")
        head += [f"{k}: {v}" for k, v in self.headers.items()]
        if data is not None:
            head += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
        elif method not in ("GET", "HEAD"):
            head.append("Content-Length: 0")
        raw_request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (data or b"")
        try:
            reused = self._reusable(method)
            try:
                out = self._exchange(method, path, raw_request, start, reused=reused)
            except _IdleClosed:
                out = self._exchange(method, path, raw_request, time.perf_counter(), reused=False)
        except ProbeError:
            self.close()
            raise
        except _ConnectTimeout:
            self.close()
            raise ProbeError(
                "timeout", f"{method} {path}: no connection within {self.connect_timeout_s:g} s (connect_timeout_s)",
                elapsed(), phase="connect",
            ) from None
        except TimeoutError as e:
            self.close()
            raise ProbeError(
                "timeout", f"{method} {path}: no reply within {self.read_timeout_s:g} s (read_timeout_s; {e})",
                elapsed(), phase="read",
            ) from None
        except ConnectionRefusedError:
            self.close()
            raise ProbeError("connection_refused", f"{method} {path}: connection refused", elapsed()) from None
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError) as e:
            self.close()
            raise ProbeError("connection_reset", f"{method} {path}: connection closed ({e})", elapsed()) from None
        except socket.gaierror as e:
            self.close()
            raise ProbeError("dns", f"{self.host}: name does not resolve ({e})", elapsed()) from None
        except ssl.SSLError as e:
            self.close()
            raise ProbeError("tls", f"{self.host}: TLS failed ({e})", elapsed()) from None
        except (OSError, ValueError, UnicodeError) as e:
            self.close()
            raise ProbeError("unreachable", f"{method} {path}: {type(e).__name__}: {e}", elapsed()) from None
        if out.status not in ok_statuses:
            raise ProbeError(
                status_error_type(out.status), f"{method} {path}: HTTP {out.status}", out.latency_ms, out.status, body=out.body
            )
        return out

    # ---- the wire ------------------------------------------------------------------

    def _reusable(self, method: str) -> bool:
        """True when the kept-open connection may carry the next request.
        For a GET it may: if the server closed it meanwhile, the reply never
        starts and the GET is sent again on a fresh one (checking first
        would cost one more blocking call per poll, so one more GIL
        hand-off in the host).  Anything else goes on it only when the
        server sent nothing since the last reply (readable now means it
        closed the connection, or sent bytes no request asked for)."""
        sock = self._sock
        if sock is None:
            return False
        if self._buf:  # bytes after the last reply that no request asked for
            self.close()
            return False
        if method == "GET":
            return True
        try:
            readable = bool(select.select([sock], [], [], 0)[0])
        except (OSError, ValueError):
            readable = True
        if readable:
            self.close()
        return not readable

    def _exchange(self, method: str, path: str, raw_request: bytes, start: float, *, reused: bool) -> Response:
        """Sends one request and reads its reply, on the kept-open
        connection (``reused``) or a new one; closes it unless both sides
        keep it.  Raises :class:`_IdleClosed` when a GET on a reused
        connection got no byte of a reply."""
        if not reused:
            self.close()
            self._sock = self._connect()
        sock = self._sock
        assert sock is not None
        try:
            sock.sendall(raw_request)
            status, version, headers, head_ms = self._read_head(sock, start, retry=reused and method == "GET")
        except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError) as e:
            if reused and method == "GET":
                raise _IdleClosed(str(e)) from None
            raise
        stalled_at: list[float] = []

        def latency() -> float:
            return stalled_at[0] if stalled_at else _ms_since(start)

        keep = self.keep_alive and version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            raw = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            raw = self._read_chunked(sock, path, status, latency)
        elif (declared := headers.get("content-length")) is not None:
            if not declared.strip().isdigit():
                raise ProbeError("bad_json", f"{path}: Content-Length {declared!r} is not a byte count", latency(), status)
            n = int(declared)
            if n > MAX_BODY_BYTES:
                raise ProbeError("bad_json", f"{path}: body larger than {MAX_BODY_BYTES} bytes", latency(), status)
            waited = n > len(self._buf)
            raw = self._read_exactly(sock, n, method, path, status, latency)
            if reused and waited and n <= STALL_BODY_BYTES and _ms_since(start) - head_ms >= STALL_MS:
                # Nagle held the body until our ACK (see the class docs):
                # the server had answered at its headers.
                stalled_at.append(head_ms)
                self.keep_alive = keep = False
        else:
            raw = self._read_to_close(sock, path, status, latency)
            keep = False
        out = Response(status, raw, latency(), headers)
        if not keep:
            self.close()
        return out

    def _connect(self) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout_s)
        except TimeoutError:
            raise _ConnectTimeout() from None
        try:
            if self.scheme == "https":
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
            # Connected: from here on the (longer) read timeout applies.
            sock.settimeout(self.read_timeout_s)
        except BaseException:
            sock.close()
            raise
        return sock

    def _recv(self, sock: socket.socket) -> bytes:
        if self._buf:
            data, self._buf = self._buf, b""
            return data
        if _QUICKACK is not None:
            # Linux: ACK what arrives at once, so a server's Nagle never
            # waits for our delayed ACK (the kernel clears it again).
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        return sock.recv(65536)

    def _read_head(self, sock: socket.socket, start: float, *, retry: bool) -> tuple[int, str, dict[str, str], float]:
        """Status, protocol version, headers and the ms from ``start`` to
        the end of the headers."""
        buf = b""
        while True:
            chunk = self._recv(sock)
            if not chunk:
                if retry and not buf:
                    raise _IdleClosed("closed by the server while idle")
                raise ConnectionResetError("the server closed the connection before the reply's headers")
            buf += chunk
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                self._buf = buf[end + 4 :]
                status, version, headers = _parse_head(buf[:end])
                return status, version, headers, _ms_since(start)
            if len(buf) > MAX_HEAD_BYTES:
                raise ValueError(f"reply headers longer than {MAX_HEAD_BYTES} bytes")

    def _read_exactly(self, sock: socket.socket, n: int, method: str, path: str, status: int, latency: Callable[[], float]) -> bytes:
        parts, got = [], 0
        while got < n:
            chunk = self._recv(sock)
            if not chunk:
                raise ProbeError("connection_reset", f"{method} {path}: truncated body ({got} of {n} bytes)", latency(), status)
            parts.append(chunk)
            got += len(chunk)
        raw = b"".join(parts)
        raw, self._buf = raw[:n], raw[n:]
        return raw

    def _read_to_close(self, sock: socket.socket, path: str, status: int, latency: Callable[[], float]) -> bytes:
        parts, got = [], 0
        while chunk := self._recv(sock):
            parts.append(chunk)
            got += len(chunk)
            if got > MAX_BODY_BYTES:
                raise ProbeError("bad_json", f"{path}: body larger than {MAX_BODY_BYTES} bytes", latency(), status)
        return b"".join(parts)

    def _read_chunked(self, sock: socket.socket, path: str, status: int, latency: Callable[[], float]) -> bytes:
        """A ``Transfer-Encoding: chunked`` body (Go servers such as Ollama
        send larger replies so)."""
        data = b""
        body: list[bytes] = []
        size = 0

        def need(n: int) -> None:
            nonlocal data
            while len(data) < n:
                chunk = self._recv(sock)
                if not chunk:
                    raise ProbeError("connection_reset", f"{path}: truncated chunked body", latency(), status)
                data += chunk

        while True:
            while (eol := data.find(b"\r\n")) < 0:
                if len(data) > MAX_HEAD_BYTES:
                    raise ValueError("a chunk size line too long")
                need(len(data) + 1)
            line = data[:eol].split(b";", 1)[0].strip()
            try:
                n = int(line, 16)
            except ValueError:
                raise ValueError(f"chunk size {line[:20]!r} is not hexadecimal") from None
            data = data[eol + 2 :]
            if n == 0:
                # Trailers (rare) end with an empty line.
                while (end := data.find(b"\r\n")) != 0:
                    if end < 0:
                        need(len(data) + 1)
                    else:
                        data = data[end + 2 :]
                self._buf = data[2:]
                return b"".join(body)
            size += n
            if size > MAX_BODY_BYTES:
                raise ProbeError("bad_json", f"{path}: body larger than {MAX_BODY_BYTES} bytes", latency(), status)
            need(n + 2)
            body.append(data[:n])
            data = data[n + 2 :]


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


def _parse_head(head: bytes) -> tuple[int, str, dict[str, str]]:
    """Status, protocol version and headers (names lower-cased) of a reply."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit() or len(parts[1]) != 3:
        raise ValueError(f"not an HTTP reply: {lines[0][:60]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), parts[0], headers


def status_error_type(status: int) -> str:
    """The error type of an unexpected HTTP status."""
    if status in (429, 503):
        return "server_busy"
    if 400 <= status < 500:
        return "http_4xx"
    if status >= 500:
        return "http_5xx"
    return "unexpected_status"
