"""backends.toml beyond the basics (issue 18 item 5): the default probe
interval of hosted backends, which hosts count as hosted, and API keys in
key files — refused unless only their owner can read them.  Real files
with real modes; the Windows branch of the mode check is driven through
its own function (Windows has no mode bits to check)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from movie_director_metrics.collectors.config import (
    HOSTED_INTERVAL_S,
    LOCAL_INTERVAL_S,
    BackendConfig,
    default_alerts_path,
    key_file_mode_problem,
    load_config,
    parse_config,
    read_key_file,
)
from movie_director_metrics.errors import ConfigError
from movie_director_metrics.net import is_hosted

SECRET = "sk-test-keyfile-7Hq2Lz9Wm4"


@pytest.mark.parametrize(
    ("host", "hosted"),
    [
        ("api.openai.com", True),
        ("api.anthropic.com.", True),
        ("8.8.8.8", True),
        ("[2606:4700::1111]", True),
        ("::ffff:8.8.8.8", True),
        ("127.0.0.1", False),
        ("localhost", False),
        ("api.localhost", False),
        ("[::1]", False),
        ("192.168.1.20", False),
        ("10.0.0.5", False),
        ("172.16.3.4", False),
        ("100.101.102.103", False),  # Tailscale / carrier NAT
        ("169.254.1.1", False),
        ("[fd12:3456::1]", False),
        ("gpu-box", False),
        ("render.local", False),
        ("nas.home.arpa", False),
        ("comfy.lan", False),
        ("", False),
    ],
)
def test_which_hosts_are_hosted(host: str, hosted: bool) -> None:
    assert is_hosted(host) is hosted


def test_backends_without_an_interval_get_one_by_where_they_are() -> None:
    cfgs = parse_config({"backend": [
        {"name": "gpt", "kind": "openai", "url": "https://api.openai.com"},
        {"name": "lan", "kind": "comfyui", "url": "http://192.168.1.20:8188"},
        {"name": "local", "kind": "ollama", "url": "http://127.0.0.1:11434"},
        {"name": "gpt-fast", "kind": "openai", "url": "https://api.openai.com", "interval_s": 30},
    ]})
    assert [c.interval_s for c in cfgs] == [HOSTED_INTERVAL_S, LOCAL_INTERVAL_S, LOCAL_INTERVAL_S, 30]
    assert HOSTED_INTERVAL_S >= 300


def test_defaults_table_interval_applies_to_hosted_backends_too() -> None:
    (c,) = parse_config({"defaults": {"interval_s": 5}, "backend": [{"name": "gpt", "kind": "openai", "url": "https://api.openai.com"}]})
    assert c.interval_s == 5


def _key(tmp_path: Path, mode: int, text: str = SECRET + "\n") -> Path:
    p = tmp_path / "api.key"
    p.write_text(text)
    p.chmod(mode)
    return p


@pytest.mark.skipif(os.name != "posix", reason="mode bits: POSIX only")
def test_a_key_file_only_the_owner_can_read_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = _key(tmp_path, 0o600)
    monkeypatch.delenv("MDM_TEST_UNSET_KEY", raising=False)
    c = BackendConfig("gpt", "openai", "https://api.openai.com", api_key_env="MDM_TEST_UNSET_KEY", api_key_file=str(p))
    assert c.api_key() == SECRET
    assert c.headers() == {"Authorization": f"Bearer {SECRET}"}
    assert c.key_source() == f"key file {p}" and c.key_problem() is None
    monkeypatch.setenv("MDM_TEST_UNSET_KEY", "from-env")
    assert c.api_key() == "from-env" and c.key_source() == "$MDM_TEST_UNSET_KEY"  # the variable wins when set


@pytest.mark.skipif(os.name != "posix", reason="mode bits: POSIX only")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_file_others_can_read_is_refused_without_quoting_it(tmp_path: Path, mode: int) -> None:
    p = _key(tmp_path, mode)
    with pytest.raises(ConfigError) as e:
        read_key_file(p)
    assert str(p) in str(e.value) and f"{mode:o}" in str(e.value) and "chmod 600" in str(e.value)
    assert SECRET not in str(e.value)
    c = BackendConfig("gpt", "openai", "https://api.openai.com", api_key_file=str(p))
    assert c.api_key() is None and c.headers() == {}  # refused: nothing is sent
    problem = c.key_problem()
    assert problem is not None and "lets others read it" in problem and SECRET not in problem


@pytest.mark.parametrize(
    ("text", "why"),
    [("", "empty"), ("   \n", "empty"), ("x" * 20_000, "larger than"), (None, "not UTF-8")],
)
def test_a_key_file_that_holds_no_key_is_refused(tmp_path: Path, text: str | None, why: str) -> None:
    p = tmp_path / "api.key"
    p.write_bytes(b"\xff\xfe\x00bad" if text is None else text.encode())
    p.chmod(0o600)
    with pytest.raises(ConfigError, match=why):
        read_key_file(p)


def test_a_missing_key_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file") as e:
        read_key_file(tmp_path / "nope.key")
    assert "nope.key" in str(e.value)


def test_the_mode_check_per_os() -> None:
    uid = os.getuid() if hasattr(os, "getuid") else 0
    assert key_file_mode_problem(0o100600, uid, posix=True) is None
    assert key_file_mode_problem(0o100400, uid, posix=True) is None
    assert "others" in (key_file_mode_problem(0o100644, uid, posix=True) or "")
    assert "not by this user" in (key_file_mode_problem(0o100600, uid + 1, posix=True) or "")
    # Windows: st_mode says nothing about who can read (ACLs do): accepted.
    assert key_file_mode_problem(0o100666, 0, posix=False) is None


def test_backends_toml_takes_a_key_file_but_never_a_key(tmp_path: Path) -> None:
    cfg = tmp_path / "backends.toml"
    cfg.write_text('[[backend]]\nname = "gpt"\nkind = "openai"\nurl = "https://api.openai.com"\napi_key_file = "~/keys/openai"\n')
    (c,) = load_config(cfg)
    assert c.api_key_file == "~/keys/openai" and c.interval_s == HOSTED_INTERVAL_S
    cfg.write_text('[[backend]]\nname = "gpt"\nkind = "openai"\nurl = "https://api.openai.com"\napi_key = "sk-x"\n')
    with pytest.raises(ConfigError, match="api_key_file"):
        load_config(cfg)
    cfg.write_text('[[backend]]\nname = "gpt"\nkind = "openai"\nurl = "https://api.openai.com"\napi_key_file = 3\n')
    with pytest.raises(ConfigError, match=r"api_key_file = 3: expected a string"):
        load_config(cfg)


def test_alerts_file_sits_next_to_the_backends_file(tmp_path: Path) -> None:
    assert default_alerts_path(tmp_path / "backends.toml") == tmp_path / "alerts.toml"
