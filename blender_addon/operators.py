"""Operators: test a connection, the actions on a backend (interrupt,
delete a pending prompt, free memory, skip, unload a model), export
metrics, a larger history chart, snooze an alert, and the backend list in
the preferences.

None of them has the ``UNDO`` option: they change no scene data, so they
push no undo step and never mark the .blend as modified.
"""

import datetime as _dt
import os
from typing import Any

import bpy
import numpy as np
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty, StringProperty
from bpy.types import Operator, PropertyGroup
from bpy_extras.io_utils import ExportHelper

from . import charts, preferences, runtime
from . import view as V
from .config import SOURCE_PREFERENCES
from .file_config import resolve_path
from .properties import METRIC_ITEMS, WINDOW_ITEMS

#: Export resolution for each range when left on "Auto": the finest that
#: keeps the row count reasonable.
AUTO_RESOLUTION = {"5m": "raw", "1h": "raw", "24h": "1m", "7d": "1h", "30d": "1h"}
HISTORY_POINTS = 120


def _running(cls: type[Operator]) -> bool:
    rt = runtime.get()
    if rt.stopped:
        cls.poll_message_set("The add-on is not running")
        return False
    if rt.monitor is None:
        cls.poll_message_set("The metrics engine is still starting")
        return False
    return True


class MDM_OT_test_connection(Operator):
    """Probe the backend once now on a worker thread; the result shows in the Connection panel"""

    bl_idname = "movie_director.test_connection"
    bl_label = "Test Connection"

    backend: StringProperty(name="Backend", description="Backend to test; empty tests every backend")  # type: ignore[valid-type]

    @classmethod
    def poll(cls, context):  # type: ignore[no-untyped-def]
        rt = runtime.get()
        if rt.stopped or rt.applied is None:
            cls.poll_message_set("The add-on has not started yet")
            return False
        return True

    def execute(self, context):  # type: ignore[no-untyped-def]
        msg = runtime.get().test_connection([self.backend] if self.backend else [])
        if msg.startswith("error: "):
            self.report({"ERROR"}, msg.removeprefix("error: "))
            return {"CANCELLED"}
        self.report({"INFO"}, msg)
        return {"FINISHED"}


# ---- actions on a backend -------------------------------------------------------------

#: What a target is called in dialogs and messages.
TARGET_NAMES = {"prompt_id": "Prompt", "model": "Model"}
#: Why an action that needs a target cannot run (its poll message).
NO_TARGET = {
    ("comfyui", "delete"): "No pending prompt of a ComfyUI backend in the Jobs panel",
    ("ollama", "unload"): "No Ollama backend reports a loaded model",
}
KIND_TITLES = {"comfyui": "ComfyUI", "a1111": "AUTOMATIC1111/Forge", "ollama": "Ollama"}

#: The confirmation's icon: ``invoke_confirm`` has its own icon enum
#: (NONE, WARNING, QUESTION, ERROR, INFO; 4.1+), not the UI icons.
CONFIRM_ICON = "WARNING"

#: The dialog's choices (pending prompts, loaded models) while it is open:
#: Blender needs the strings of a dynamic enum kept alive on the Python side.
_CHOICES: list[tuple[str, str, str]] = []


def _choice_items(self: Any, context: Any) -> list[tuple[str, str, str]]:
    return _CHOICES or [("NONE", "(nothing to choose)", "")]


