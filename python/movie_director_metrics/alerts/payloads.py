"""What each kind of notification target is sent for one alert event:
pure functions, no I/O (the :mod:`.notify` worker sends them).

* ``webhook``: a JSON object of our own (:func:`webhook_body`).
* ``ntfy``: ntfy's publish format -- the message as a plain-text body
  POSTed to the topic URL, with ``Title``, ``Priority`` (1-5) and ``Tags``
  (emoji short codes, comma-separated) headers; a header that is not
  ASCII is sent as an RFC 2047 encoded word, which ntfy decodes.
* ``discord``: an execute-webhook body: ``content`` (the one line a phone
  shows) and one embed whose colour is the severity's (green when
  resolved); ``allowed_mentions`` empty so that a rule or service name can
  never ping ``@everyone``.
* ``slack``: an incoming-webhook body: ``text`` (the notification's
  fallback) and ``blocks`` (a section in mrkdwn, a context line), with
  ``&``, ``<``, ``>`` escaped as Slack asks.
* ``desktop``: the command line of this OS's notifier
  (:func:`desktop_command`), an argument list for ``subprocess`` (no shell).
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import shutil
import sys
from dataclasses import dataclass

from .manager import AlertEvent
from .targets import NotifyTarget, event_state

#: Version of the ``webhook`` JSON object (a new key does not change it).
WEBHOOK_VERSION = 1

#: Embed colours (0xRRGGBB) by severity; resolved events are green.
DISCORD_COLOURS = {"critical": 0xD93025, "warning": 0xF29900, "info": 0x1A73E8, "resolved": 0x188038}
#: ntfy priorities (1 min .. 5 max/urgent) of a firing event by severity;
#: every other event (resolved, pending, recovering) is sent at 3 (default).
NTFY_PRIORITY = {"critical": 5, "warning": 4, "info": 3}
#: ntfy tags (emoji short codes) by what the notification says.
NTFY_TAGS = {"critical": "rotating_light", "warning": "warning", "info": "information_source",
             "resolved": "white_check_mark", "pending": "hourglass", "recovering": "chart_with_downwards_trend",
             "normal": "heavy_check_mark"}

APP_NAME = "movie-director-metrics"
#: Discord's limits: content 2000 characters, embed title 256, description 4096.
_DISCORD_CONTENT, _DISCORD_TITLE, _DISCORD_TEXT = 2000, 256, 4096


@dataclass(frozen=True)
class HttpRequest:
    """One POST: its headers (Content-Type included) and body bytes."""

    headers: dict[str, str]
    body: bytes


def iso_utc(at: float) -> str:
    """``at`` (epoch s) as ISO 8601 UTC (``2026-01-01T12:00:00Z``)."""
    try:
        return _dt.datetime.fromtimestamp(at, _dt.UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return f"epoch {at:g}"


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _value(v: float | None) -> str:
    return "no data" if v is None else f"{v:.4g}"


def title(event: AlertEvent) -> str:
    """``RESOLVED [critical] comfyui-slow on comfyui``: what a one-line
    notification shows."""
    said = event_state(event)
    state = said[0] if said is not None else event.to_state
    return f"{state.upper()}{' (repeat)' if event.kind == 'repeat' else ''} [{event.severity}] {event.rule} on {event.target}"


def webhook_body(event: AlertEvent, target: NotifyTarget) -> dict[str, object]:
    """The ``webhook`` JSON object: ``rule``, ``target`` (the alert's:
    a service, ``model:<name>`` ...), ``notify`` (this target's name),
    ``state`` (``firing``, ``resolved``, ``pending``, ``recovering``,
    ``normal``), ``from_state``/``to_state`` (the transition), ``repeat``,
    ``value``, ``threshold``, ``severity``, ``message``, ``at`` (ISO 8601
    UTC), ``at_epoch_s``, ``title``, ``source`` and ``version``."""
    said = event_state(event)
    return {
        "version": WEBHOOK_VERSION,
        "source": APP_NAME,
        "notify": target.name,
        "rule": event.rule,
        "target": event.target,
        "state": said[0] if said is not None else event.to_state,
        "from_state": event.from_state,
        "to_state": event.to_state,
        "repeat": event.kind == "repeat",
        "value": event.value,
        "threshold": event.threshold,
        "severity": event.severity,
        "message": event.message,
        "title": title(event),
        "at": iso_utc(event.at),
        "at_epoch_s": event.at,
    }


def _json(body: object) -> HttpRequest:
    # allow_nan=False: JSON has no NaN; the manager never emits one (values are finite or None).
    data = json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
    return HttpRequest({"Content-Type": "application/json"}, data)


def _header(text: str) -> str:
    """A header value: one line, ASCII, or an RFC 2047 encoded word."""
    line = " ".join(text.split())
    if line.isascii():
        return line
    return "=?UTF-8?B?" + base64.b64encode(line.encode("utf-8")).decode("ascii") + "?="


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def http_request(event: AlertEvent, target: NotifyTarget) -> HttpRequest:
    """The POST for ``event`` to an HTTP ``target`` (every kind but desktop)."""
    said = event_state(event)
    state = said[0] if said is not None else event.to_state
    head = title(event)
    if target.kind == "webhook":
        return _json(webhook_body(event, target))
    if target.kind == "ntfy":
        priority = NTFY_PRIORITY.get(event.severity, 3) if state == "firing" else 3
        tags = NTFY_TAGS.get(event.severity if state == "firing" else state, "bell")
        headers = {
            "Content-Type": "text/plain; charset=utf-8",
            "Title": _header(head),
            "Priority": str(priority),
            "Tags": f"{tags},{event.severity}",
        }
        return HttpRequest(headers, event.message.encode("utf-8"))
    if target.kind == "discord":
        colour = DISCORD_COLOURS["resolved"] if state in ("resolved", "normal") else DISCORD_COLOURS.get(
            event.severity, DISCORD_COLOURS["info"])
        embed = {
            "title": _cut(head, _DISCORD_TITLE),
            "description": _cut(event.message, _DISCORD_TEXT),
            "color": colour,
            "timestamp": iso_utc(event.at),
            "fields": [
                {"name": "Value", "value": _value(event.value), "inline": True},
                {"name": "Threshold", "value": _value(event.threshold), "inline": True},
                {"name": "Target", "value": _cut(event.target, 1024), "inline": True},
            ],
            "footer": {"text": APP_NAME},
        }
        return _json({"content": _cut(head, _DISCORD_CONTENT), "embeds": [embed], "allowed_mentions": {"parse": []}})
    if target.kind == "slack":
        icon = {"firing": ":rotating_light:" if event.severity == "critical" else ":warning:",
                "resolved": ":white_check_mark:"}.get(state, ":information_source:")
        blocks = [
            {"type": "section", "text": {"type": "mrkdwn",
                                         "text": f"{icon} *{_slack_escape(head)}*\n{_slack_escape(event.message)}"}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": _slack_escape(
                f"value {_value(event.value)}, threshold {_value(event.threshold)} · {iso_utc(event.at)} · {APP_NAME}")}]},
        ]
        return _json({"text": _slack_escape(f"{head}: {event.message}"), "blocks": blocks})
    raise ValueError(f"kind {target.kind!r} is not sent over HTTP")


# ---- desktop -----------------------------------------------------------------------

#: notify-send urgency by severity (freedesktop: low, normal, critical).
_URGENCY = {"critical": "critical", "warning": "normal", "info": "low"}
#: The AppUserModelID Windows shows PowerShell's toasts under (an unregistered
#: ID shows nothing on Windows 10 and later).
_POWERSHELL_APP_ID = r"{1AC14E77-02E7-4E5D-B744-2EB1AE5198B7}\WindowsPowerShell\v1.0\powershell.exe"


def applescript_string(text: str) -> str:
    """``text`` as an AppleScript string literal: quoted, ``\\`` and ``"``
    escaped, line breaks as spaces."""
    line = " ".join(text.splitlines())
    return '"' + line.replace("\\", "\\\\").replace('"', '\\"') + '"'


def powershell_string(text: str) -> str:
    """``text`` as a PowerShell single-quoted literal (nothing inside is
    expanded): every quote PowerShell takes for ``'`` -- the ASCII one
    and the typographic ‘ ’ ‚ ‛ -- doubled, line breaks as spaces."""
    line = " ".join(text.splitlines())
    for q in "'\u2018\u2019\u201a\u201b":
        line = line.replace(q, q + q)
    return f"'{line}'"


def desktop_command(heading: str, body: str, severity: str = "warning") -> list[str] | None:
    """The argument list that shows a desktop notification on this OS, or
    None when it has no notifier: ``notify-send`` (freedesktop: Linux, the
    BSDs) when on PATH, macOS ``osascript``, Windows PowerShell's toast API.
    Reads ``sys.platform`` and ``shutil.which`` at each call."""
    platform = sys.platform
    if platform == "darwin":
        exe = shutil.which("osascript")
        if exe is None:
            return None
        script = f"display notification {applescript_string(body)} with title {applescript_string(heading)}"
        return [exe, "-e", script]
    if platform.startswith("win") or platform == "cygwin":
        exe = shutil.which("powershell") or shutil.which("pwsh")
        if exe is None:
            return None
        script = "\n".join([
            "$ErrorActionPreference = 'Stop'",
            "[Windows.UI.Notifications.ToastNotificationManager, Windows.UI.Notifications, "
            "ContentType = WindowsRuntime] > $null",
            "$xml = [Windows.UI.Notifications.ToastNotificationManager]::GetTemplateContent("
            "[Windows.UI.Notifications.ToastTemplateType]::ToastText02)",
            "$text = $xml.GetElementsByTagName('text')",
            f"$text.Item(0).AppendChild($xml.CreateTextNode({powershell_string(heading)})) > $null",
            f"$text.Item(1).AppendChild($xml.CreateTextNode({powershell_string(body)})) > $null",
            "$toast = [Windows.UI.Notifications.ToastNotification]::new($xml)",
            f"[Windows.UI.Notifications.ToastNotificationManager]::CreateToastNotifier("
            f"{powershell_string(_POWERSHELL_APP_ID)}).Show($toast)",
        ])
        # -EncodedCommand (base64 of UTF-16LE): no second round of command-line quoting.
        encoded = base64.b64encode(script.encode("utf-16-le")).decode("ascii")
        return [exe, "-NoProfile", "-NonInteractive", "-EncodedCommand", encoded]
    exe = shutil.which("notify-send")
    if exe is None:
        return None
    # "--" ends the options: a title starting with "-" stays a title.
    return [exe, f"--urgency={_URGENCY.get(severity, 'normal')}", f"--app-name={APP_NAME}", "--", heading, body]


def desktop_available() -> bool:
    """Whether this machine has a desktop notifier :func:`desktop_command` can use."""
    return desktop_command("", "") is not None


def desktop_args(event: AlertEvent) -> list[str] | None:
    """:func:`desktop_command` for ``event``."""
    return desktop_command(title(event), event.message, event.severity)
