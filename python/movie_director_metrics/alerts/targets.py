"""Notification targets: the ``[[notify]]`` tables of an alerts file, the
same from plain values (the Blender add-on's preferences), which events
each one wants, and how a target's URL is shown.

::

    [[notify]]
    name = "team-chat"
    kind = "slack"              # webhook | ntfy | discord | slack | desktop
    url = "https://hooks.slack.com/services/T000/B000/XXXX"   # not for desktop
    rules = ["comfyui-*"]       # rule names, globs allowed (default: every rule)
    min_severity = "warning"    # or severities = ["warning", "critical"]
    states = ["firing", "resolved"]   # the default

**URLs are secrets.**  A Slack or Discord webhook URL carries its token in
the path, an ntfy topic is its own password, a generic webhook often has
``?token=``.  Everything this package shows of a target -- its repr,
:meth:`~.notify.Notifier.status`, log lines, error messages,
``ConfigError`` texts -- uses :func:`redact_url`: the scheme and host
only (``https://hooks.slack.com/…``).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..net import is_loopback_url
from .manager import AlertEvent
from .rules import SEVERITIES, AlertRule, Severity, file_tables, parse_rule_tables, read_alerts_toml, table_label

NotifyKind = Literal["webhook", "ntfy", "discord", "slack", "desktop"]
NotifyState = Literal["firing", "resolved", "pending", "recovering"]

NOTIFY_KINDS: tuple[NotifyKind, ...] = ("webhook", "ntfy", "discord", "slack", "desktop")
#: What a target can subscribe to (``states``): ``firing`` (an alert fired,
#: and its repeats), ``resolved`` (firing or recovering back to normal),
#: ``pending`` (bad, waiting for ``for_s``; its return to normal is sent as
#: ``normal``), ``recovering`` (recovered, waiting for
#: ``keep_firing_for_s``; a relapse to firing is sent as ``firing``).
NOTIFY_STATES: tuple[NotifyState, ...] = ("firing", "resolved", "pending", "recovering")
DEFAULT_STATES: tuple[NotifyState, ...] = ("firing", "resolved")

_SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}


def redact_url(url: object) -> str:
    """What may be shown of a notification URL: scheme and host (and a
    port), the rest -- path, query, user info, where the tokens are --
    replaced by ``…``.  Something that is not such a URL shows as
    ``<N characters>``."""
    if not isinstance(url, str):
        return f"<{type(url).__name__}>"
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not host:
        return f"<{len(url)} characters>"
    shown = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{shown}{'' if port is None else f':{port}'}/…"


def scrub(text: str, url: str | None) -> str:
    """``text`` with ``url`` and its secret parts (path, query, user info)
    replaced by :func:`redact_url`'s form: for error texts from the
    network or a server, which may quote what was sent."""
    if not url:
        return text
    out = text.replace(url, redact_url(url))
    try:
        parts = urlsplit(url)
    except ValueError:
        return out
    for piece in (parts.path + (f"?{parts.query}" if parts.query else ""), parts.path, parts.query,
                  parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""):
        if len(piece) > 1:
            out = out.replace(piece, "/…")
    return out


def event_state(event: AlertEvent) -> tuple[str, NotifyState] | None:
    """What a notification says of ``event`` -- (the state it reports, the
    subscription that wants it) -- or None when no target wants it.

    ``firing``: a fire (from normal or pending) and each repeat;
    ``resolved``: firing/recovering -> normal; ``pending``/``recovering``:
    moves into those; a pending alert back to normal reports ``normal``
    to ``pending`` subscribers, a recovering one firing again reports
    ``firing`` to ``recovering`` subscribers (who heard of the recovery)."""
    frm, to = event.from_state, event.to_state
    if event.kind == "repeat" or (to == "firing" and frm in ("normal", "pending")):
        return "firing", "firing"
    if to == "firing":  # recovering -> firing
        return "firing", "recovering"
    if to == "normal" and frm in ("firing", "recovering"):
        return "resolved", "resolved"
    if to == "normal":  # pending -> normal
        return "normal", "pending"
    if to == "pending":
        return "pending", "pending"
    return "recovering", "recovering"


def _http_url_path(url: object) -> str | None:
    """The path of an ``http(s)://host[:port]/...`` URL; None for anything else."""
    # No whitespace anywhere: http.client refuses it with a message that quotes the path.
    if not isinstance(url, str) or not url.isprintable() or any(c.isspace() for c in url):
        return None
    try:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return None
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number or out of range
    except ValueError:
        return None
    return parts.path