class _BackendAction:
    """An action on one backend, only after the user confirmed it: the
    confirmation (``invoke_confirm``; a dialog to choose the prompt or the
    model first when there are several), then :meth:`runtime.Runtime.run_action`
    sends it on a worker thread and the answer shows under the backend's
    row in the Connection panel.  One subclass per :data:`view.ACTION_SPECS`
    entry (so ``poll`` can say "no backend of that kind" or "nothing to
    act on"); ``backend`` names the backend, ``target`` the prompt id or
    model (empty: the interrupt of whatever runs; chosen in the dialog for
    delete and unload)."""

    spec: V.ActionSpec

    @classmethod
    def poll(cls, context):  # type: ignore[no-untyped-def]
        rt = runtime.get()
        spec = cls.spec
        if rt.stopped or rt.applied is None:
            cls.poll_message_set("The add-on has not started yet")  # type: ignore[attr-defined]
            return False
        names = [c.name for c in rt.applied.backends if c.kind == spec.kind and c.enabled]
        if not names:
            cls.poll_message_set(f"No {KIND_TITLES.get(spec.kind, spec.kind)} backend is enabled in the preferences")  # type: ignore[attr-defined]
            return False
        if spec.needs_target and not any(rt.action_targets(n, spec) for n in names):
            cls.poll_message_set(NO_TARGET.get((spec.kind, spec.action), f"Nothing to {spec.label.lower()}"))  # type: ignore[attr-defined]
            return False
        return True

    def _confirm_message(self, rt: Any) -> str:
        spec = self.spec
        url = next((c.url for c in rt.applied.backends if c.name == self.backend), "") if rt.applied else ""
        what = f"{TARGET_NAMES.get(spec.target or '', 'target').lower()} {self.target}: " if self.target else ""
        return f"{url}  {what}{spec.description}"

    def invoke(self, context, event):  # type: ignore[no-untyped-def]
        rt = runtime.get()
        spec = self.spec
        if not self.backend:  # from the search menu: the one backend of its kind
            names = [c.name for c in rt.applied.backends if c.kind == spec.kind and c.enabled] if rt.applied else []
            if len(names) != 1:
                self.report({"ERROR"}, f"Which backend? Use the {spec.label} button of its row in the Connection panel")
                return {"CANCELLED"}
            self.backend = names[0]
        if spec.target is not None and not self.target:
            options = rt.action_targets(self.backend, spec)
            if spec.needs_target:
                if not options:
                    self.report({"ERROR"}, f"{self.backend}: {NO_TARGET.get((spec.kind, spec.action), 'nothing to act on')}")
                    return {"CANCELLED"}
                if len(options) > 1:
                    _CHOICES[:] = [(t, t, "") for t in options]
                    return context.window_manager.invoke_props_dialog(
                        self, width=360, title=f"{spec.label} on {self.backend}", confirm_text=spec.label
                    )
                self.target = options[0]
            elif len(options) == 1:
                self.target = options[0]  # interrupt exactly the prompt that runs, not the next one
        return context.window_manager.invoke_confirm(
            self, event, title=f"{spec.label} on {self.backend}?", message=self._confirm_message(rt),
            confirm_text=spec.label, icon=CONFIRM_ICON,
        )

    def draw(self, context):  # type: ignore[no-untyped-def]
        """The dialog of a delete or unload with several to choose from."""
        col = self.layout.column()  # type: ignore[attr-defined]
        col.label(text=self.spec.description)
        col.prop(self, "choice", text=TARGET_NAMES.get(self.spec.target or "", "Target"))

    def execute(self, context):  # type: ignore[no-untyped-def]
        target = self.target
        # The dialog's choice, only when one was made: an unset enum reads
        # as its first item, which must never be acted on unasked.
        if not target and self.spec.needs_target and self.properties.is_property_set("choice") and self.choice != "NONE":
            target = self.choice
        msg = runtime.get().run_action(self.backend, self.spec.kind, self.spec.action, target)
        if msg.startswith("error: "):
            self.report({"ERROR"}, msg.removeprefix("error: "))  # type: ignore[attr-defined]
            return {"CANCELLED"}
        self.report({"INFO"}, msg)  # type: ignore[attr-defined]
        return {"FINISHED"}


def _action_operator(spec: V.ActionSpec) -> type[Operator]:
    props: dict[str, Any] = {
        "backend": StringProperty(name="Backend", description="The backend to act on", options={"SKIP_SAVE"}),
        "target": StringProperty(
            name=TARGET_NAMES.get(spec.target or "", "Target"),
            description="The prompt id or model to act on (empty: chosen when it runs)",
            options={"SKIP_SAVE"},
        ),
    }
    if spec.needs_target:
        props["choice"] = EnumProperty(name=TARGET_NAMES.get(spec.target or "", "Target"), items=_choice_items, options={"SKIP_SAVE"})
    return type(
        f"MDM_OT_{spec.kind}_{spec.action}",
        (_BackendAction, Operator),
        {
            "bl_idname": spec.idname,
            "bl_label": spec.label,
            "bl_description": spec.description,
            "spec": spec,
            "__annotations__": props,
            "__doc__": spec.description,
        },
    )


