"""Add-on preferences: the backends to watch, refresh interval, history
storage and thresholds.  Stored by Blender in userpref.blend (never in a
scene), so API keys are referenced by environment-variable name or key
file path only: the key itself is never stored.

The backends are the list here, or the CLI's ``backends.toml`` (and the
``alerts.toml`` next to it) when "Configuration" says so; "Import" copies
the file's backends into the list.

Every edit calls :func:`runtime.config_changed`; the next timer tick picks
the new configuration up (restarting collectors or reopening the history
file on a worker thread when needed).
"""

import os
from typing import Any

import bpy
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty, StringProperty
from bpy.types import AddonPreferences, PropertyGroup, UIList

from . import runtime
from .config import SOURCE_FILE, SOURCE_PREFERENCES

# The engine's backend kinds (collectors.config.KINDS), kept here so the
# preferences register even when the bundled engine fails to import.
KIND_ITEMS = (
    ("comfyui", "ComfyUI", "ComfyUI server (/system_stats, /queue, /history)"),
    ("a1111", "A1111 / Forge", "AUTOMATIC1111 or Forge web UI API"),
    ("ollama", "Ollama", "Ollama server"),
    ("openai", "OpenAI-compatible", "OpenAI-compatible API (OpenAI, LM Studio, vLLM, ...)"),
    ("http", "HTTP", "Any HTTP endpoint that answers a health path"),
)

#: The standard local ports (collectors.config.DEFAULT_BACKENDS).
LOCAL_DEFAULTS = (
    ("comfyui", "comfyui", "http://127.0.0.1:8188"),
    ("a1111", "a1111", "http://127.0.0.1:7860"),
    ("ollama", "ollama", "http://127.0.0.1:11434"),
    ("lmstudio", "openai", "http://127.0.0.1:1234"),
)


def _changed(self: Any, context: Any) -> None:
    runtime.config_changed()


class MDM_BackendItem(PropertyGroup):
    name: StringProperty(name="Name", description="Service name shown in the panels", default="backend", update=_changed)  # type: ignore[valid-type]
    kind: EnumProperty(name="Kind", items=KIND_ITEMS, default="comfyui", update=_changed)  # type: ignore[valid-type]
    url: StringProperty(name="URL", description="Base URL, e.g. http://127.0.0.1:8188", default="http://127.0.0.1:8188", update=_changed)  # type: ignore[valid-type]
    api_key_env: StringProperty(  # type: ignore[valid-type]
        name="API key variable",
        description="Name of the environment variable holding the API key (the key itself is never stored)",
        default="",
        update=_changed,
    )
    api_key_file: StringProperty(  # type: ignore[valid-type]
        name="API key file",
        description=(
            "A file holding the key, used when the variable is not set (Blender started from a desktop icon often "
            "lacks your shell's variables); refused unless only you can read it (chmod 600)"
        ),
        default="",
        subtype="FILE_PATH",
        update=_changed,
    )
    interval_s: FloatProperty(  # type: ignore[valid-type]
        name="Interval",
        description="Seconds between probes; 0 uses the default: 1 s on this machine or the LAN, 300 s for a hosted API",
        default=0.0,
        min=0.0,
        max=86_400.0,
        update=_changed,
    )
    connect_timeout_s: FloatProperty(  # type: ignore[valid-type]
        name="Connect timeout",
        description="Seconds to wait for the connection; 0 uses the default (0.5 s)",
        default=0.0,
        min=0.0,
        max=10.0,
        update=_changed,
    )
    read_timeout_s: FloatProperty(  # type: ignore[valid-type]
        name="Read timeout",
        description="Seconds to wait for a reply; 0 uses the default (2 s)",
        default=0.0,
        min=0.0,
        max=120.0,
        update=_changed,
    )
    enabled: BoolProperty(name="Enabled", default=True, update=_changed)  # type: ignore[valid-type]
    threshold_ms: FloatProperty(  # type: ignore[valid-type]
        name="Latency threshold",
        description="Latency the avg/p95 bars are measured against; 0 uses the default threshold",
        default=0.0,
        min=0.0,
        max=600_000.0,
        subtype="NONE",
        unit="NONE",
        update=_changed,
    )


