"""Notifications: ``[[notify]]`` targets and the ``Notifier`` against real
receivers on loopback.

Alert events come from a real ``Monitor(manual_clock=True)`` and its
``AlertManager``; receivers are real HTTP servers on 127.0.0.1
(``tests/loopback.py``) that record what they were sent, answer 500 on
purpose, or accept and never answer.  The desktop kind runs a real
``notify-send`` stand-in put first on PATH.  ``pytest -s`` prints the
measured cost of a stuck receiver to evaluation and recording.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from loopback import HangingServer, LoopbackServer, Reply, wait_until
from movie_director_metrics import ConfigError, Monitor
from movie_director_metrics.alerts import (
    AlertEvent,
    AlertManager,
    AlertRule,
    Notifier,
    NotifyTarget,
    load_alerts_file,
    parse_notify,
    parse_notify_tables,
    parse_rules,
    redact_url,
)
from movie_director_metrics.alerts import payloads

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


# ---- a recording receiver -------------------------------------------------------------


class Receiver:
    """A loopback HTTP server that records each POST (path, headers, body)
    and answers with the next status of ``statuses`` (then 200)."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self._lock = threading.Lock()
        self.server = LoopbackServer()
        self.server.routes = _AnyPath(self._answer)  # type: ignore[assignment]
        self.url = self.server.url

    def _answer(self, handler: BaseHTTPRequestHandler) -> Reply:
        with self._lock:
            self.requests.append((handler.path, dict(handler.headers.items()), getattr(handler, "request_body", b"")))
            status = self.statuses.pop(0) if self.statuses else 200
        return Reply(status, {"ok": status == 200})

    def json(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, _, body in self.requests]

    def close(self) -> None:
        self.server.close()


class _AnyPath(dict[tuple[str, str], Any]):
    def __init__(self, route: Any) -> None:
        super().__init__()
        self.route = route

    def get(self, key: Any, default: Any = None) -> Any:  # type: ignore[override]
        return self.route if key[0] == "POST" else None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def mon() -> Iterator[Monitor]:
    with Monitor(manual_clock=True, start_time=T0) as m:
        yield m


def temp_rule(**kw: Any) -> AlertRule:
    args: dict[str, Any] = dict(name="gpu-hot", target="comfyui", metric="gauge:gpu_temp_c", comparator=">",
                                threshold=80, recovery_threshold=70, window="1m", severity="critical")
    args.update(kw)
    return AlertRule(**args)


def drive(mon: Monitor, am: AlertManager, values: list[float], step_s: float = 10) -> list[AlertEvent]:
    svc = mon.service("comfyui")
    out: list[AlertEvent] = []
    for v in values:
        svc.set_resource(gpu_temp_c=v)
        out.extend(am.evaluate())
        mon.advance(step_s)
    return out


def event(to: str = "firing", frm: str = "normal", rule: str = "r", severity: str = "warning",
          kind: str = "transition") -> AlertEvent:
    return AlertEvent(T0, rule, "svc", frm, to, 95.0, 80.0, severity, f"{frm} -> {to}: [{severity}] {rule} on svc: x",
                      kind)  # type: ignore[arg-type]


# ---- the webhook: firing and resolved, retries, failures ------------------------------------


def test_webhook_receiver_gets_the_firing_and_the_resolved_payload(mon: Monitor, receiver: Receiver) -> None:
    am = AlertManager(mon, [temp_rule()])
    target = NotifyTarget("hook", "webhook", receiver.url + "/alerts?token=abc")
    with Notifier([target]) as notifier:
        notifier.attach(am)
        events = drive(mon, am, [60, 90, 90, 65])  # fires at t=10, resolves at t=30
        assert [(e.from_state, e.to_state) for e in events] == [("normal", "firing"), ("firing", "normal")]
        assert notifier.flush(5.0)
        status = notifier.status()["hook"]
    assert [p for p, _, _ in receiver.requests] == ["/alerts?token=abc"] * 2
    assert receiver.requests[0][1]["Content-Type"] == "application/json"
    firing, resolved = receiver.json()
    assert firing == {
        "version": 1, "source": "movie-director-metrics", "notify": "hook",
        "rule": "gpu-hot", "target": "comfyui", "state": "firing", "from_state": "normal", "to_state": "firing",
        "repeat": False, "value": 90.0, "threshold": 80.0, "severity": "critical", "message": events[0].message,
        "title": "FIRING [critical] gpu-hot on comfyui", "at": "2023-11-14T22:13:30Z", "at_epoch_s": T0 + 10,
    }
    assert (resolved["state"], resolved["from_state"], resolved["to_state"]) == ("resolved", "firing", "normal")
    assert (resolved["value"], resolved["threshold"], resolved["at"]) == (65.0, 70.0, "2023-11-14T22:13:50Z")
    assert (status.state, status.sent, status.failed, status.dropped, status.queued) == ("ok", 2, 0, 0, 0)
    assert status.last_sent_at is not None and status.last_error is None