#: One operator per action (movie_director.comfyui_interrupt, ...).
ACTION_OPERATORS = tuple(_action_operator(spec) for spec in V.ACTION_SPECS)


class MDM_ExportService(PropertyGroup):
    selected: BoolProperty(name="Export", default=True)  # type: ignore[valid-type]


class MDM_OT_export_metrics(Operator, ExportHelper):
    """Export per-service statistics per time bucket as CSV or JSON"""

    bl_idname = "movie_director.export_metrics"
    bl_label = "Export Metrics"

    filename_ext = ".csv"
    filter_glob: StringProperty(default="*.csv;*.json", options={"HIDDEN"})  # type: ignore[valid-type]
    format: EnumProperty(  # type: ignore[valid-type]
        name="Format",
        items=(("CSV", "CSV", "One row per service per bucket"), ("JSON", "JSON", "Rows plus a summary per service")),
        default="CSV",
    )
    window: EnumProperty(name="Range", items=WINDOW_ITEMS, default="24h")  # type: ignore[valid-type]
    resolution: EnumProperty(  # type: ignore[valid-type]
        name="Resolution",
        items=(
            ("AUTO", "Auto", "Raw buckets up to 1h, minutes up to 24h, hours beyond"),
            ("raw", "Raw", "The finest buckets kept in memory (ranges up to 24h)"),
            ("1m", "1 minute", "One row per minute"),
            ("1h", "1 hour", "One row per hour"),
        ),
        default="AUTO",
    )
    services: CollectionProperty(type=MDM_ExportService)  # type: ignore[valid-type]

    @classmethod
    def poll(cls, context):  # type: ignore[no-untyped-def]
        return _running(cls)

    def invoke(self, context, event):  # type: ignore[no-untyped-def]
        self.services.clear()
        for s in runtime.get().view.services:
            self.services.add().name = s.name
        if not self.filepath:
            self.filepath = f"movie_director_metrics_{_dt.datetime.now():%Y%m%d_%H%M}{self.filename_ext}"
        return ExportHelper.invoke(self, context, event)

    def check(self, context):  # type: ignore[no-untyped-def]
        """Keeps the file name's extension in line with the format."""
        ext = ".json" if self.format == "JSON" else ".csv"
        path = self.filepath
        stem, old = os.path.splitext(path)
        new = bpy.path.ensure_ext(stem if old.lower() in (".csv", ".json") else path, ext)
        if new != path:
            self.filepath = new
            return True
        return False

    def draw(self, context):  # type: ignore[no-untyped-def]
        draw_export_options(self.layout, self)

    def execute(self, context):  # type: ignore[no-untyped-def]
        ok, msg = export_metrics(self.filepath, self.format, self.window, self.resolution, self.services)
        self.report({"INFO"} if ok else {"ERROR"}, msg)
        return {"FINISHED"} if ok else {"CANCELLED"}


def draw_export_options(layout: Any, op: Any) -> None:
    col = layout.column()
    col.prop(op, "format", expand=True)
    col.prop(op, "window")
    col.prop(op, "resolution")
    if len(op.services):
        col.label(text="Services")
        box = col.box().column(align=True)
        for item in op.services:
            box.prop(item, "selected", text=item.name)


