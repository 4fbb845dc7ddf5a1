"""The collectors' HTTP client against real loopback servers that send
raw bytes: every framing a backend may use (Content-Length, chunked as Go
servers such as Ollama send larger replies, read-to-close as HTTP/1.0
servers do), and replies that are not HTTP at all."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from movie_director_metrics.collectors import HttpClient, ProbeError
from movie_director_metrics.collectors.http import MAX_BODY_BYTES, MAX_HEAD_BYTES


class RawServer:
    """Answers each connection with ``reply`` (bytes, sent in the given
    pieces), after reading the request's head; keeps the request seen."""

    def __init__(self, *pieces: bytes) -> None:
        self.pieces = pieces
        self.requests: list[bytes] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _wrap(self, conn: socket.socket) -> socket.socket | None:
        """The accepted connection as the server speaks on it (None: drop it)."""
        return conn

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            conn = self._wrap(raw)
            if conn is None:
                raw.close()
                continue
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(data)
                for piece in self.pieces:
                    conn.sendall(piece)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def serve() -> Iterator[list[RawServer]]:
    servers: list[RawServer] = []
    yield servers
    for s in servers:
        s.close()


def client(servers: list[RawServer], *pieces: bytes) -> HttpClient:
    srv = RawServer(*pieces)
    servers.append(srv)
    return HttpClient(srv.url + "/base", connect_timeout_s=0.5, read_timeout_s=1.0, headers={"X-Key": "k"})