def test_repeats_go_out_as_configured_by_the_rule(mon: Monitor, receiver: Receiver) -> None:
    am = AlertManager(mon, [temp_rule(repeat_s=20)])
    with Notifier([NotifyTarget("hook", "webhook", receiver.url)]) as notifier:
        notifier.attach(am)
        drive(mon, am, [90, 90, 90, 90, 90])  # fires at 0, repeats at 20 and 40
        assert notifier.flush(5.0)
    assert [(p["state"], p["repeat"], p["at_epoch_s"] - T0) for p in receiver.json()] == [
        ("firing", False, 0), ("firing", True, 20), ("firing", True, 40)]


def test_after_two_500s_the_retry_delivers(mon: Monitor) -> None:
    receiver = Receiver([500, 500])
    try:
        am = AlertManager(mon, [temp_rule()])
        with Notifier([NotifyTarget("hook", "webhook", receiver.url)], backoff_s=0.05) as notifier:
            notifier.attach(am)
            drive(mon, am, [90])
            assert notifier.flush(5.0)
            status = notifier.status()["hook"]
        assert len(receiver.requests) == 3  # 500, 500, then 200
        assert [p["state"] for p in receiver.json()] == ["firing"] * 3
        assert (status.state, status.sent, status.failed, status.attempts) == ("ok", 1, 0, 3)
        assert status.last_error == "HTTP 500 Internal Server Error"
    finally:
        receiver.close()


def test_a_resolve_waits_behind_its_firings_retry(mon: Monitor) -> None:
    receiver = Receiver([503])
    try:
        am = AlertManager(mon, [temp_rule()])
        with Notifier([NotifyTarget("hook", "webhook", receiver.url)], backoff_s=0.2) as notifier:
            notifier.attach(am)
            drive(mon, am, [90, 60])
            assert notifier.flush(5.0)
        assert [p["state"] for p in receiver.json()] == ["firing", "firing", "resolved"]
    finally:
        receiver.close()


def test_a_4xx_is_not_retried_and_retries_give_up(mon: Monitor) -> None:
    receiver = Receiver([404, 500, 500, 500])
    try:
        with Notifier([NotifyTarget("hook", "webhook", receiver.url)], backoff_s=0.01, retries=2) as notifier:
            notifier.submit(event())
            assert notifier.flush(5.0)
            assert (notifier.status()["hook"].state, notifier.status()["hook"].failed) == ("failing", 1)
            assert len(receiver.requests) == 1  # 404: the URL is wrong, no retry
            notifier.submit(event())
            assert notifier.flush(5.0)
            status = notifier.status()["hook"]
        assert len(receiver.requests) == 4  # 1 + (1 try + 2 retries)
        assert (status.state, status.sent, status.failed, status.attempts) == ("failing", 0, 2, 4)
    finally:
        receiver.close()


def test_nothing_listening_is_a_failure_with_a_reason() -> None:
    with HangingServer() as hang:
        port = hang.port
    with Notifier([NotifyTarget("hook", "webhook", f"http://127.0.0.1:{port}/x")], retries=0) as notifier:
        notifier.submit(event())
        assert notifier.flush(5.0)
        status = notifier.status()["hook"]
    assert status.state == "failing" and status.last_error is not None
    assert "ConnectionRefusedError" in status.last_error


# ---- a receiver that never answers ---------------------------------------------------------------


def _time_passes(mon: Monitor, am: AlertManager, n: int) -> tuple[list[float], list[float]]:
    """``n`` evaluations that each produce an event (the value alternates
    across the threshold), each after 20 recorded requests: per-call
    seconds of evaluate() and of a record()."""
    svc = mon.service("comfyui")
    evaluate_s, record_s = [], []
    for i in range(n):
        svc.set_resource(gpu_temp_c=90.0 if i % 2 == 0 else 60.0)
        t = time.perf_counter()
        for _ in range(20):
            svc.record(12.5)
        record_s.append((time.perf_counter() - t) / 20)
        t = time.perf_counter()
        events = am.evaluate()
        evaluate_s.append(time.perf_counter() - t)
        assert len(events) == 1
        mon.advance(1)
    return evaluate_s, record_s