def export_metrics(filepath: str, fmt: str, window: str, resolution: str, services: Any = ()) -> tuple[bool, str]:
    """Runs the export; (ok, the message to report: the path or why not)."""
    rt = runtime.get()
    mon = rt.monitor
    if mon is None:
        return False, "Export failed: the metrics engine is not running"
    if not filepath:
        return False, "Export failed: no file chosen"
    names = None
    if len(services):
        names = [s.name for s in services if s.selected]
        if not names:
            return False, "Export failed: no service selected"
    win, note = rt.effective_window(window)
    if note:
        return False, f"Export failed: {note.split(';')[0]}"
    res = AUTO_RESOLUTION[win] if resolution == "AUTO" else resolution
    ext = ".json" if fmt == "JSON" else ".csv"
    path = bpy.path.ensure_ext(bpy.path.abspath(filepath), ext)
    from movie_director_metrics.errors import MetricsError

    try:
        out = mon.export(path, fmt.lower(), window=win, services=names, resolution=res)
    except (MetricsError, OSError, ValueError) as e:
        return False, f"Export failed: {e}"
    return True, f"Exported {fmt} ({win}, {res}) to {out}"


class MDM_OT_metrics_history(Operator):
    """A larger chart of one service's metric over a range"""

    bl_idname = "movie_director.metrics_history"
    bl_label = "Metrics History"

    service: StringProperty(name="Service")  # type: ignore[valid-type]
    metric: EnumProperty(name="Metric", items=METRIC_ITEMS, default="avg_ms")  # type: ignore[valid-type]
    window: EnumProperty(name="Range", items=WINDOW_ITEMS, default="1h")  # type: ignore[valid-type]
    threshold_ms: FloatProperty(name="Threshold", default=0.0, options={"HIDDEN"})  # type: ignore[valid-type]

    @classmethod
    def poll(cls, context):  # type: ignore[no-untyped-def]
        return _running(cls)

    def invoke(self, context, event):  # type: ignore[no-untyped-def]
        return context.window_manager.invoke_props_dialog(self, width=440)

    def draw(self, context):  # type: ignore[no-untyped-def]
        row = self.layout.row(align=True)
        row.prop(self, "metric", text="")
        row.prop(self, "window", text="")
        draw_history(self.layout, self.service, self.metric, self.window, self.threshold_ms)

    def execute(self, context):  # type: ignore[no-untyped-def]
        return {"FINISHED"}


def draw_history(layout: Any, service: str, metric: str, window: str, threshold_ms: float = 0.0) -> None:
    """The history chart (an icon from :mod:`charts`; a text sparkline in
    background mode, where previews have no icons) with min/avg/max/last."""
    rt = runtime.get()
    mon = rt.monitor
    layout.label(text=service or "(no service)", icon="GRAPH")
    if mon is None:
        layout.label(text="The metrics engine is not running", icon="ERROR")
        return
    if service not in mon.services():
        layout.label(text=f"No data for {service!r}", icon="INFO")
        return
    win, note = rt.effective_window(window)
    if note:
        layout.label(text=note, icon="INFO")
    _, values = mon.series(service, metric, win, HISTORY_POINTS)
    finite = values[np.isfinite(values)]
    thr = threshold_ms if threshold_ms > 0 and metric in ("avg_ms", "p95_ms", "p99_ms") else None
    icon_id = charts.icon("history", values, (service, metric, win, rt.version, thr), 256, 128, thr)
    if icon_id:
        layout.template_icon(icon_value=icon_id, scale=14.0)
    else:
        layout.label(text=V.sparkline(values.tolist(), 48) or "no data in this range")
    if finite.size:
        row = layout.row()
        for label, v in (("min", finite.min()), ("avg", finite.mean()), ("max", finite.max()), ("last", finite[-1])):
            row.label(text=f"{label} {runtime.format_metric(metric, float(v))}")
    layout.label(text=f"{win}: {finite.size} of {values.size} spans with data")


class MDM_OT_snooze_alert(Operator):
    """Mute this alert rule for a while (an alert already firing keeps firing until it recovers)"""

    bl_idname = "movie_director.snooze_alert"
    bl_label = "Snooze Alert"

    rule: StringProperty(name="Rule")  # type: ignore[valid-type]
    minutes: IntProperty(name="Minutes", default=30, min=0, max=24 * 60, description="0 unsnoozes")  # type: ignore[valid-type]

    @classmethod
    def poll(cls, context):  # type: ignore[no-untyped-def]
        if runtime.get().alerts is None:
            cls.poll_message_set("Alerts are not available in this engine build")
            return False
        return True

    def execute(self, context):  # type: ignore[no-untyped-def]
        import time

        until = time.time() + self.minutes * 60 if self.minutes else None
        try:
            runtime.get().alerts.snooze(self.rule, until)
        except KeyError:
            self.report({"ERROR"}, f"No alert rule named {self.rule!r}")
            return {"CANCELLED"}
        runtime.refresh_now()
        self.report({"INFO"}, f"Snoozed {self.rule} for {self.minutes} min" if self.minutes else f"Unsnoozed {self.rule}")
        return {"FINISHED"}