#: alerts.NOTIFY_KINDS, kept here so the preferences register without the engine.
NOTIFY_KIND_ITEMS = (
    ("webhook", "Webhook", "POST a JSON object naming the rule, target, state, value and time"),
    ("ntfy", "ntfy", "ntfy.sh (or your own ntfy server): a push to your phone"),
    ("discord", "Discord", "A Discord channel webhook"),
    ("slack", "Slack", "A Slack incoming webhook"),
    ("desktop", "Desktop", "A notification on this machine (notify-send, macOS Notification Center, Windows toast)"),
)
SEVERITY_ITEMS = (
    ("info", "Info", "Every alert"),
    ("warning", "Warning", "Warnings and critical alerts"),
    ("critical", "Critical", "Critical alerts only"),
)


class MDM_NotifyItem(PropertyGroup):
    name: StringProperty(name="Name", default="phone", update=_changed)  # type: ignore[valid-type]
    kind: EnumProperty(name="Kind", items=NOTIFY_KIND_ITEMS, default="ntfy", update=_changed)  # type: ignore[valid-type]
    url: StringProperty(  # type: ignore[valid-type]
        name="URL",
        description="Webhook or topic URL (it holds a token: shown hidden, never logged or exported); not for Desktop",
        default="",
        subtype="PASSWORD",
        update=_changed,
    )
    min_severity: EnumProperty(name="From severity", items=SEVERITY_ITEMS, default="warning", update=_changed)  # type: ignore[valid-type]
    rules: StringProperty(  # type: ignore[valid-type]
        name="Rules", description="Only these rules (comma-separated names or globs such as comfyui-*); empty for every rule",
        default="", update=_changed,
    )
    enabled: BoolProperty(name="Enabled", default=True, update=_changed)  # type: ignore[valid-type]


class MDM_UL_notify(UIList):
    bl_idname = "MDM_UL_notify"

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index):  # type: ignore[no-untyped-def]
        row = layout.row(align=True)
        row.prop(item, "enabled", text="")
        row.label(text=item.name)
        row.label(text=item.kind)
        row.label(text=f"≥ {item.min_severity}")


class MDM_UL_backends(UIList):
    bl_idname = "MDM_UL_backends"

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index):  # type: ignore[no-untyped-def]
        row = layout.row(align=True)
        row.prop(item, "enabled", text="")
        row.label(text=item.name)
        row.label(text=item.kind)
        row.label(text=item.url)