def test_a_receiver_that_never_answers_does_not_delay_evaluation_or_recording() -> None:
    n = 1500
    figures = {}
    with HangingServer() as hang:
        for case in ("no notifier", "stuck receiver"):
            with Monitor(manual_clock=True, start_time=T0) as m:
                am = AlertManager(m, [temp_rule(recovery_threshold=80)])
                notifier = None
                if case == "stuck receiver":
                    notifier = Notifier([NotifyTarget("stuck", "webhook", hang.url + "/hook")], timeout_s=10,
                                        max_queue=50)
                    notifier.attach(am)
                _time_passes(m, am, 50)  # warm-up
                evaluate_s, record_s = _time_passes(m, am, n)
                if notifier is not None:
                    status = notifier.status()["stuck"]
                    # The worker is stuck in its first request: everything else waits or was dropped.
                    assert status.sent == 0 and status.queued == 51 and status.dropped == n + 50 - 51
                    t = time.perf_counter()
                    assert notifier.close(timeout_s=2.0)  # the stuck request is aborted
                    close_s = time.perf_counter() - t
                    assert close_s < 1.0
                figures[case] = (statistics.median(evaluate_s), max(evaluate_s), sum(evaluate_s),
                                 statistics.median(record_s))
    print()
    for case, (med, worst, total, rec) in figures.items():
        print(f"{case:>15}: evaluate() median {med * 1e6:7.1f} us, max {worst * 1e3:6.2f} ms, "
              f"{n} passes {total * 1e3:7.1f} ms; record() median {rec * 1e9:6.0f} ns")
    print(f"  close() with the request stuck: {close_s * 1e3:.1f} ms")
    base, stuck = figures["no notifier"], figures["stuck receiver"]
    # Generous: the stuck case only adds an append per event; a network wait would be 10 s a call.
    assert stuck[2] < 3 * base[2] + 0.05, figures
    assert stuck[0] < 3 * base[0] + 50e-6, figures
    assert stuck[3] < 3 * base[3] + 200e-9, figures
    assert stuck[1] < 0.5, figures  # no single pass waited on the receiver (timeout_s = 10)


def test_a_full_queue_drops_its_oldest_and_counts_them() -> None:
    with HangingServer() as hang:
        notifier = Notifier([NotifyTarget("stuck", "webhook", hang.url)], max_queue=3, timeout_s=30)
        try:
            notifier.submit(event(rule="r0"))
            wait_until(lambda: len(hang._held) == 1, what="the worker's connection")  # it is in flight now
            for i in range(1, 10):
                notifier.submit(event(rule=f"r{i}"))
            status = notifier.status()["stuck"]
            assert (status.queued, status.dropped, status.state) == (4, 6, "idle")  # 1 in flight + 3 waiting
        finally:
            assert notifier.close(timeout_s=2.0)
        status = notifier.status()["stuck"]
        assert (status.state, status.queued, status.dropped) == ("closed", 0, 9)


# ---- ntfy, Discord, Slack payloads -----------------------------------------------------------------


def test_ntfy_gets_its_own_format(receiver: Receiver) -> None:
    with Notifier([NotifyTarget("phone", "ntfy", receiver.url + "/mdm-alerts-7f3k")]) as notifier:
        notifier.submit(event(severity="critical"))
        notifier.submit(event("normal", "firing", rule="gpu-hot-ü"))
        assert notifier.flush(5.0)
    (path1, h1, body1), (_, h2, body2) = receiver.requests
    assert path1 == "/mdm-alerts-7f3k"
    assert h1["Content-Type"] == "text/plain; charset=utf-8"
    assert body1.decode() == "normal -> firing: [critical] r on svc: x"
    assert (h1["Title"], h1["Priority"], h1["Tags"]) == ("FIRING [critical] r on svc", "5", "rotating_light,critical")
    # Not ASCII: an RFC 2047 encoded word, as ntfy reads it.
    assert h2["Title"].startswith("=?UTF-8?B?") and base64.b64decode(h2["Title"][10:-2]).decode() == \
        "RESOLVED [warning] gpu-hot-ü on svc"
    assert (h2["Priority"], h2["Tags"]) == ("3", "white_check_mark,warning")
    assert body2.decode() == "firing -> normal: [warning] gpu-hot-ü on svc: x"