# ---- preferences: the backend list ---------------------------------------------------


class MDM_OT_backend_add(Operator):
    """Add a backend to watch"""

    bl_idname = "movie_director.backend_add"
    bl_label = "Add Backend"

    def execute(self, context):  # type: ignore[no-untyped-def]
        prefs = preferences.get(context)
        names = {b.name for b in prefs.backends}
        item = prefs.backends.add()
        item.name = next(f"backend{i}" for i in range(1, 1000) if f"backend{i}" not in names)
        prefs.backend_index = len(prefs.backends) - 1
        return {"FINISHED"}


class MDM_OT_backend_remove(Operator):
    """Remove the selected backend"""

    bl_idname = "movie_director.backend_remove"
    bl_label = "Remove Backend"

    @classmethod
    def poll(cls, context):  # type: ignore[no-untyped-def]
        prefs = preferences.get(context)
        return prefs is not None and 0 <= prefs.backend_index < len(prefs.backends)

    def execute(self, context):  # type: ignore[no-untyped-def]
        prefs = preferences.get(context)
        prefs.backends.remove(prefs.backend_index)
        prefs.backend_index = max(0, min(prefs.backend_index, len(prefs.backends) - 1))
        runtime.config_changed()
        return {"FINISHED"}


class MDM_OT_notify_add(Operator):
    """Add a notification target (ntfy, a webhook, Discord, Slack or the desktop)"""

    bl_idname = "movie_director.notify_add"
    bl_label = "Add Notification Target"

    def execute(self, context):  # type: ignore[no-untyped-def]
        prefs = preferences.get(context)
        names = {t.name for t in prefs.notify_targets}
        item = prefs.notify_targets.add()
        item.name = next(f"notify{i}" for i in range(1, 1000) if f"notify{i}" not in names)
        prefs.notify_index = len(prefs.notify_targets) - 1
        runtime.config_changed()
        return {"FINISHED"}


class MDM_OT_notify_remove(Operator):
    """Remove the selected notification target"""

    bl_idname = "movie_director.notify_remove"
    bl_label = "Remove Notification Target"

    @classmethod
    def poll(cls, context):  # type: ignore[no-untyped-def]
        prefs = preferences.get(context)
        return prefs is not None and 0 <= prefs.notify_index < len(prefs.notify_targets)

    def execute(self, context):  # type: ignore[no-untyped-def]
        prefs = preferences.get(context)
        prefs.notify_targets.remove(prefs.notify_index)
        prefs.notify_index = max(0, min(prefs.notify_index, len(prefs.notify_targets) - 1))
        runtime.config_changed()
        return {"FINISHED"}


class MDM_OT_notify_test(Operator):
    """Send a test notification to every enabled target (on a worker thread; the result shows in the Alerts panel)"""

    bl_idname = "movie_director.notify_test"
    bl_label = "Send Test Notification"

    def execute(self, context):  # type: ignore[no-untyped-def]
        msg = runtime.get().notify_test()
        if msg.startswith("error:"):
            self.report({"ERROR"}, msg.removeprefix("error: "))
            return {"CANCELLED"}
        self.report({"INFO"}, msg)
        return {"FINISHED"}


class MDM_OT_backends_add_defaults(Operator):
    """Add ComfyUI, A1111, Ollama and LM Studio on their standard local ports (skipping names already present)"""

    bl_idname = "movie_director.backends_add_defaults"
    bl_label = "Add Local Defaults"

    def execute(self, context):  # type: ignore[no-untyped-def]
        prefs = preferences.get(context)
        if prefs is None:
            self.report({"ERROR"}, "The add-on's preferences are not available")
            return {"CANCELLED"}
        names = {b.name for b in prefs.backends}
        added = 0
        for name, kind, url in preferences.LOCAL_DEFAULTS:
            if name in names:
                continue
            item = prefs.backends.add()
            item.name, item.kind, item.url = name, kind, url
            added += 1
        runtime.config_changed()
        self.report({"INFO"}, f"Added {added} local backends")
        return {"FINISHED"}


