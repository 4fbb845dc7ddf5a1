"""An API key set in the environment never comes out of the package.

Keys reach the process only through the variables ``api_key_env`` names
(backends, and a hosted-LLM backend of kind ``openai``).  Loopback servers
answer every request with the ``Authorization`` header echoed back -- as a
401, a 500, a 503 "Loading model", in JSON, plain text and headers -- and
every channel a user or a log can see is collected and searched for the key:

* exception messages, reprs and tracebacks of probe/detect/collect;
* ``BackendStatus`` (repr and every field) from ``check_once`` and from
  running ``Collectors``, and ``movie-director-metrics check --json``;
* log records (``caplog``, every logger at DEBUG) and warnings;
* CSV/JSON exports, the LLM export, ``/metrics`` in both formats;
* the SQLite history file (and its WAL) after a flush and a close.

"Found" means the key itself, any 12-character piece of it (a key cut in
the middle is still a leak), or its base64 (``Authorization: Basic``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from loopback import LoopbackServer, Reply
from movie_director_metrics import Monitor, _core
from movie_director_metrics.cli import main as cli_main
from movie_director_metrics.collectors import BackendConfig, ProbeError
from movie_director_metrics.collectors.kinds import backend_class
from movie_director_metrics.collectors.scheduler import BackendStatus, Collectors, check_once
from movie_director_metrics.errors import ConfigError

KEY_ENV = "MDM_SECRETS_TEST_API_KEY"
#: Looks like a real key and appears nowhere else in the code base.
SECRET = "sk-proj-Zq7Wc2Rx9Lm4Tn8Vb1Hs6Kd3Jf5Gp0Ya"
USER = "webui-user"
T0 = 1_700_000_000.0
KINDS = ("comfyui", "a1111", "ollama", "openai", "http")


def needles(secret: str = SECRET) -> list[str]:
    """What counts as the key: itself, every 12-character piece of it, and
    the base64 forms an Authorization header carries."""
    pieces = {secret[i : i + 12] for i in range(len(secret) - 11)}
    b64 = {base64.b64encode(s.encode()).decode() for s in (secret, f"{USER}:{secret}")}
    return sorted(pieces | b64 | {secret})


def find_leaks(where: str, text: str | bytes, secret: str = SECRET) -> list[str]:
    data = text if isinstance(text, str) else text.decode("latin-1")
    return [f"{where}: {n!r}" for n in needles(secret) if n in data]


class Haystack:
    """Everything collected from one scenario, searched at the end."""

    def __init__(self) -> None:
        self.parts: list[tuple[str, str | bytes]] = []

    def add(self, where: str, value: Any) -> None:
        if isinstance(value, (str, bytes)):
            self.parts.append((where, value))
        elif isinstance(value, BaseException):
            self.parts.append((where, f"{value!s}\n{value!r}\n" + "".join(traceback.format_exception(value))))
            for name in ("error_type", "status"):
                self.parts.append((f"{where}.{name}", repr(getattr(value, name, None))))
        elif isinstance(value, BackendStatus):
            self.parts.append((where, repr(value) + json.dumps(asdict(value), default=repr)))
        else:
            self.parts.append((where, repr(value)))

    def leaks(self, secret: str = SECRET) -> list[str]:
        return [leak for where, text in self.parts for leak in find_leaks(where, text, secret)]


# ---- servers that echo the key --------------------------------------------------------


def _auth(handler: BaseHTTPRequestHandler) -> str:
    return str(handler.headers.get("Authorization"))


def echo_401(handler: BaseHTTPRequestHandler) -> Reply:
    auth = _auth(handler)
    return Reply(
        401,
        {"error": {"message": f"Incorrect API key provided: {auth}", "type": "invalid_request_error"}, "detail": auth},
        headers={"WWW-Authenticate": f'Bearer realm="{auth}"', "X-Echo": auth},
    )


def echo_500(handler: BaseHTTPRequestHandler) -> Reply:
    # Padded so that a 200-character cut of the message keeps 16 characters of the key.
    return Reply(500, {"error": {"message": "upstream said: " + "." * 162 + _auth(handler)}})


def echo_500_text(handler: BaseHTTPRequestHandler) -> Reply:
    return Reply(500, "proxy error " + "-" * 165 + _auth(handler), headers={"Content-Type": "text/plain"})


def echo_503_loading(handler: BaseHTTPRequestHandler) -> Reply:
    return Reply(503, {"error": {"message": f"Loading model (request from {_auth(handler)})"}})


def echo_501(handler: BaseHTTPRequestHandler) -> Reply:
    return Reply(501, {"error": {"message": f"not enabled for {_auth(handler)}"}})


def echo_bad_json(handler: BaseHTTPRequestHandler) -> Reply:
    if handler.path == "/metrics":  # Prometheus text: see echo_metrics
        return Reply(404, {"error": "not found"})
    return Reply(200, "{not json, but your header: " + _auth(handler))


def echo_metrics(handler: BaseHTTPRequestHandler) -> Reply:
    return Reply(200, f"vllm:num_requests_running{{x=}} 1 {_auth(handler)}\n", headers={"Content-Type": "text/plain"})


def echo_truncated(handler: BaseHTTPRequestHandler) -> Reply:
    body = json.dumps({"echo": _auth(handler), "pad": "x" * 100}).encode()
    return Reply(200, body, truncate_to=len(body) // 2)


SERVERS: dict[str, Callable[[BaseHTTPRequestHandler], Reply]] = {
    "401": echo_401,
    "bad_json": echo_bad_json,
    "truncated": echo_truncated,
}


class _Every(dict[tuple[str, str], Any]):
    def __init__(self, route: Callable[[BaseHTTPRequestHandler], Reply]) -> None:
        super().__init__()
        self.route = route

    def get(self, key: Any, default: Any = None) -> Any:  # type: ignore[override]
        return self.route


@contextlib.contextmanager
def echo_server(route: Callable[[BaseHTTPRequestHandler], Reply]) -> Iterator[LoopbackServer]:
    srv = LoopbackServer()
    seen: list[str] = []

    def recording(handler: BaseHTTPRequestHandler) -> Reply:
        seen.append(_auth(handler))
        return route(handler)

    srv.routes = _Every(recording)
    try:
        yield srv
    finally:
        srv.close()
    # The key did reach the server (else the test would prove nothing).
    assert any(SECRET in s or base64.b64encode(f"{USER}:{SECRET}".encode()).decode() in s for s in seen), seen[:3]


def configs(url: str, key_file: Path | None = None) -> list[BackendConfig]:
    """Every kind, plus a hosted-LLM backend (kind openai, long interval);
    the key from ``$KEY_ENV``, or from ``key_file`` when given."""
    keys: dict[str, Any] = {"api_key_env": KEY_ENV} if key_file is None else {"api_key_file": str(key_file)}
    out = [BackendConfig(f"{k}-svc", k, url, read_timeout_s=2.0, **keys) for k in KINDS]
    out.append(BackendConfig("gpt-hosted", "openai", url, interval_s=300.0, read_timeout_s=2.0, **keys))
    return out


def key_file(tmp_path: Path, value: str = SECRET + "\n") -> Path:
    """A key file only its owner can read (what ``read_key_file`` accepts)."""
    p = tmp_path / "keys" / "backend.key"
    p.parent.mkdir(exist_ok=True)
    p.write_text(value)
    p.chmod(0o600)
    return p


@pytest.fixture
def hay(caplog: pytest.LogCaptureFixture) -> Iterator[Haystack]:
    h = Haystack()
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield h
    h.add("warnings", "\n".join(str(w.message) for w in caught))
    h.add("logs", "\n".join(f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records))


def drive_directly(cfg: BackendConfig, engine: _core.Monitor, hay: Haystack) -> None:
    """probe, detect, collect as the worker does, keeping every exception."""
    backend = backend_class(cfg.kind)(cfg, engine.service(cfg.name))
    hay.add(f"{cfg.name} repr", backend)
    hay.add(f"{cfg.name} config", cfg)
    for step in ("probe", "detect", "collect"):
        try:
            getattr(backend, step)()
        except ProbeError as e:
            hay.add(f"{cfg.name} {step}", e)
        except Exception as e:  # a kind bug: still must not carry the key
            hay.add(f"{cfg.name} {step} (not a ProbeError)", e)
    for attr in ("detail", "models", "version", "capabilities"):
        hay.add(f"{cfg.name}.{attr}", getattr(backend, attr, None))
    if hasattr(backend, "capabilities"):
        hay.add(f"{cfg.name} capabilities", backend.capabilities.as_dict())
        hay.add(f"{cfg.name} missing", backend.capabilities.missing)


# ---- the scenarios ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [SECRET, SECRET + "\n", f"  {SECRET}\r\n"], ids=["plain", "newline", "crlf"])
@pytest.mark.parametrize("server", list(SERVERS))
def test_key_never_leaves_through_collectors_status_or_cli(
    server: str, value: str, hay: Haystack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(KEY_ENV, value)
    with echo_server(SERVERS[server]) as srv:
        cfgs = configs(srv.url)
        engine = _core.Monitor(manual_clock=True, start_time=T0)
        try:
            for cfg in cfgs:
                drive_directly(cfg, engine, hay)
            for status in check_once(cfgs):
                hay.add(f"check_once {status.name}", status)
            hay.add("engine snapshot", engine.snapshot("5m"))
        finally:
            engine.close()
        # The CLI's `check`, as a user runs it (text and --json).
        toml = "".join(
            f'[[backend]]\nname = "{c.name}"\nkind = "{c.kind}"\nurl = "{c.url}"\napi_key_env = "{KEY_ENV}"\n'
            for c in cfgs
        )
        config = tmp_path / "backends.toml"
        config.write_text(toml)
        for extra in ([], ["--json"]):
            cli_main(["check", "--config", str(config), *extra])
            out = capsys.readouterr()
            hay.add(f"cli check {extra}", out.out + out.err)
    assert hay.leaks() == []


def test_key_from_a_key_file_never_leaves_through_collectors_status_or_cli(
    hay: Haystack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same channels as above with the key in an ``api_key_file``
    (the variable unset): it is sent, and never shown."""
    monkeypatch.delenv(KEY_ENV, raising=False)
    path = key_file(tmp_path)
    with echo_server(echo_401) as srv:
        cfgs = configs(srv.url, key_file=path)
        engine = _core.Monitor(manual_clock=True, start_time=T0)
        try:
            for cfg in cfgs:
                drive_directly(cfg, engine, hay)
            for status in check_once(cfgs):
                hay.add(f"check_once {status.name}", status)
        finally:
            engine.close()
        config = tmp_path / "backends.toml"
        config.write_text("".join(
            f'[[backend]]\nname = "{c.name}"\nkind = "{c.kind}"\nurl = "{c.url}"\napi_key_file = "{path}"\n' for c in cfgs
        ))
        for extra in ([], ["--json"]):
            cli_main(["check", "--config", str(config), *extra])
            out = capsys.readouterr()
            hay.add(f"cli check {extra}", out.out + out.err)
    assert hay.leaks() == []


