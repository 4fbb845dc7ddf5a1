"""Every cause of docs/troubleshooting.md, reproduced over real loopback
HTTP through the real collectors (``check_once``): the backend's state,
its cause and a hint that names what to do.

Where the replies come from: recorded from real servers
(tests/fixtures/backends/*, tests/fixtures/recorded/comfyui), or written
from the servers' own sources where the server cannot run here — each test
says which.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from loopback import FIXTURES, HangingServer, LoopbackServer, Reply, refused_url
from movie_director_metrics.collectors.config import BackendConfig
from movie_director_metrics.collectors.diagnosis import CAUSES, Diagnosis, diagnose, signature_of
from movie_director_metrics.collectors.http import ProbeError
from movie_director_metrics.collectors.scheduler import BackendStatus, check_once

BACKENDS = Path(__file__).resolve().parent / "fixtures" / "backends"


def backend(*parts: str) -> bytes:
    return BACKENDS.joinpath(*parts).read_bytes()


def check(kind: str, url: str, *, allow_remote: bool = False, **kw: object) -> BackendStatus:
    cfg = BackendConfig(name="b", kind=kind, url=url, connect_timeout_s=0.5, read_timeout_s=0.5, **kw)  # type: ignore[arg-type]
    (status,) = check_once([cfg], allow_remote=allow_remote)
    return status


def down_with(status: BackendStatus, cause: str, *in_hint: str) -> None:
    # A server still loading its model answers: "loading", not "down".
    assert status.state == ("loading" if cause == "model_loading" else "down"), status
    assert status.cause == cause, (status.cause, status.hint, status.last_error)
    assert status.hint and all(s in status.hint for s in in_hint), status.hint


def test_every_documented_cause_is_in_the_table() -> None:
    page = (Path(__file__).resolve().parents[1] / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    for cause in CAUSES:
        assert f"| `{cause}` |" in page, f"docs/troubleshooting.md has no row for {cause}"
    with pytest.raises(ValueError, match="expected one of"):
        Diagnosis("bogus", "x")


# ---- the network ---------------------------------------------------------------------


def test_refused_names_the_usual_port_and_the_listen_flag() -> None:
    down_with(check("comfyui", refused_url()), "refused", "nothing listens at 127.0.0.1:", "8188", "--listen")
    down_with(check("ollama", refused_url()), "refused", "11434", "OLLAMA_HOST=0.0.0.0")


def test_dns() -> None:
    # .invalid never resolves (RFC 6761): a real lookup, answered at once.
    down_with(check("comfyui", "http://no-such-host.invalid:8188", allow_remote=True), "dns", "no-such-host.invalid")


def test_tls_to_a_plain_http_server_says_use_http() -> None:
    with LoopbackServer({("GET", "/api/prompt"): Reply(200, {"exec_info": {"queue_remaining": 0}})}) as srv:
        down_with(check("comfyui", srv.url.replace("http://", "https://")), "tls", "use http://")


def test_read_timeout_names_the_limit() -> None:
    with HangingServer() as srv:  # accepts and never answers
        status = check("comfyui", srv.url)
    down_with(status, "timeout", "read timeout", "read_timeout_s")
    assert "0.5 s" in (status.last_error or "")


def test_connect_timeout_is_told_apart() -> None:
    # A connect timeout cannot be produced on loopback (the kernel answers
    # at once), so this one is the pure function on the error the client
    # raises for it (the client side: tests/test_http_client.py).
    d = diagnose("comfyui", "10.0.0.9", 8188, ProbeError("timeout", "no connection", 500.0, phase="connect"))
    assert d.cause == "timeout" and "connect_timeout_s" in d.hint and "firewall" in d.hint


def test_reset_mid_request() -> None:
    with LoopbackServer({("GET", "/api/prompt"): Reply(drop=True)}) as srv:
        down_with(check("comfyui", srv.url), "reset", "closed the connection")


def test_blocked_and_disabled() -> None:
    status = check("comfyui", "http://192.0.2.10:8188")  # TEST-NET: never contacted
    assert (status.state, status.cause) == ("blocked", "blocked") and "--allow-remote" in (status.hint or "")
    status = check("comfyui", refused_url(), enabled=False)
    assert (status.state, status.cause) == ("disabled", "disabled") and "enabled = true" in (status.hint or "")


def test_proxy_answers_instead_of_the_backend() -> None:
    # nginx's own 502 page, as a reverse proxy in front of a stopped backend sends it.
    page = "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>"
    with LoopbackServer({("GET", "/api/prompt"): Reply(502, page, headers={"Content-Type": "text/html"})}) as srv:
        down_with(check("comfyui", srv.url), "proxy", "proxy", "502")
    with LoopbackServer({("GET", "/api/prompt"): Reply(407, "Proxy Authentication Required")}) as srv:
        down_with(check("comfyui", srv.url), "proxy", "407")


# ---- the server's answer -------------------------------------------------------------


def test_auth_names_the_variable_the_key_comes_from(monkeypatch: pytest.MonkeyPatch) -> None:
    # OpenAI's real 401 reply (recorded); the key must not appear in the hint.
    monkeypatch.setenv("MDM_TEST_KEY", "sk-test-1234567890abcdef")
    with LoopbackServer({("GET", "/v1/models"): Reply(401, backend("openai", "error_401_invalid_api_key.json"))}) as srv:
        status = check("openai", srv.url, api_key_env="MDM_TEST_KEY")
    down_with(status, "auth", "$MDM_TEST_KEY")
    assert "sk-test-1234567890abcdef" not in json.dumps(status.__dict__)


@pytest.mark.skipif(os.name != "posix", reason="mode bits: POSIX only")
def test_auth_says_where_the_key_came_from_or_why_none_was_sent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key file used: the hint names it; a key file others can read: no
    key is sent, and the hint says why (never the key)."""
    monkeypatch.delenv("MDM_TEST_KEY", raising=False)
    key = tmp_path / "openai.key"
    key.write_text("sk-test-keyfile-abcdef123456\n")
    key.chmod(0o600)
    reply = {("GET", "/v1/models"): Reply(401, backend("openai", "error_401_invalid_api_key.json"))}
    with LoopbackServer(reply) as srv:
        used = check("openai", srv.url, api_key_file=str(key))
        key.chmod(0o644)
        refused = check("openai", srv.url, api_key_env="MDM_TEST_KEY", api_key_file=str(key))
    down_with(used, "auth", f"the key from key file {key}")
    down_with(refused, "auth", "no key: key file", "lets others read it", "chmod 600")
    for s in (used, refused):
        assert "sk-test-keyfile" not in json.dumps(s.__dict__)


