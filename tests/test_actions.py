"""Actions (interrupt, delete, free, skip, unload) over real loopback HTTP:
the exact request each server's API expects, the server's answer reported,
nothing sent without confirmation, remote hosts behind online access.

The replies are written from each server's source (ComfyUI server.py
returns an empty 200 for /interrupt, /queue and /free; A1111's api.py
returns {} for /sdapi/v1/interrupt and /skip; Ollama's /api/generate with
keep_alive 0 returns a final {"done": true, "done_reason": "unload"}).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from loopback import LoopbackServer, Reply, refused_url
from movie_director_metrics.cli import main
from movie_director_metrics.collectors.actions import ACTIONS, run_action
from movie_director_metrics.collectors.config import BackendConfig


class Recorder:
    """A route that keeps each request body and answers ``reply``."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.bodies: list[Any] = []

    def __call__(self, handler: Any) -> Reply:
        raw = handler.request_body  # the loopback server read it already
        self.bodies.append(json.loads(raw) if raw else None)
        return self.reply


def cfg(kind: str, url: str, name: str = "b") -> BackendConfig:
    return BackendConfig(name=name, kind=kind, url=url)


@pytest.mark.parametrize(
    "kind,action,target,path,body",
    [
        ("comfyui", "interrupt", None, "/interrupt", {}),
        ("comfyui", "interrupt", "p-1", "/interrupt", {"prompt_id": "p-1"}),
        ("comfyui", "delete", "p-2", "/queue", {"delete": ["p-2"]}),
        ("comfyui", "free", None, "/free", {"unload_models": True, "free_memory": True}),
        ("a1111", "interrupt", None, "/sdapi/v1/interrupt", None),
        ("a1111", "skip", None, "/sdapi/v1/skip", None),
        ("ollama", "unload", "llama3.1:8b", "/api/generate", {"model": "llama3.1:8b", "keep_alive": 0}),
    ],
)
def test_each_action_sends_the_servers_own_request(kind: str, action: str, target: str | None, path: str,
                                                   body: Any) -> None:
    rec = Recorder(Reply(200, b"" if kind == "comfyui" else {}))
    with LoopbackServer({("POST", path): rec}) as srv:
        result = run_action(cfg(kind, srv.url), action, target)
        assert srv.hits == [("POST", path)]
    assert result.ok and result.status == 200, result
    assert rec.bodies == [body]


def test_the_servers_refusal_is_reported_with_its_text() -> None:
    with LoopbackServer({("POST", "/api/generate"): Reply(404, {"error": "model 'nope' not found"})}) as srv:
        result = run_action(cfg("ollama", srv.url), "unload", "nope")
    assert not result.ok and result.status == 404 and "model 'nope' not found" in result.message
    result = run_action(cfg("comfyui", refused_url()), "free")
    assert not result.ok and result.status is None and "connection refused" in result.message


def test_remote_hosts_need_online_access() -> None:
    result = run_action(cfg("comfyui", "http://192.0.2.10:8188"), "interrupt")  # TEST-NET: never contacted
    assert not result.ok and "online access is off: nothing was sent" in result.message


def test_unknown_actions_and_missing_targets_are_usage_errors() -> None:
    with pytest.raises(ValueError, match="a ollama backend has these actions: unload"):
        run_action(cfg("ollama", refused_url()), "interrupt")
    with pytest.raises(ValueError, match="delete needs a prompt_id"):
        run_action(cfg("comfyui", refused_url()), "delete")
    assert set(ACTIONS) == {"comfyui", "a1111", "ollama"}


def test_cli_confirms_then_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder(Reply(200, b""))
    with LoopbackServer({("POST", "/interrupt"): rec}) as srv:
        conf = tmp_path / "b.toml"
        conf.write_text(f'[[backend]]\nname = "comfy"\nkind = "comfyui"\nurl = "{srv.url}"\n', encoding="utf-8")
        # No terminal, no --yes: refused, nothing sent.
        monkeypatch.setattr("sys.stdin.isatty", lambda: False)
        assert main(["action", "comfy", "interrupt", "--config", str(conf)]) == 2
        assert "pass --yes" in capsys.readouterr().err and rec.bodies == []
        # A terminal that answers no: nothing sent.
        monkeypatch.setattr("sys.stdin.isatty", lambda: True)
        monkeypatch.setattr("builtins.input", lambda prompt: "n")
        assert main(["action", "comfy", "interrupt", "--config", str(conf)]) == 1 and rec.bodies == []
        assert capsys.readouterr().out == "nothing sent\n"
        # Yes: sent, and the answer printed.
        monkeypatch.setattr("builtins.input", lambda prompt: "y")
        assert main(["action", "comfy", "interrupt", "p-9", "--config", str(conf)]) == 0
        assert rec.bodies == [{"prompt_id": "p-9"}]
        assert capsys.readouterr().out.startswith("ok: Interrupt on comfy")
        assert main(["action", "comfy", "unload", "--yes", "--config", str(conf)]) == 2
        assert "these actions: interrupt, delete, free" in capsys.readouterr().err
        assert main(["action", "nobody", "free", "--yes", "--config", str(conf)]) == 2
