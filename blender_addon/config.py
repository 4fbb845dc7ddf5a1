"""The add-on preferences as plain values (:class:`Config`), read on the
main thread and safe to hand to worker threads.  Each backend is validated
with the engine's own config parser, so a bad entry shows next to it
instead of stopping the others; non-loopback hosts are blocked while
Blender's "Allow Online Access" is off.

The backends come from the preferences' own list, or — "Configuration:
backends.toml" — from the CLI's file, which :mod:`file_config` reads on a
worker thread; this module only takes what it read.  A backend that sets
no interval is probed every second on this machine or the LAN and every
5 minutes when hosted (the engine's ``HOSTED_INTERVAL_S``), in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bpy

#: ``prefs.config_source`` values.
SOURCE_PREFERENCES, SOURCE_FILE = "PREFERENCES", "FILE"


@dataclass(frozen=True)
class Config:
    """Everything the preferences decide, as plain values (safe to hand to
    a worker).  Equal configs mean nothing needs restarting."""

    backends: tuple[Any, ...] = ()  # BackendConfig
    #: name -> why it is not polled (invalid entry, blocked remote host).
    blocked: tuple[tuple[str, str], ...] = ()
    #: name -> latency threshold in ms.
    thresholds: tuple[tuple[str, float], ...] = ()
    storage: str | None = None
    retention: tuple[float, float] = (7.0, 365.0)
    allow_remote: bool = False
    default_threshold_ms: float = 2000.0
    success_min: float = 0.95
    refresh_s: float = 2.0
    #: Alert rules of alerts.toml (its text; "" for none), file mode only.
    rules_text: str = ""
    #: What the configuration files said when they could not be used ("" if fine).
    source_note: str = ""
    #: Where alerts are sent (``alerts.NotifyTarget``), and the entries
    #: refused, as (name, why).
    notify: tuple[Any, ...] = ()
    notify_errors: tuple[tuple[str, str], ...] = ()

    def engine_key(self) -> tuple[Any, ...]:
        return (self.storage, self.retention)

    def collector_key(self) -> tuple[Any, ...]:
        return (self.backends, self.allow_remote)


def default_storage_path(create: bool = True) -> Path:
    """``metrics.sqlite3`` in the extension's user directory (kept across
    upgrades, removed with the extension)."""
    try:
        base = bpy.utils.extension_path_user(__package__, path="", create=create)
    except ValueError:  # installed as a legacy add-on, not an extension
        base = bpy.utils.user_resource("CONFIG", path="movie_director_metrics", create=create)
    return Path(base) / "metrics.sqlite3"


def backend_entry(item: Any) -> dict[str, Any]:
    """One backend of the preferences' list as a ``[[backend]]`` table of
    backends.toml (0 in a number field: the engine's default)."""
    entry: dict[str, Any] = {"name": item.name.strip(), "kind": item.kind, "url": item.url.strip(), "enabled": bool(item.enabled)}
    if item.api_key_env.strip():
        entry["api_key_env"] = item.api_key_env.strip()
    if item.api_key_file.strip():
        entry["api_key_file"] = item.api_key_file.strip()
    for key in ("interval_s", "connect_timeout_s", "read_timeout_s"):
        value = float(getattr(item, key))
        if value > 0:
            entry[key] = value
    return entry


def notify_entry(item: Any) -> dict[str, Any]:
    """One notification target of the preferences as a ``[[notify]]`` table."""
    entry: dict[str, Any] = {"name": item.name.strip(), "kind": item.kind, "min_severity": item.min_severity}
    if item.kind != "desktop":
        entry["url"] = item.url.strip()
    rules = [r.strip() for r in item.rules.split(",") if r.strip()]
    if rules:
        entry["rules"] = rules
    return entry


def read_notify(prefs: Any) -> tuple[tuple[Any, ...], tuple[tuple[str, str], ...]]:
    """The preferences' enabled notification targets, each checked by the
    engine's own parser (a bad one is refused alone, with the reason)."""
    from movie_director_metrics.alerts import parse_notify_tables
    from movie_director_metrics.errors import ConfigError

    targets, errors, seen = [], [], set()
    for item in prefs.notify_targets:
        if not item.enabled:
            continue
        entry = notify_entry(item)
        if entry["name"] in seen:
            errors.append((entry["name"] or "?", "name used twice"))
            continue
        seen.add(entry["name"])
        try:
            targets.extend(parse_notify_tables([entry], "preferences"))
        except ConfigError as e:
            errors.append((entry["name"] or "?", str(e).removeprefix("preferences: ")))
    return tuple(targets), tuple(errors)


def read_config(prefs: Any, file_config: Any = None) -> Config:
    """The preferences as a :class:`Config` (main thread).  Each backend is
    validated with the engine's own config parser, so a bad URL shows next
    to its backend instead of stopping the others.  ``file_config``: what
    :mod:`file_config` last read, used when the preferences say so."""
    # The bundled engine is there: the tick only calls this once it imports.
    from movie_director_metrics.collectors.config import parse_config
    from movie_director_metrics.errors import ConfigError
    from movie_director_metrics.net import is_loopback

    allow_remote = bool(bpy.app.online_access)
    backends, blocked, thresholds, seen = [], [], [], set()
    rules_text, source_note = "", ""
    notify: tuple[Any, ...] = ()
    notify_errors: tuple[tuple[str, str], ...] = ()
    if prefs.config_source == SOURCE_FILE:
        if file_config is None:
            source_note = "Reading the configuration file…"
        else:
            backends = list(file_config.backends)
            rules_text = file_config.rules_text
            notify = file_config.targets
            source_note = "; ".join(e for e in (file_config.error, file_config.alerts_error) if e)
        thresholds = [(c.name, float(prefs.default_threshold_ms)) for c in backends]
        for cfg in backends:
            if not allow_remote and not is_loopback(cfg.host):
                blocked.append((cfg.name, "blocked: Online Access is off"))
    else:
        notify, notify_errors = read_notify(prefs)
    for item in prefs.backends if prefs.config_source != SOURCE_FILE else ():
        entry = backend_entry(item)
        name = entry["name"]
        if name in seen:
            blocked.append((name or "?", f"name {name!r} is used twice"))
            continue
        seen.add(name)
        try:
            (cfg,) = parse_config({"backend": [entry]}, "preferences")
        except ConfigError as e:
            blocked.append((name or "?", str(e).removeprefix("preferences: ")))
            continue
        thresholds.append((name, float(item.threshold_ms) or float(prefs.default_threshold_ms)))
        backends.append(cfg)
        if not allow_remote and not is_loopback(cfg.host):
            blocked.append((name, "blocked: Online Access is off"))
    storage = None
    if prefs.use_storage:
        # create=False: the tick does no file I/O (this runs every tick);
        # the worker that opens the history file creates its directory.
        storage = bpy.path.abspath(prefs.storage_path) if prefs.storage_path else str(default_storage_path(create=False))
    return Config(
        backends=tuple(backends),
        blocked=tuple(blocked),
        thresholds=tuple(thresholds),
        storage=storage,
        retention=(float(prefs.retention_minute_days), float(prefs.retention_hour_days)),
        allow_remote=allow_remote,
        default_threshold_ms=float(prefs.default_threshold_ms),
        success_min=float(prefs.success_min_pct) / 100.0,
        refresh_s=min(5.0, max(1.0, float(prefs.refresh_interval_s))),
        rules_text=rules_text,
        source_note=source_note,
        notify=notify,
        notify_errors=notify_errors,
    )