class MDM_OT_import_backends_file(Operator):
    """Copy the backends of backends.toml (the file the CLI reads, or the one named in the preferences) into this list: a backend of the same name is replaced, the others added"""

    bl_idname = "movie_director.import_backends_file"
    bl_label = "Import backends.toml"

    def execute(self, context):  # type: ignore[no-untyped-def]
        prefs = preferences.get(context)
        if prefs is None:
            self.report({"ERROR"}, "The add-on's preferences are not available")
            return {"CANCELLED"}
        try:
            from movie_director_metrics.collectors.config import load_config
            from movie_director_metrics.errors import ConfigError
        except ImportError as e:
            self.report({"ERROR"}, f"Engine not installed: {e}")
            return {"CANCELLED"}
        path = resolve_path(prefs.config_file)
        try:
            # A click's one small local read: fine on the main thread.
            configs = load_config(path)
        except ConfigError as e:
            self.report({"ERROR"}, f"Import failed: {e}")
            return {"CANCELLED"}
        except OSError as e:
            self.report({"ERROR"}, f"Import failed: {path}: {e}")
            return {"CANCELLED"}
        by_name = {b.name: b for b in prefs.backends}
        added = replaced = 0
        for c in configs:
            item = by_name.get(c.name)
            if item is None:
                item = prefs.backends.add()
                added += 1
            else:
                replaced += 1
            fill_backend_item(item, c)
        prefs.config_source = SOURCE_PREFERENCES
        runtime.config_changed()
        self.report({"INFO"}, f"Imported {len(configs)} backends from {path} ({added} added, {replaced} replaced)")
        return {"FINISHED"}


def fill_backend_item(item: Any, c: Any) -> None:
    """A preferences' list entry from a ``BackendConfig`` (key variable
    names and key file paths only: keys never enter userpref.blend)."""
    from movie_director_metrics.collectors.config import HOSTED_INTERVAL_S, LOCAL_INTERVAL_S, BackendConfig
    from movie_director_metrics.net import is_hosted

    defaults = BackendConfig("x", "http", "http://x")
    default_interval = HOSTED_INTERVAL_S if is_hosted(c.host) else LOCAL_INTERVAL_S
    item.name, item.kind, item.url, item.enabled = c.name, c.kind, c.url, c.enabled
    item.api_key_env = c.api_key_env or ""
    item.api_key_file = c.api_key_file or ""
    # The file's interval and timeouts, 0 where they are the defaults (so a
    # later change of the defaults applies to them too).
    item.interval_s = 0.0 if c.interval_s == default_interval else c.interval_s
    item.connect_timeout_s = 0.0 if c.connect_timeout_s == defaults.connect_timeout_s else c.connect_timeout_s
    item.read_timeout_s = 0.0 if c.read_timeout_s == defaults.read_timeout_s else c.read_timeout_s


class MDM_OT_open_preferences(Operator):
    """Open this add-on's preferences"""

    bl_idname = "movie_director.open_preferences"
    bl_label = "Movie Director Preferences"

    def execute(self, context):  # type: ignore[no-untyped-def]
        bpy.ops.preferences.addon_show(module=__package__)
        return {"FINISHED"}


classes = (
    MDM_OT_test_connection,
    *ACTION_OPERATORS,
    MDM_ExportService,
    MDM_OT_export_metrics,
    MDM_OT_metrics_history,
    MDM_OT_snooze_alert,
    MDM_OT_backend_add,
    MDM_OT_backend_remove,
    MDM_OT_backends_add_defaults,
    MDM_OT_import_backends_file,
    MDM_OT_notify_add,
    MDM_OT_notify_remove,
    MDM_OT_notify_test,
    MDM_OT_open_preferences,
)