def test_discord_gets_content_and_an_embed_coloured_by_severity(receiver: Receiver) -> None:
    with Notifier([NotifyTarget("chat", "discord", receiver.url + "/api/webhooks/1/tok")]) as notifier:
        notifier.submit(event(severity="critical"))
        notifier.submit(event(severity="warning"))
        notifier.submit(event("normal", "firing", severity="critical"))
        assert notifier.flush(5.0)
    bodies = receiver.json()
    assert [b["embeds"][0]["color"] for b in bodies] == [0xD93025, 0xF29900, 0x188038]
    first = bodies[0]
    assert first["content"] == "FIRING [critical] r on svc"
    assert first["allowed_mentions"] == {"parse": []}
    embed = first["embeds"][0]
    assert embed["title"] == "FIRING [critical] r on svc" and embed["description"] == "normal -> firing: [critical] r on svc: x"
    assert embed["timestamp"] == "2023-11-14T22:13:20Z"
    assert [(f["name"], f["value"]) for f in embed["fields"]] == [("Value", "95"), ("Threshold", "80"), ("Target", "svc")]


def test_slack_gets_text_and_blocks_escaped(receiver: Receiver) -> None:
    with Notifier([NotifyTarget("team", "slack", receiver.url + "/services/T0/B0/x")]) as notifier:
        notifier.submit(event(rule="a<b>&c"))
        assert notifier.flush(5.0)
    (body,) = receiver.json()
    assert body["text"] == ("FIRING [warning] a&lt;b&gt;&amp;c on svc: normal -&gt; firing: [warning] a&lt;b&gt;&amp;c "
                            "on svc: x")
    section, context = body["blocks"]
    assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
    assert section["text"]["text"].startswith(":warning: *FIRING [warning] a&lt;b&gt;&amp;c on svc*\n")
    assert context["type"] == "context" and "value 95, threshold 80" in context["elements"][0]["text"]


# ---- filters ------------------------------------------------------------------------------------------


def test_filters_by_rule_glob_severity_and_state() -> None:
    t = NotifyTarget("t", "webhook", "http://127.0.0.1:9/x", rules=["comfy*", "exact"], min_severity="warning")
    assert t.wants(event(rule="comfyui-slow")) and t.wants(event(rule="exact", severity="critical"))
    assert not t.wants(event(rule="ollama-slow")) and not t.wants(event(rule="comfyui-slow", severity="info"))
    assert not t.wants(event("pending", rule="exact"))  # states default: firing and resolved
    assert t.wants(event("normal", "recovering", rule="exact")) and t.wants(event("firing", "firing", rule="exact",
                                                                                  kind="repeat"))
    assert not t.wants(event("firing", "recovering", rule="exact"))  # a relapse: only for "recovering" subscribers
    sev = NotifyTarget("s", "desktop", severities=["info", "critical"], states=["pending", "recovering"])
    assert sev.wants(event("pending", severity="info")) and sev.wants(event("normal", "pending", severity="critical"))
    assert not sev.wants(event("pending", severity="warning")) and not sev.wants(event(severity="critical"))
    assert sev.wants(event("firing", "recovering", severity="critical"))


def test_a_remote_target_is_not_contacted_without_allow_remote() -> None:
    remote = NotifyTarget("slack", "slack", "http://192.0.2.1/services/T0/B0/secret")  # TEST-NET-1: unroutable
    allowed = {"now": False}
    with Notifier([remote], allow_remote=lambda: allowed["now"], timeout_s=0.2, retries=0) as notifier:
        notifier.submit(event())
        notifier.submit(event())
        status = notifier.status()["slack"]
        assert (status.state, status.skipped, status.queued, status.attempts) == ("blocked", 2, 0, 0)
        allowed["now"] = True   # Online Access turned on: the next event is sent (and fails: nothing is there)
        notifier.submit(event())
        assert notifier.flush(5.0)
        status = notifier.status()["slack"]
        assert (status.state, status.skipped, status.attempts, status.failed) == ("failing", 2, 1, 1)