class MDM_AddonPreferences(AddonPreferences):
    bl_idname = __package__  # type: ignore[assignment]

    config_source: EnumProperty(  # type: ignore[valid-type]
        name="Configuration",
        description="Where the backends (and alert rules) come from",
        items=(
            (SOURCE_PREFERENCES, "This list", "The backends listed here"),
            (SOURCE_FILE, "backends.toml", "The CLI's backends.toml and the alerts.toml next to it (the same files `movie-director-metrics watch` reads)"),
        ),
        default=SOURCE_PREFERENCES,
        update=_changed,
    )
    config_file: StringProperty(  # type: ignore[valid-type]
        name="Backends file",
        description="backends.toml to use; empty finds it as the CLI does ($MOVIE_DIRECTOR_METRICS_CONFIG, else the per-user config directory)",
        default="",
        subtype="FILE_PATH",
        update=_changed,
    )
    backends: CollectionProperty(type=MDM_BackendItem)  # type: ignore[valid-type]
    notify_targets: CollectionProperty(type=MDM_NotifyItem)  # type: ignore[valid-type]
    notify_index: IntProperty(default=0)  # type: ignore[valid-type]
    backend_index: IntProperty(default=0)  # type: ignore[valid-type]
    refresh_interval_s: FloatProperty(  # type: ignore[valid-type]
        name="Refresh interval",
        description="How often the panels read the engine (seconds); collectors poll on their own schedule",
        default=2.0,
        min=1.0,
        max=5.0,
        subtype="TIME_ABSOLUTE",
        unit="TIME_ABSOLUTE",
    )
    use_storage: BoolProperty(  # type: ignore[valid-type]
        name="Keep history",
        description="Keep metrics history in a local SQLite file (enables the 7d and 30d ranges)",
        default=True,
        update=_changed,
    )
    storage_path: StringProperty(  # type: ignore[valid-type]
        name="History file",
        description="SQLite file for metrics history; empty uses the add-on's user directory",
        default="",
        subtype="FILE_PATH",
        update=_changed,
    )
    retention_minute_days: FloatProperty(  # type: ignore[valid-type]
        name="Minute buckets", description="Days of 1-minute history kept on disk", default=7.0, min=1 / 24, max=3650.0, update=_changed
    )
    retention_hour_days: FloatProperty(  # type: ignore[valid-type]
        name="Hour buckets", description="Days of 1-hour history kept on disk", default=365.0, min=1 / 24, max=3650.0, update=_changed
    )
    default_threshold_ms: FloatProperty(  # type: ignore[valid-type]
        name="Latency threshold (ms)",
        description="Default latency the avg/p95 bars are measured against: green below 50 %, yellow below 80 %, red beyond",
        default=2000.0,
        min=1.0,
        max=600_000.0,
        update=_changed,
    )
    success_min_pct: FloatProperty(  # type: ignore[valid-type]
        name="Minimum success rate (%)",
        description="Success rate and uptime below this are red; the bars turn yellow halfway there",
        default=95.0,
        min=50.0,
        max=99.999,
        update=_changed,
    )

    def draw(self, context):  # type: ignore[no-untyped-def]
        draw_preferences(self, self.layout, context)


def draw_preferences(prefs: Any, layout: Any, context: Any) -> None:
    col = layout.column()
    row = col.row()
    row.prop(prefs, "config_source", expand=True)
    rt = runtime.get()
    if prefs.config_source == SOURCE_FILE:
        box = col.box()
        box.prop(prefs, "config_file")
        fc = rt.file_config
        if fc is None:
            box.label(text="Reading…", icon="TIME")
        else:
            box.label(text=f"{fc.path}: {len(fc.backends)} backends", icon="FILE" if not fc.error else "ERROR")
            if fc.rules_text:
                box.label(text=f"Alert rules: {fc.alerts_path}", icon="FILE")
            for problem in (fc.error, fc.alerts_error):
                if problem:
                    line = box.row()
                    line.alert = True
                    line.label(text=problem, icon="ERROR")
        box.operator("movie_director.import_backends_file", text="Copy into this list", icon="IMPORT")
        if fc is not None and fc.targets:
            box.label(text=f"Notifications: {', '.join(t.name for t in fc.targets)} (alerts.toml)", icon="OUTLINER_OB_SPEAKER")
        _draw_online_note(col)
        _draw_general(prefs, layout, rt)
        return
    col.label(text="Backends", icon="LINKED")
    row = col.row()
    row.template_list("MDM_UL_backends", "", prefs, "backends", prefs, "backend_index", rows=4)
    side = row.column(align=True)
    side.operator("movie_director.backend_add", text="", icon="ADD")
    side.operator("movie_director.backend_remove", text="", icon="REMOVE")
    side.separator()
    side.operator("movie_director.backends_add_defaults", text="", icon="PRESET")
    side.operator("movie_director.import_backends_file", text="", icon="IMPORT")
    if 0 <= prefs.backend_index < len(prefs.backends):
        item = prefs.backends[prefs.backend_index]
        box = col.box()
        box.use_property_split = True
        box.prop(item, "name")
        box.prop(item, "kind")
        box.prop(item, "url")
        box.prop(item, "api_key_env")
        box.prop(item, "api_key_file")
        if item.api_key_env and not os.environ.get(item.api_key_env) and not item.api_key_file:
            box.label(text=f"${item.api_key_env} is not set in Blender's environment: use a key file", icon="ERROR")
        box.prop(item, "interval_s")
        if item.interval_s == 0:
            box.label(text=f"Default: {_default_interval(item.url)}")
        box.prop(item, "connect_timeout_s")
        box.prop(item, "read_timeout_s")
        box.prop(item, "threshold_ms")
        box.prop(item, "enabled")
    _draw_online_note(col)
    _draw_notify(prefs, layout)
    _draw_general(prefs, layout, runtime.get())