@pytest.mark.parametrize("source", ["env", "key_file"])
@pytest.mark.parametrize("server", list(SERVERS))
def test_key_never_reaches_exports_metrics_or_the_history_file(
    server: str, source: str, hay: Haystack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Collectors running against echoing servers with storage on: the
    statuses, every export, /metrics and the SQLite file bytes."""
    if source == "env":
        monkeypatch.setenv(KEY_ENV, SECRET)
        path = None
    else:
        monkeypatch.delenv(KEY_ENV, raising=False)
        path = key_file(tmp_path)
    db = tmp_path / "history.db"
    with echo_server(SERVERS[server]) as srv:
        m = Monitor(storage=db, flush_interval_s=0.2)
        try:
            with Collectors(m, configs(srv.url, key_file=path), allow_remote=False) as col:
                deadline = time.monotonic() + 3.0
                while time.monotonic() < deadline and any(s.state == "unknown" for s in col.status().values()):
                    time.sleep(0.05)
                for name, status in col.status().items():
                    hay.add(f"collectors {name}", status)
                hay.add("collectors repr", repr(col))
            # LLM requests of the hosted backend, failed ones included.
            m.llm.record("openai", "gpt-4o", {"prompt_tokens": 10, "completion_tokens": 5}, 120.0)
            m.llm.record("openai", "gpt-4o", None, 80.0, ok=False, error="AuthenticationError")
            m.flush()
            for fmt in ("csv", "json"):
                hay.add(f"export {fmt}", m.export(tmp_path / f"export.{fmt}", fmt, window="1h").read_bytes())
                hay.add(f"llm export {fmt}", m.llm.export(tmp_path / f"llm.{fmt}", fmt, "1h").read_bytes())
            hay.add("openmetrics", m.openmetrics())
            hay.add("prometheus text", m.openmetrics(openmetrics=False))
            hay.add("stats", m.snapshot("1h"))
            hay.add("monitor repr", repr(m))
        finally:
            m.close()
    for f in sorted(tmp_path.glob("history.db*")):
        hay.add(f"sqlite {f.name}", f.read_bytes())
    assert any(name.startswith("sqlite history.db") for name, _ in hay.parts)
    assert hay.leaks() == []


def test_a1111_basic_credentials_never_leave(hay: Haystack, monkeypatch: pytest.MonkeyPatch) -> None:
    """``user:password`` for ``--api-auth`` goes out as HTTP Basic; neither
    it nor its base64 comes back in messages."""
    monkeypatch.setenv(KEY_ENV, f"{USER}:{SECRET}")
    with echo_server(echo_401) as srv:
        engine = _core.Monitor(manual_clock=True, start_time=T0)
        try:
            cfg = BackendConfig("webui", "a1111", srv.url, api_key_env=KEY_ENV)
            drive_directly(cfg, engine, hay)
            hay.add("check_once", check_once([cfg])[0])
        finally:
            engine.close()
    assert hay.leaks() == []


@pytest.mark.parametrize("kind", KINDS)
def test_a_key_with_a_line_break_inside_is_refused_without_quoting_it(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """http.client refuses such a header with a message quoting it whole;
    the config refuses the key first, naming only the variable."""
    broken = SECRET[:20] + "\n" + SECRET[20:]
    monkeypatch.setenv(KEY_ENV, broken)
    cfg = BackendConfig(f"{kind}-svc", kind, "http://127.0.0.1:9", api_key_env=KEY_ENV)
    with pytest.raises(ConfigError) as info:
        cfg.headers()
    assert KEY_ENV in str(info.value)
    assert find_leaks("message", str(info.value), broken) == []
    (status,) = check_once([cfg])
    assert find_leaks("status", repr(status) + json.dumps(asdict(status)), SECRET[:20]) == []
    assert find_leaks("status", repr(status) + json.dumps(asdict(status)), SECRET[20:]) == []
    assert status.last_error and KEY_ENV in status.last_error


def test_surrounding_whitespace_is_not_part_of_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, f"  {SECRET}\r\n")
    cfg = BackendConfig("gpt", "openai", "http://127.0.0.1:9", api_key_env=KEY_ENV)
    assert cfg.api_key() == SECRET
    assert cfg.headers() == {"Authorization": f"Bearer {SECRET}"}
    monkeypatch.setenv(KEY_ENV, " \n")
    assert cfg.api_key() is None and cfg.headers() == {}


# ---- texts openai.py quotes from the server (each once leaked a piece of the key) ---------------

OPENAI_ECHOES: dict[str, Callable[[BaseHTTPRequestHandler], Reply]] = {
    # The message was cut to 200 characters before the key was redacted, so
    # a key cut by the limit kept its first characters.
    "500-json-cut": echo_500,
    "500-text-cut": echo_500_text,
    # The 503 "Loading model" message was returned before the redaction step.
    "503-loading-model": echo_503_loading,
    # The 501 message went into the detection note unredacted.
    "501-not-served": echo_501,
    # prometheus_client's parse error quotes the offending /metrics line,
    # which went into capabilities.missing['queue'] (BackendStatus.missing).
    "metrics-parse-error": echo_metrics,
}


@pytest.mark.parametrize("case", list(OPENAI_ECHOES))
def test_openai_error_texts_never_carry_the_key(case: str, hay: Haystack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    route = OPENAI_ECHOES[case]
    with echo_server(route) as srv:
        engine = _core.Monitor(manual_clock=True, start_time=T0)
        try:
            for cfg in configs(srv.url):
                if cfg.kind == "openai":
                    drive_directly(cfg, engine, hay)
                    hay.add("check_once", check_once([cfg])[0])
        finally:
            engine.close()
    assert hay.leaks() == []


@pytest.mark.parametrize("route", [echo_500, echo_500_text, echo_503_loading, echo_501], ids=lambda r: r.__name__)
@pytest.mark.parametrize("kind", ["comfyui", "a1111", "ollama", "http"])
def test_other_kinds_never_echo_error_texts(
    kind: str, route: Callable[[BaseHTTPRequestHandler], Reply], hay: Haystack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    with echo_server(route) as srv:
        engine = _core.Monitor(manual_clock=True, start_time=T0)
        try:
            cfg = BackendConfig(f"{kind}-svc", kind, srv.url, api_key_env=KEY_ENV)
            drive_directly(cfg, engine, hay)
            hay.add("check_once", check_once([cfg])[0])
        finally:
            engine.close()
    assert hay.leaks() == []


# ---- notification URLs (webhook, Slack, Discord, ntfy) ----------------------------------------------

#: A webhook token as Slack and Discord put it in the path, and a generic one in the query.
HOOK_SECRET = "T04XK9QZ7/B05LMN3PQ8R/vZ2kH8sN4qW7yB1dF6gJ0mC3"
TOKEN_SECRET = "whk_9fA2cL7pQx4RtV8nB3mK6sD1"


class _EchoPathServer:
    """Answers every POST with a status whose reason phrase, headers and
    body quote the request line back (as a misbehaving proxy might)."""

    def __init__(self, status: int) -> None:
        import threading
        from http.server import ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = f"no such hook: {self.path}".encode()
                self.send_response(status, f"Bad hook {self.path}")
                self.send_header("X-Echo", self.path)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.mark.parametrize("status", [500, 404])
def test_notification_urls_never_leave_through_status_logs_reprs_or_errors(
    status: int, hay: Haystack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from movie_director_metrics.alerts import AlertEvent, Notifier, NotifyTarget, load_alerts_file
    from movie_director_metrics.cli import _announce_alerts, _load_alerts, build_parser

    srv = _EchoPathServer(status)
    try:
        urls = {
            "webhook": f"{srv.url}/hooks/{HOOK_SECRET}?token={TOKEN_SECRET}",
            "slack": f"{srv.url}/services/{HOOK_SECRET}",
            "discord": f"{srv.url}/api/webhooks/{HOOK_SECRET}",
            "ntfy": f"{srv.url}/{HOOK_SECRET}",
        }
        refused = f"http://127.0.0.1:9/{HOOK_SECRET}?token={TOKEN_SECRET}"
        remote = f"https://hooks.slack.com/services/{HOOK_SECRET}"
        targets = [NotifyTarget(kind, kind, url) for kind, url in urls.items()]  # type: ignore[arg-type]
        targets += [NotifyTarget("refused", "webhook", refused), NotifyTarget("remote", "slack", remote)]
        ev = AlertEvent(T0, "r", "svc", "normal", "firing", 1.0, 0.0, "critical", "normal -> firing: r on svc")
        notifier = Notifier(targets, backoff_s=0.01, retries=1, timeout_s=2)
        try:
            notifier.submit(ev)
            assert notifier.flush(10.0)
            statuses = notifier.status()
            for name, st in statuses.items():
                hay.add(f"status {name}", repr(st) + json.dumps(asdict(st)))
            hay.add("notifier repr", repr(notifier))
            for t in targets:
                hay.add(f"target repr {t.name}", repr(t) + str(t))
        finally:
            notifier.close()
        assert statuses["webhook"].failed == 1 and statuses["webhook"].last_error
        assert statuses["remote"].state == "blocked"
        # Config errors quote the URL only redacted.
        for table in (f'kind = "pager"\nurl = "{urls["webhook"]}"', f'kind = "desktop"\nurl = "{urls["slack"]}"',
                      f'kind = "slack"\nurl = "{urls["slack"]} x"', f'kind = "ntfy"\nurl = "{urls["ntfy"].replace(srv.url, "http://127.0.0.1:99999")}"'):
            with pytest.raises(ConfigError) as info:
                load_alerts_file(f'[[notify]]\nname = "n"\n{table}\n')
            hay.add("config error", info.value)
        # What serve/watch print at start.
        rules = tmp_path / "alerts.toml"
        rules.write_text(f'[[notify]]\nname = "hook"\nkind = "webhook"\nurl = "{remote}"\n', encoding="utf-8")
        monitor = Monitor()
        try:
            alerts, cli_notifier = _load_alerts(monitor, build_parser().parse_args(["serve", "--rules", str(rules)]), False)
            _announce_alerts(alerts, cli_notifier, sys.stdout)
            cli_notifier.close()
        finally:
            monitor.close()
        out = capsys.readouterr()
        hay.add("cli", out.out + out.err)
    finally:
        srv.close()
    text = "\n".join(str(t) for _, t in hay.parts)
    assert "Bad hook" in text or status == 404  # the server's own words did reach us
    assert hay.leaks(HOOK_SECRET) == [] and hay.leaks(TOKEN_SECRET) == []