def test_content_length_reply_and_the_request_we_send(serve: list[RawServer]) -> None:
    body = json.dumps({"exec_info": {"queue_remaining": 3}}).encode()
    c = client(serve, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body), body)
    r = c.get("/api/prompt")
    assert (r.status, r.json()) == (200, {"exec_info": {"queue_remaining": 3}})
    assert r.headers["content-type"] == "application/json"
    request = serve[0].requests[0].decode()
    assert request.startswith("GET /base/api/prompt HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{c.port}\r\n" in request
    assert "X-Key: k\r\n" in request and "Connection: close" not in request  # kept open


def test_post_sends_a_json_body(serve: list[RawServer]) -> None:
    c = client(serve, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    assert c.request("POST", "/v1/x", {"a": 1}).json() == {}
    assert b"Content-Type: application/json\r\nContent-Length: 8\r\n\r\n" in serve[0].requests[0]


def test_chunked_reply_with_extensions_and_trailers(serve: list[RawServer]) -> None:
    body = json.dumps({"models": [{"name": "llama3:8b"}] * 50}).encode()
    a, b = body[:1000], body[1000:]
    c = client(serve, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
               b"%x;ext=1\r\n" % len(a), a, b"\r\n", b"%X\r\n" % len(b), b[:7], b[7:] + b"\r\n",
               b"0\r\nX-Trailer: t\r\n\r\n")
    assert c.get("/api/tags").json() == json.loads(body)


def test_read_to_close_reply_of_an_http10_server(serve: list[RawServer]) -> None:
    c = client(serve, b"HTTP/1.0 200 OK\r\n\r\n", b'{"ok": ', b"true}")
    assert c.get("/health").json() == {"ok": True}


def test_status_not_accepted_keeps_the_body(serve: list[RawServer]) -> None:
    c = client(serve, b'HTTP/1.1 404 Not Found\r\nContent-Length: 22\r\n\r\n{"detail":"Not Found"}')
    with pytest.raises(ProbeError) as e:
        c.get("/sdapi/v1/options")
    assert (e.value.error_type, e.value.status, e.value.body) == ("http_4xx", 404, b'{"detail":"Not Found"}')


@pytest.mark.parametrize(
    ("pieces", "error_type", "words"),
    [
        ((b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{\"a\":",), "connection_reset", "truncated body (5 of 50 bytes)"),
        ((b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{\"a\":",), "connection_reset", "truncated chunked"),
        ((b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",), "unreachable", "not hexadecimal"),
        ((b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",), "bad_json", "Content-Length 'ten'"),
        ((b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1),), "bad_json", "body larger than"),
        ((b"SSH-2.0-OpenSSH_9.2\r\n\r\n",), "unreachable", "not an HTTP reply"),
        ((b"HTTP/1.1 200 OK\r\n" + b"X: " + b"y" * MAX_HEAD_BYTES,), "unreachable", "headers longer than"),
        ((b"HTTP/1.1 200 OK\r\nContent-",), "connection_reset", "before the reply's headers"),
        ((), "connection_reset", "before the reply's headers"),
    ],
    ids=["short-body", "short-chunk", "bad-chunk-size", "bad-length", "too-big", "not-http", "huge-head", "cut-head",
         "no-reply"],
)
def test_broken_replies_are_one_error_type_each(
    serve: list[RawServer], pieces: tuple[bytes, ...], error_type: str, words: str
) -> None:
    c = client(serve, *pieces)
    with pytest.raises(ProbeError) as e:
        c.get("/x")
    assert e.value.error_type == error_type
    assert words in str(e.value)


def test_refused_and_timeout() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ProbeError) as e:
        HttpClient(f"http://127.0.0.1:{port}").get("/")
    assert e.value.error_type == "connection_refused"
    with socket.socket() as hang:  # accepts (backlog) and never answers
        hang.bind(("127.0.0.1", 0))
        hang.listen(1)
        c = HttpClient(f"http://127.0.0.1:{hang.getsockname()[1]}", read_timeout_s=0.2)
        with pytest.raises(ProbeError) as e:
            c.get("/")
        assert e.value.error_type == "timeout"
        assert 150 <= e.value.latency_ms < 2000


# ---- TLS: a real handshake on loopback with a certificate made for the test ----------


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (openssl, as a server admin would make one)."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a certificate")
    d = tmp_path_factory.mktemp("tls")
    crt, key = str(d / "srv.crt"), str(d / "srv.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", crt],
                   check=True, capture_output=True)
    return crt, key


class TlsServer(RawServer):
    def __init__(self, cert: tuple[str, str], *pieces: bytes) -> None:
        import ssl

        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(*cert)
        super().__init__(*pieces)
        self.url = self.url.replace("http://", "https://")

    def _wrap(self, conn: socket.socket) -> socket.socket | None:
        try:
            return self.ctx.wrap_socket(conn, server_side=True)
        except OSError:  # the client refused our certificate
            return None


def test_https_reply_read_to_close_with_a_trusted_certificate(
    cert: tuple[str, str], serve: list[RawServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server closes without a TLS close_notify after a read-to-close
    # body, as many do: that is the end of the body, not a TLS failure.
    srv = TlsServer(cert, b"HTTP/1.0 200 OK\r\n\r\n", b'{"data": []}')
    serve.append(srv)
    monkeypatch.setenv("SSL_CERT_FILE", cert[0])  # trusted the way a user's CA bundle would be
    assert HttpClient(srv.url).get("/v1/models").json() == {"data": []}
    assert serve[0].requests[0].startswith(b"GET /v1/models HTTP/1.1\r\n")


def test_https_with_an_untrusted_certificate_is_tls(cert: tuple[str, str], serve: list[RawServer]) -> None:
    srv = TlsServer(cert, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    serve.append(srv)
    with pytest.raises(ProbeError) as e:
        HttpClient(srv.url).get("/v1/models")
    assert e.value.error_type == "tls"
    assert "CERTIFICATE_VERIFY_FAILED" in str(e.value)


def test_https_to_a_plain_http_server_is_tls() -> None:
    # Python's http.server answers the ClientHello with a plain 400.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from loopback import LoopbackServer

    with LoopbackServer() as srv:
        with pytest.raises(ProbeError) as e:
            HttpClient(srv.url.replace("http://", "https://")).get("/")
    assert e.value.error_type == "tls"
    assert "TLS failed" in str(e.value)


# ---- kept-open connections --------------------------------------------------------------


class KeepAliveServer:
    """Serves any number of requests per connection: each reply is
    ``pieces`` with ``gap_s`` between them; counts connections.  With
    ``close_after`` it closes each connection after that many replies
    without saying so (as a server dropping idle connections does)."""

    def __init__(self, *pieces: bytes, gap_s: float = 0.0, close_after: int | None = None) -> None:
        self.pieces, self.gap_s, self.close_after = pieces, gap_s, close_after
        self.connections = 0
        self.requests: list[bytes] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data, served = b"", 0
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                request, _, data = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in request.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(data) < length:  # the request's body, read as a server does
                    data += conn.recv(4096)
                data = data[length:]
                self.requests.append(request)
                for i, piece in enumerate(self.pieces):
                    if i:
                        time.sleep(self.gap_s)
                    conn.sendall(piece)
                served += 1
                if b"Connection: close" in request or (self.close_after is not None and served >= self.close_after):
                    return

    def close(self) -> None:
        self.sock.close()


REPLY = (b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", b'{"ok": true}')


@pytest.fixture
def keep_alive_server() -> Iterator[Callable[..., KeepAliveServer]]:
    """Makes KeepAliveServers (same arguments) and closes them after the test."""
    made: list[KeepAliveServer] = []

    def make(*pieces: bytes, **kw: Any) -> KeepAliveServer:
        made.append(KeepAliveServer(*pieces, **kw))
        return made[-1]

    yield make
    for srv in made:
        srv.close()


def test_one_connection_carries_every_request(keep_alive_server: Callable[..., KeepAliveServer]) -> None:
    srv = keep_alive_server(b"".join(REPLY))
    c = HttpClient(srv.url)
    for _ in range(5):
        assert c.get("/health").status == 200
    assert srv.connections == 1
    assert not any(b"Connection: close" in r for r in srv.requests)
    c.close()
    c.get("/health")
    assert srv.connections == 2


def test_a_connection_the_server_dropped_is_replaced(keep_alive_server: Callable[..., KeepAliveServer]) -> None:
    # The server closes after each reply without a word: the next request
    # finds the old connection closed and opens another; nothing fails,
    # for a GET (sent again) or a POST (checked before it is sent).
    srv = keep_alive_server(b"".join(REPLY), close_after=1)
    c = HttpClient(srv.url)
    for i in range(4):
        time.sleep(0.05)  # the server has closed it by now
        assert c.get("/health").status == 200
        time.sleep(0.05)  # (a POST racing the close is not sent again: it may have been acted on)
        assert c.request("POST", "/x", {"i": i}).status == 200
    assert srv.connections == 8


def test_a_get_cut_off_on_a_reused_connection_is_sent_again(keep_alive_server: Callable[..., KeepAliveServer]) -> None:
    # The server closed the idle connection before (or just as) the request
    # went out: the reply never starts, and the GET goes again on a fresh one.
    srv = keep_alive_server(b"".join(REPLY), close_after=1)
    c = HttpClient(srv.url)
    c.get("/health")
    time.sleep(0.1)  # the server has closed it by now
    r = c.get("/health")
    assert r.status == 200 and r.latency_ms < 1000
    assert srv.connections == 2


@pytest.mark.parametrize("quickack", [True, False], ids=["with-quickack", "without-quickack"])
def test_a_server_holding_the_body_gets_fresh_connections(
    quickack: bool, monkeypatch: pytest.MonkeyPatch, keep_alive_server: Callable[..., KeepAliveServer]
) -> None:
    # Headers, then the body 150 ms later, as a server's Nagle holding the
    # body for our delayed ACK looks from here (150 ms stands in for the
    # 40-200 ms a delayed ACK costs, so the test needs no particular TCP
    # stack).  The reply's latency is taken at its headers, and the client
    # stops keeping connections to that server.
    from movie_director_metrics.collectors import http

    if not quickack:
        monkeypatch.setattr(http, "_QUICKACK", None)
    srv = keep_alive_server(*REPLY, gap_s=0.15)
    c = HttpClient(srv.url)
    first = c.get("/health")  # a fresh connection: not judged
    assert first.latency_ms >= 150 and c.keep_alive
    second = c.get("/health")
    assert second.json() == {"ok": True}
    assert second.latency_ms < 150
    assert c.keep_alive is False
    c.get("/health")
    assert b"Connection: close" in srv.requests[-1]
    assert srv.connections == 2