def _strings(value: Any) -> tuple[Any, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError
    return tuple(value)


@dataclass(frozen=True, repr=False)
class NotifyTarget:
    """Where alert events go, and which ones (frozen; validated on
    construction: ``ConfigError`` naming the target, the field and what was
    expected, the URL always redacted).

    ``url``: for ``webhook``/``discord``/``slack`` the webhook URL, for
    ``ntfy`` the topic URL (``https://ntfy.sh/<topic>``); none for
    ``desktop``.  ``rules``: rule names or globs (``"comfyui-*"``), empty
    for every rule (``job_stuck`` included).  ``severities`` or
    ``min_severity`` (not both): which severities, default every one.
    ``states``: see :data:`NOTIFY_STATES`.  Lists become tuples.
    """

    name: str
    kind: NotifyKind
    url: str | None = None
    rules: tuple[str, ...] = ()
    severities: tuple[Severity, ...] = ()
    min_severity: Severity | None = None
    states: tuple[NotifyState, ...] = DEFAULT_STATES

    # Derived once at construction (asked at every event); not part of equality.
    _remote: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not name.strip() or not name.isprintable() or len(name) > 128:
            raise ConfigError(f"notify target {name!r}: name: expected 1 to 128 printable characters")
        where = f"notify target {name!r}"

        def bad(key: str, expected: str, shown: str | None = None) -> ConfigError:
            got = repr(getattr(self, key)) if shown is None else shown
            return ConfigError(f"{where}: {key} = {got}: expected {expected}")

        if self.kind not in NOTIFY_KINDS:
            raise bad("kind", "one of " + ", ".join(NOTIFY_KINDS))
        url = self.url
        if self.kind == "desktop":
            if url not in (None, ""):
                raise bad("url", "no url for kind 'desktop' (a notification on this machine)", redact_url(url))
            object.__setattr__(self, "url", None)
        else:
            path = _http_url_path(url)
            if path is None:
                raise bad("url", f"an http(s) URL with a host for kind {self.kind!r}", redact_url(url))
            if self.kind == "ntfy" and path.strip("/") == "":
                raise bad("url", "the topic's URL, e.g. https://ntfy.sh/<topic>", redact_url(url))
        object.__setattr__(self, "_remote", self.url is not None and not is_loopback_url(self.url))
        for key in ("rules", "severities", "states"):
            try:
                values = _strings(getattr(self, key))
            except TypeError:
                raise bad(key, "a list of strings") from None
            object.__setattr__(self, key, values)
        for pattern in self.rules:
            if not isinstance(pattern, str) or not pattern or not pattern.isprintable():
                raise bad("rules", "rule names or globs (non-empty printable strings)")
        for sev in self.severities:
            if sev not in SEVERITIES:
                raise bad("severities", "a list from " + ", ".join(SEVERITIES))
        if self.min_severity is not None:
            if self.min_severity not in SEVERITIES:
                raise bad("min_severity", "one of " + ", ".join(SEVERITIES))
            if self.severities:
                raise bad("min_severity", "either severities or min_severity, not both")
        if not self.states:
            raise bad("states", "at least one of " + ", ".join(NOTIFY_STATES))
        for st in self.states:
            if st not in NOTIFY_STATES:
                raise bad("states", "a list from " + ", ".join(NOTIFY_STATES))

    # ---- reading ---------------------------------------------------------

    @property
    def shown_url(self) -> str | None:
        """The URL as it may be shown (:func:`redact_url`); None for desktop."""
        return None if self.url is None else redact_url(self.url)

    @property
    def remote(self) -> bool:
        """Whether the URL points off this machine (contacted only when
        remote access is allowed)."""
        return self._remote

    def wants(self, event: AlertEvent) -> bool:
        """Whether this target is sent ``event`` (its rule, severity and
        state pass the filters)."""
        if self.rules and not any(fnmatch.fnmatchcase(event.rule, p) for p in self.rules):
            return False
        if self.severities and event.severity not in self.severities:
            return False
        if self.min_severity is not None and _SEVERITY_RANK.get(event.severity, 0) < _SEVERITY_RANK[self.min_severity]:
            return False
        said = event_state(event)
        return said is not None and said[1] in self.states

    def __repr__(self) -> str:
        extra = "".join(
            f", {f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)
            if f.init and f.name not in ("name", "kind", "url") and getattr(self, f.name) != f.default
        )
        url = "" if self.url is None else f", url={self.shown_url!r}"
        return f"NotifyTarget(name={self.name!r}, kind={self.kind!r}{url}{extra})"


def parse_notify_tables(tables: Iterable[Any], where: str = "<notify targets>") -> list[NotifyTarget]:
    """Targets from ``[[notify]]`` tables already read, or from a plain
    list of dicts with the same keys (:class:`NotifyTarget` fields): all or
    nothing, ``ConfigError`` naming ``where``, the table and the field;
    names must be unique."""
    keys = [f.name for f in dataclasses.fields(NotifyTarget) if f.init]
    out: list[NotifyTarget] = []
    seen: set[str] = set()
    for i, table in enumerate(tables):
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: notify[{i}]: must be a table")
        label = table_label("notify", i, dict(table))
        at = f"{where}: notify[{i}]"
        for key in table:
            if key not in keys:
                raise ConfigError(f"{where}: {label}: unknown key {key!r}; expected one of {', '.join(keys)}")
        for key in ("name", "kind"):
            if key not in table:
                raise ConfigError(f"{where}: {label}: {key} is missing")
        if table.get("kind") != "desktop" and "url" not in table:
            raise ConfigError(f"{where}: {label}: url is missing (kind {table.get('kind')!r} posts to a URL)")
        try:
            target = NotifyTarget(**cast(dict[str, Any], dict(table)))
        except ConfigError as e:
            raise ConfigError(f"{at}: {e}") from None
        if target.name in seen:
            raise ConfigError(f"{where}: {label}: name {target.name!r} is used twice; expected unique names")
        seen.add(target.name)
        out.append(target)
    return out


def parse_notify(source: str | os.PathLike[str]) -> list[NotifyTarget]:
    """The ``[[notify]]`` tables of an alerts file or TOML text (the file
    grammar is :func:`~.rules.read_alerts_toml`'s)."""
    data, where = read_alerts_toml(source)
    return parse_notify_tables(file_tables(data, "notify", where), where)


@dataclass(frozen=True)
class AlertsFile:
    """Everything an alerts file holds."""

    rules: tuple[AlertRule, ...]
    targets: tuple[NotifyTarget, ...]
    where: str


def load_alerts_file(source: str | os.PathLike[str]) -> AlertsFile:
    """Rules and notify targets of an alerts file (or TOML text), read once,
    all or nothing."""
    data, where = read_alerts_toml(source)
    rules = parse_rule_tables(file_tables(data, "rule", where), where)
    targets = parse_notify_tables(file_tables(data, "notify", where), where)
    return AlertsFile(tuple(rules), tuple(targets), where)