def test_api_disabled_a1111_without_api_is_not_up() -> None:
    # A real webui started without --api: the ping answers, /sdapi/* 404 {"detail":"Not Found"} (recorded).
    routes = {
        ("GET", "/internal/ping"): Reply(200, backend("a1111", "internal_ping.json")),
        ("GET", "/internal/pending-tasks"): Reply(200, backend("a1111", "internal_pending-tasks_idle.json")),
    }
    for path in ("/sdapi/v1/progress", "/sdapi/v1/options", "/sdapi/v1/memory"):
        routes[("GET", path)] = Reply(404, backend("a1111", "sdapi_404_no_api_flag.json"))
    with LoopbackServer(routes) as srv:
        down_with(check("a1111", srv.url), "api_disabled", "--api")


def test_wrong_kind_says_what_it_found() -> None:
    # Ollama on the port a ComfyUI backend is configured at.  Replies written
    # from Ollama's server/routes.go (GET / -> "Ollama is running", /api/tags).
    ollama = {("GET", "/"): Reply(200, "Ollama is running"), ("GET", "/api/tags"): Reply(200, {"models": []})}
    with LoopbackServer(ollama) as srv:
        status = check("comfyui", srv.url)
    down_with(status, "wrong_kind", "looks like Ollama, not ComfyUI", 'kind = "ollama"')
    # ComfyUI (its recorded /system_stats) where Ollama is configured.
    comfy = {("GET", "/system_stats"): Reply(200, (FIXTURES / "comfyui" / "system_stats.json").read_bytes())}
    with LoopbackServer(comfy) as srv:
        down_with(check("ollama", srv.url), "wrong_kind", "looks like ComfyUI, not Ollama")


def test_not_found_when_nothing_recognisable_answers() -> None:
    with LoopbackServer({}) as srv:  # 404 for every path
        down_with(check("comfyui", srv.url), "not_found", "right port and path")


def test_model_loading_is_not_down_for_nothing() -> None:
    # llama.cpp's real 503 while it loads its model (recorded).
    with LoopbackServer({("GET", "/v1/models"): Reply(503, backend("llamacpp", "health_503_loading_model.json"))}) as srv:
        down_with(check("openai", srv.url), "model_loading", "loading its model", "Loading model")


def test_saturated_quotes_the_server() -> None:
    # Ollama's real 503 when its queue is full (recorded).
    with LoopbackServer({("GET", "/api/version"): Reply(503, backend("ollama", "error_503_server_busy.json"))}) as srv:
        down_with(check("ollama", srv.url), "saturated", "server busy", "OLLAMA_NUM_PARALLEL")


def test_server_error_and_oom_quote_the_server() -> None:
    # Written from ComfyUI's server.py: an aiohttp 500 carries the exception text.
    with LoopbackServer({("GET", "/api/prompt"): Reply(500, {"error": "RuntimeError: boom"})}) as srv:
        down_with(check("comfyui", srv.url), "server_error", "HTTP 500", "RuntimeError: boom", "console")
    oom = {"error": "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"}
    with LoopbackServer({("GET", "/api/prompt"): Reply(500, oom)}) as srv:
        down_with(check("comfyui", srv.url), "oom", "out of memory", "smaller model")


def test_bad_reply_when_the_port_sends_something_else() -> None:
    with LoopbackServer({("GET", "/api/prompt"): Reply(200, "certainly not json")}) as srv:
        down_with(check("comfyui", srv.url), "bad_reply", "another program")


def test_up_has_no_cause() -> None:
    with LoopbackServer({("GET", "/api/prompt"): Reply(200, {"exec_info": {"queue_remaining": 0}}),
                         ("GET", "/prompt"): Reply(200, {"exec_info": {"queue_remaining": 0}})}) as srv:
        status = check("comfyui", srv.url)
    assert status.state == "up" and status.cause is None and status.hint is None


def test_signatures_come_from_real_replies() -> None:
    assert signature_of("/system_stats", 200, (FIXTURES / "comfyui" / "system_stats.json").read_bytes()) == "comfyui"
    assert signature_of("/internal/ping", 200, backend("a1111", "internal_ping.json")) == "a1111"
    assert signature_of("/v1/models", 200, backend("lmstudio", "v1_models.json")) == "openai"
    assert signature_of("/v1/models", 404, b"{}") is None
    assert signature_of("/", 200, b"<html>hello</html>") is None


def test_check_json_carries_cause_and_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from movie_director_metrics.cli import main

    cfg = tmp_path / "b.toml"
    cfg.write_text(f'[[backend]]\nname = "c"\nkind = "comfyui"\nurl = "{refused_url()}"\n', encoding="utf-8")
    assert main(["check", "--config", str(cfg), "--json"]) == 1
    (b,) = json.loads(capsys.readouterr().out)["backends"]
    assert b["cause"] == "refused" and "nothing listens" in b["hint"]