def _draw_notify(prefs: Any, layout: Any) -> None:
    """Where firing and resolved alerts are sent (this list's mode; with
    backends.toml the [[notify]] tables of alerts.toml)."""
    col = layout.column()
    col.label(text="Notifications", icon="OUTLINER_OB_SPEAKER")
    row = col.row()
    row.template_list("MDM_UL_notify", "", prefs, "notify_targets", prefs, "notify_index", rows=2)
    side = row.column(align=True)
    side.operator("movie_director.notify_add", text="", icon="ADD")
    side.operator("movie_director.notify_remove", text="", icon="REMOVE")
    side.separator()
    side.operator("movie_director.notify_test", text="", icon="PLAY")
    if 0 <= prefs.notify_index < len(prefs.notify_targets):
        item = prefs.notify_targets[prefs.notify_index]
        box = col.box()
        box.use_property_split = True
        box.prop(item, "name")
        box.prop(item, "kind")
        if item.kind != "desktop":
            box.prop(item, "url")
        box.prop(item, "min_severity")
        box.prop(item, "rules")
        box.prop(item, "enabled")
    for name, why in runtime.get().applied_notify_errors():
        line = col.row()
        line.alert = True
        line.label(text=f"{name}: {why}", icon="ERROR")


def _default_interval(url: str) -> str:
    """What interval 0 means for ``url`` (the engine decides; says so when
    the engine is not importable)."""
    try:
        from urllib.parse import urlsplit

        from movie_director_metrics.collectors.config import HOSTED_INTERVAL_S, LOCAL_INTERVAL_S
        from movie_director_metrics.net import is_hosted

        hosted = is_hosted(urlsplit(url.strip()).hostname)
    except (ImportError, ValueError):
        return "1 s on this machine or the LAN, 300 s for a hosted API"
    return f"{HOSTED_INTERVAL_S:g} s (hosted API)" if hosted else f"{LOCAL_INTERVAL_S:g} s (this machine or the LAN)"


def _draw_online_note(col: Any) -> None:
    if not bpy.app.online_access:
        col.label(text="Online access is off: only loopback backends are polled", icon="INTERNET_OFFLINE")
        col.label(text="Preferences › System › Network › Allow Online Access")


def _draw_general(prefs: Any, layout: Any, rt: Any) -> None:
    col = layout.column()
    col.use_property_split = True
    col.prop(prefs, "refresh_interval_s")
    col.prop(prefs, "default_threshold_ms")
    col.prop(prefs, "success_min_pct")
    col.separator()
    col.prop(prefs, "use_storage")
    sub = col.column()
    sub.active = prefs.use_storage
    sub.prop(prefs, "storage_path")
    if not prefs.storage_path:
        sub.label(text=f"Default: {runtime.default_storage_path(create=False)}")
    sub.prop(prefs, "retention_minute_days")
    sub.prop(prefs, "retention_hour_days")
    if rt.view.storage_text:
        sub.label(text=rt.view.storage_text, icon="FILE")


def get(context: Any = None) -> Any | None:
    """This add-on's preferences, or None while Blender has none for it
    (during registration before the add-on entry exists)."""
    ctx = context or bpy.context
    addon = ctx.preferences.addons.get(__package__)
    return None if addon is None else addon.preferences


classes = (MDM_BackendItem, MDM_NotifyItem, MDM_UL_backends, MDM_UL_notify, MDM_AddonPreferences)