# ---- desktop ------------------------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="a shell-script stand-in for notify-send")
def test_desktop_runs_notify_send_with_an_argument_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    out = tmp_path / "argv.json"
    fake = bindir / "notify-send"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\n"
                    f"with open({str(out)!r}, 'a') as f:\n    f.write(json.dumps(sys.argv[1:]) + '\\n')\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "platform", "linux")  # the freedesktop branch, also on a macOS runner
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    with Notifier([NotifyTarget("me", "desktop")]) as notifier:
        notifier.submit(event(rule="-rf $(touch pwned)", severity="critical"))
        assert notifier.flush(10.0)
        status = notifier.status()["me"]
    assert (status.state, status.sent, status.url) == ("ok", 1, None)
    (argv,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert argv == ["--urgency=critical", "--app-name=movie-director-metrics", "--",
                    "FIRING [critical] -rf $(touch pwned) on svc",
                    "normal -> firing: [critical] -rf $(touch pwned) on svc: x"]
    assert not (tmp_path / "pwned").exists()


def test_desktop_without_a_notifier_is_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there
    with Notifier([NotifyTarget("me", "desktop")]) as notifier:
        notifier.submit(event())
        status = notifier.status()["me"]
    assert (status.state, status.skipped, status.sent) == ("unavailable", 1, 0)


# macOS and Windows cannot be run here; what matters there is the argument
# list handed to subprocess (no shell) and the quoting inside the script,
# so sys.platform and shutil.which (read at each call) are set to theirs.


def test_macos_command_escapes_for_applescript(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(payloads.shutil, "which", lambda name: "/usr/bin/osascript" if name == "osascript" else None)
    argv = payloads.desktop_command('say "hi" \\ done', "line one\nline two")
    assert argv == ["/usr/bin/osascript", "-e",
                    'display notification "line one line two" with title "say \\"hi\\" \\\\ done"']
    monkeypatch.setattr(payloads.shutil, "which", lambda name: None)
    assert payloads.desktop_command("t", "b") is None


def test_windows_command_is_an_encoded_toast_script(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    exe = r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe"
    monkeypatch.setattr(payloads.shutil, "which", lambda name: exe if name == "powershell" else None)
    argv = payloads.desktop_command("it's \u2019quoted\u2019", "$(Remove-Item x) `n")
    assert argv is not None and argv[:4] == [exe, "-NoProfile", "-NonInteractive", "-EncodedCommand"]
    script = base64.b64decode(argv[4]).decode("utf-16-le")
    assert "CreateTextNode('it''s \u2019\u2019quoted\u2019\u2019')" in script
    assert "CreateTextNode('$(Remove-Item x) `n')" in script  # single-quoted: nothing expands
    assert "ToastNotificationManager]::CreateToastNotifier(" in script
    monkeypatch.setattr(payloads.shutil, "which", lambda name: "pwsh.exe" if name == "pwsh" else None)
    assert payloads.desktop_command("t", "b")[0] == "pwsh.exe"  # type: ignore[index]


# ---- configuration -------------------------------------------------------------------------------------

ALERTS_TOML = """
[[rule]]
name = "comfyui-slow"
target = "comfyui"
metric = "p95_ms"
comparator = ">"
threshold = 2000

[[notify]]
name = "team-chat"
kind = "slack"
url = "https://hooks.slack.com/services/T000/B000/XXXXSECRET"
rules = ["comfyui-*"]
min_severity = "warning"

[[notify]]
name = "phone"
kind = "ntfy"
url = "https://ntfy.sh/mdm-7f3k2"
states = ["firing", "resolved", "pending"]

[[notify]]
name = "me"
kind = "desktop"
"""


def test_notify_tables_parse_next_to_rules(tmp_path: Path) -> None:
    path = tmp_path / "alerts.toml"
    path.write_text(ALERTS_TOML, encoding="utf-8")
    loaded = load_alerts_file(path)
    assert [r.name for r in loaded.rules] == ["comfyui-slow"] and loaded.where == str(path)
    assert [r.name for r in parse_rules(path)] == ["comfyui-slow"]
    chat, phone, me = parse_notify(path)
    assert loaded.targets == (chat, phone, me)
    assert chat == NotifyTarget("team-chat", "slack", "https://hooks.slack.com/services/T000/B000/XXXXSECRET",
                                rules=("comfyui-*",), min_severity="warning")
    assert phone.states == ("firing", "resolved", "pending") and me.url is None and me.states == ("firing", "resolved")
    assert repr(chat) == ("NotifyTarget(name='team-chat', kind='slack', url='https://hooks.slack.com/…', "
                          "rules=('comfyui-*',), min_severity='warning')")
    # The same from plain values (the Blender add-on's preferences).
    assert parse_notify_tables([{"name": "team-chat", "kind": "slack", "url": chat.url, "rules": ["comfyui-*"],
                                 "min_severity": "warning"}]) == [chat]


@pytest.mark.parametrize(("table", "fragment"), [
    ('name = "x"\nkind = "email"\nurl = "https://a.example/h"', "kind = 'email': expected one of webhook, ntfy"),
    ('name = "x"\nkind = "slack"', "notify[0] ('x'): url is missing"),
    ('name = "x"\nkind = "slack"\nurl = "hooks.slack.com/services/T0/B0/SECRETTOKEN"',
     "url = <42 characters>: expected an http(s) URL with a host for kind 'slack'"),
    ('name = "x"\nkind = "ntfy"\nurl = "https://ntfy.sh/"', "url = https://ntfy.sh/…: expected the topic's URL"),
    ('name = "x"\nkind = "desktop"\nurl = "https://a.example/SECRETTOKEN"', "url = https://a.example/…: expected no url"),
    ('name = "x"\nkind = "webhook"\nurl = "http://h/x"\nseverities = ["fatal"]', "severities = ('fatal',): expected a list"),
    ('name = "x"\nkind = "webhook"\nurl = "http://h/x"\nseverities = ["info"]\nmin_severity = "info"',
     "either severities or min_severity, not both"),
    ('name = "x"\nkind = "webhook"\nurl = "http://h/x"\nstates = ["normal"]', "states = ('normal',): expected a list from"),
    ('name = "x"\nkind = "webhook"\nurl = "http://h/x"\nstates = []', "states = (): expected at least one"),
    ('name = "x"\nkind = "webhook"\nurl = "http://h/x"\nrules = "a*"', "rules = 'a*': expected a list of strings"),
    ('name = "x"\nkind = "webhook"\nurl = "http://h/x"\ncolour = 3', "unknown key 'colour'; expected one of name"),
    ('kind = "webhook"\nurl = "http://h/x"', "notify[0]: name is missing"),
])
def test_bad_notify_tables_name_the_file_table_and_field(tmp_path: Path, table: str, fragment: str) -> None:
    path = tmp_path / "alerts.toml"
    path.write_text("[[notify]]\n" + table + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_alerts_file(path)
    text = str(info.value)
    assert text.startswith(f"{path}: notify[0]") and fragment in text, text
    assert "SECRETTOKEN" not in text


def test_notify_names_are_unique_and_unknown_top_level_keys_are_refused() -> None:
    twice = '[[notify]]\nname = "x"\nkind = "desktop"\n' * 2
    with pytest.raises(ConfigError, match=r"<alert rules>: notify\[1\] \('x'\): name 'x' is used twice"):
        parse_notify(twice)
    with pytest.raises(ConfigError, match="unknown top-level key 'notifier'"):
        parse_rules("[[notifier]]\nname = 'x'\n")
    with pytest.raises(ConfigError, match="name is used twice"):
        Notifier([NotifyTarget("x", "desktop")] * 2)


@pytest.mark.parametrize(("url", "shown"), [
    ("https://hooks.slack.com/services/T0/B0/XYZ", "https://hooks.slack.com/…"),
    ("http://user:pw@127.0.0.1:8080/hook?token=abc", "http://127.0.0.1:8080/…"),
    ("https://[::1]:9/x", "https://[::1]:9/…"),
    ("ntfy.sh/topic", "<13 characters>"),
    ("http://host:99999/x", "<19 characters>"),
    (None, "<NoneType>"),
])
def test_redact_url_keeps_scheme_and_host_only(url: Any, shown: str) -> None:
    assert redact_url(url) == shown


def test_close_is_bounded_and_logs_carry_no_url(caplog: pytest.LogCaptureFixture) -> None:
    receiver = Receiver([500] * 10)
    try:
        caplog.set_level(logging.INFO, logger="movie_director_metrics.alerts")
        notifier = Notifier([NotifyTarget("hook", "webhook", receiver.url + "/secret-path?token=abc")],
                            backoff_s=30)
        notifier.submit(event())
        wait_until(lambda: notifier.status()["hook"].state == "retrying", what="the first failure")
        t = time.perf_counter()
        assert notifier.close(timeout_s=2.0)
        assert time.perf_counter() - t < 1.0
        notifier.submit(event())  # ignored after close
        assert notifier.status()["hook"].dropped == 1
        text = "\n".join(r.getMessage() for r in caplog.records)
        assert "HTTP 500" in text and "secret-path" not in text and "token" not in text
    finally:
        receiver.close()
