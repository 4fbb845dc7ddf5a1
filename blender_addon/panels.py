"""The sidebar: View3D › Sidebar › "Movie Director".

Connection Status (one row per backend) with two closed-by-default child
panels: Health Monitoring, which holds one collapsible section per service
and the LLM, Alerts and Compare sub-panels, and Jobs (running, recent and
per-model/workflow jobs; its rows come ready-made from :mod:`jobs_view`).

Each ``Panel.draw`` calls a module-level ``draw_*(layout, context)`` that
only lays out the :mod:`view` the timer built: no engine call, no I/O, so a
redraw costs layout time only (and tests can call these directly against a
recording layout).  A narrow sidebar gets the essentials; from
:data:`layout_helpers.WIDE_PX` on, the extra columns.

Layout never jumps between refreshes: each backend row and each service
section draws the same rows whatever the data (a greyed placeholder where
there is nothing to say: "no errors", "not tested"), so a backend going
down or an error appearing changes texts and colours, never positions.

A backend whose kind has actions (ComfyUI, A1111/Forge, Ollama:
:data:`view.ACTION_SPECS`) gets a third line: the answer to the last
action sent to it (or a greyed placeholder) and one icon button per
action; a button whose action has nothing to act on is greyed by its
operator's ``poll``, never left out.  The Jobs panel's running and queued
rows of such a backend get their own button (interrupt that prompt,
delete that pending one), or an empty slot of the same size.
"""

from __future__ import annotations

import re
from typing import Any

import bpy
from bpy.types import Panel, UIList

from . import alert_banner, charts, properties, runtime
from . import jobs_view as JV
from . import outages_view as OV
from . import view as V
from .layout_helpers import HAS_PROGRESS, bar, is_wide, section, state_icon

CATEGORY = runtime.SIDEBAR_CATEGORY


def _section_id(name: str) -> str:
    return "mdm_svc_" + re.sub(r"[^0-9A-Za-z_]", "_", name)


def _overall_icon(v: V.DashboardView) -> str:
    states = {b.state for b in v.backends} | {s.state for s in v.services}
    for s in ("down", "degraded", "loading", "unknown"):
        if s in states:
            return state_icon(s)
    return state_icon("up") if states else state_icon("unknown")


# ---- Connection Status ------------------------------------------------------------


def draw_connection_header(layout: Any, context: Any) -> None:
    layout.label(text="", icon=_overall_icon(runtime.get().view))


def draw_connection_alerts(layout: Any, context: Any) -> None:
    """The right end of the top panel's header: firing alerts, visible
    while every panel is closed."""
    alert_banner.draw_header(layout, runtime.get().banner)


def draw_status_bar(self: Any, context: Any) -> None:
    """Appended to Blender's status bar (``STATUSBAR_HT_header``)."""
    alert_banner.draw_status_bar(self.layout, runtime.get().banner)


def draw_connection(layout: Any, context: Any) -> None:
    rt = runtime.get()
    rt.request_refresh()  # the view may date from before the sidebar opened
    v = rt.view
    wide = is_wide(context)
    if v.message:
        row = layout.row()
        row.alert = v.status == "error"
        row.label(text=v.message, icon="ERROR" if v.status == "error" else ("TIME" if v.status == "starting" else "INFO"))
    if not v.backends:
        layout.label(text="No backends configured", icon="INFO")
        row = layout.row(align=True)
        row.operator("movie_director.backends_add_defaults", text="Add local defaults", icon="PRESET")
        row.operator("movie_director.open_preferences", text="", icon="PREFERENCES")
        return
    col = layout.column(align=True)
    for b in v.backends:
        row = col.row(align=True)
        if wide:
            split = row.split(factor=0.4, align=True)
            split.label(text=b.name, icon=state_icon(b.state))
            right = split.row(align=True)
            right.label(text=b.kind)
            right.label(text=b.latency_text)
            row = right
        else:
            row.label(text=b.name, icon=state_icon(b.state))
            row.label(text=b.latency_text)
        op = row.operator(
            "movie_director.test_connection", text="", icon="TIME" if b.check_running else "FILE_REFRESH", emboss=not b.check_running
        )
        op.backend = b.name
        details = col.column(align=True)
        details.scale_y = 0.8
        for text, icon, alert, active in (_detail_line(b), _check_line(b)):
            line = details.row()
            line.alert = alert
            line.active = active
            line.label(text=text, icon=icon)
        if V.actions_of(b.kind):
            _draw_actions(details, b)
        if wide:
            details.label(text=f"{b.url}  {b.version}".strip(), icon="URL")
        col.separator(factor=0.5)
    row = layout.row(align=True)
    row.operator("movie_director.test_connection", text="Test all", icon="FILE_REFRESH").backend = ""
    row.operator("movie_director.open_preferences", text="", icon="PREFERENCES")
    if v.online_note and any(b.state == "blocked" for b in v.backends):
        layout.label(text=v.online_note, icon="INTERNET_OFFLINE")
        if wide:
            layout.label(text="Preferences › System › Network › Allow Online Access")


def _detail_line(b: V.BackendRow) -> tuple[str, str, bool, bool]:
    """(text, icon, alert, active) of a backend's first detail line: why it
    is blocked and/or its last error with its age, else a greyed "no errors"."""
    err = f"{b.error_text}  {b.error_age}".strip() if b.error_text else ""
    text = "; ".join(t for t in (b.reason, err) if t)
    if not text:
        return "no errors", "CHECKMARK", False, False
    icon = "INTERNET_OFFLINE" if b.state == "blocked" else "ERROR" if err else "INFO"
    return text, icon, bool(err) and b.state == "down", True


def _check_line(b: V.BackendRow) -> tuple[str, str, bool, bool]:
    """The second: what to do while it is not up (the diagnosis's hint; a
    "Test connection" of a down backend finds the same cause), else the
    last "Test connection" (or that one runs), else a greyed "not tested".
    Always one line, so the panel's layout never moves."""
    if b.check_running:
        return "Testing…", "TIME", False, True
    if b.hint:
        return f"fix: {b.hint}", "QUESTION", False, True
    if b.check_text:
        return f"Test: {b.check_text}", "CHECKMARK" if b.check_text.startswith("up") else "CANCEL", False, True
    return "not tested", "FILE_REFRESH", False, False


def _action_line(b: V.BackendRow) -> tuple[str, str, bool, bool]:
    """The third line of a backend with actions: the action being sent,
    else the answer to the last one, else a greyed placeholder (Ollama:
    the models it has loaded, what "Unload" offers)."""
    if b.action_running:
        return f"{b.action_running}…", "TIME", False, True
    if b.action_text:
        return b.action_text, "CHECKMARK" if b.action_ok else "ERROR", not b.action_ok, True
    if b.kind == "ollama":
        return (f"loaded: {', '.join(b.models)}", "INFO", False, True) if b.models else ("no model loaded", "INFO", False, False)
    return "no action sent", "INFO", False, False


def _draw_actions(layout: Any, b: V.BackendRow) -> None:
    """The answer line and the buttons: the same elements whatever the state."""
    text, icon, alert, active = _action_line(b)
    line = layout.row(align=True)
    sub = line.row()
    sub.alert = alert
    sub.active = active
    sub.label(text=text, icon=icon)
    buttons = line.row(align=True)
    buttons.enabled = not b.action_running
    for spec in V.actions_of(b.kind):
        op = buttons.operator(spec.idname, text="", icon=V.ACTION_ICONS[(spec.kind, spec.action)])
        op.backend = b.name


# ---- Health Monitoring ---------------------------------------------------------------


def draw_service(layout: Any, s: V.ServiceView, wide: bool) -> None:
    header, body = section(layout, _section_id(s.name), default_closed=True)
    header.label(text=s.name, icon=state_icon(s.state))
    header.label(text=s.summary)
    if body is None:
        return
    bar(body, s.avg)
    bar(body, s.p95)
    if wide:
        row = body.row()
        bar(row.column(), s.success)
        bar(row.column(), s.uptime)
    else:
        bar(body, s.success)
        bar(body, s.uptime)
    body.label(text=s.sparkline or "no latency data in this range", icon="GRAPH")
    if s.vram is not None:  # once shown, stays (view.build_service keep_vram)
        bar(body, s.vram)
    if wide:
        grid = body.grid_flow(row_major=True, columns=2, even_columns=True, align=True)
        grid.label(text=s.requests_text, icon="SORTTIME")
        grid.label(text=s.queue_text, icon="PRESET")
        grid.label(text=s.processing_text, icon="MOD_TIME")
        grid.label(text=s.kind, icon="LINKED")
    else:
        body.label(text=s.queue_text, icon="PRESET")
    row = body.row()
    row.active = bool(s.errors)
    row.label(text=s.errors_text, icon="ERROR" if s.errors else "CHECKMARK")
    row = body.row()
    row.active = bool(s.last_error_text)
    row.label(text=f"last error: {s.last_error_text or 'none'}", icon="INFO")
    row = body.row(align=True)
    op = row.operator("movie_director.metrics_history", text="History" if wide else "", icon="GRAPH")
    op.service = s.name
    op.threshold_ms = s.threshold_ms


def draw_health(layout: Any, context: Any) -> None:
    v = runtime.get().view
    ws = properties.state(context)
    wide = is_wide(context)
    if ws is not None:
        layout.row().prop(ws, "window", expand=True)
    if v.window_note:
        layout.label(text=v.window_note, icon="INFO")
    if v.status != "running":
        layout.label(text=v.message or "Not running", icon="TIME")
        return
    if not v.services:
        layout.label(text="No data yet: waiting for the first poll", icon="TIME")
    for s in v.services:
        draw_service(layout, s, wide)
    row = layout.row(align=True)
    row.operator("movie_director.export_metrics", text="Export…", icon="EXPORT")
    if v.storage_text and wide:
        layout.label(text=v.storage_text, icon="FILE")


def draw_llm(layout: Any, context: Any) -> None:
    llm = runtime.get().view.llm
    if not llm.available or not llm.models:
        layout.label(text=llm.note or "No LLM requests", icon="INFO")
        if not llm.available:
            return
    wide = is_wide(context)
    for key, text in llm.totals:
        layout.label(text=f"{key}: {text}")
    col = layout.column(align=True)
    for m in llm.models:
        box = col.box()
        row = box.row(align=True)
        row.label(text=m.model, icon="OUTLINER_OB_FONT")
        row.label(text=f"{m.requests} req")
        row.label(text=m.cost)
        box.progress(text=f"{m.share * 100:.0f} % of requests", factor=m.share, type="BAR")
        if wide:
            grid = box.grid_flow(row_major=True, columns=2, even_columns=True, align=True)
            grid.label(text=f"tokens {m.tokens}")
            grid.label(text=f"latency {m.latency}")
            grid.label(text=f"TTFT {m.ttft}")
        else:
            box.label(text=f"{m.latency}, TTFT {m.ttft}")


def draw_alerts(layout: Any, context: Any) -> None:
    alerts = runtime.get().view.alerts
    for rule, left in alerts.snoozed:
        row = layout.row(align=True)
        row.label(text=f"{rule} snoozed ({left} left)", icon="PAUSE")
        op = row.operator("movie_director.snooze_alert", text="", icon="PLAY")
        op.rule, op.minutes = rule, 0
    for text, ok in alerts.notify:
        line = layout.row()
        line.alert = not ok
        line.label(text=text, icon="OUTLINER_OB_SPEAKER")
    if not alerts.available or not alerts.rows:
        layout.label(text=alerts.note or "No alerts", icon="INFO")
        return
    col = layout.column(align=True)
    for a in alerts.rows:
        row = col.row(align=True)
        row.alert = a.state == "firing"
        row.label(text=a.name, icon={"firing": "ERROR", "pending": "TIME"}.get(a.state, "CHECKMARK"))
        row.label(text=f"{a.state} {a.age}".strip())
        op = row.operator("movie_director.snooze_alert", text="", icon="PLAY" if a.snoozed else "PAUSE", depress=a.snoozed)
        op.rule = a.rule
        op.minutes = 0 if a.snoozed else 30
        if a.detail and is_wide(context):
            col.label(text=a.detail)


class MDM_UL_compare(UIList):
    """The Compare table: rank, service, value (and a bar when wide),
    sortable by rank or name, reversible, filterable by name."""

    bl_idname = "MDM_UL_compare"

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index):  # type: ignore[no-untyped-def]
        draw_compare_row(layout, item, is_wide(context))

    def filter_items(self, context, data, propname):  # type: ignore[no-untyped-def]
        return compare_order(getattr(data, propname), data, self.filter_name, self.bitflag_filter_item)


def draw_compare_row(layout: Any, item: Any, wide: bool) -> None:
    row = layout.row(align=True)
    row.label(text=f"{item.rank}.")
    row.label(text=item.name)
    if wide and item.has_value:
        row.progress(text=item.text, factor=item.factor, type="BAR")
    else:
        row.label(text=item.text)


def compare_order(items: Any, ws: Any, filter_name: str, flag: int) -> tuple[list[int], list[int]]:
    helper = bpy.types.UI_UL_list
    flags = helper.filter_items_by_name(filter_name, flag, items, "name") if filter_name else [flag] * len(items)
    if ws.compare_sort == "NAME":
        order = helper.sort_items_by_name(items, "name") or list(range(len(items)))
    else:
        order = [max(0, min(len(items) - 1, it.rank - 1)) for it in items]
    if ws.compare_reverse:
        order = [len(items) - 1 - p for p in order]
    return flags, order


def draw_compare(layout: Any, context: Any) -> None:
    ws = properties.state(context)
    if ws is None:
        return
    row = layout.row(align=True)
    row.prop(ws, "compare_metric", text="")
    row.prop(ws, "compare_window", text="")
    row = layout.row(align=True)
    row.prop(ws, "compare_sort", expand=True)
    row.prop(ws, "compare_reverse", text="", icon="SORT_DESC" if ws.compare_reverse else "SORT_ASC")
    n = len(ws.compare_rows)
    if n == 0:
        layout.label(text="No services to compare yet", icon="INFO")
        return
    layout.template_list("MDM_UL_compare", "", ws, "compare_rows", ws, "compare_index", rows=min(max(n, 3), 10))
    if 0 <= ws.compare_index < n:
        op = layout.operator("movie_director.metrics_history", text="History of selected", icon="GRAPH")
        op.service = ws.compare_rows[ws.compare_index].name
        op.metric = ws.compare_metric


# ---- Jobs ---------------------------------------------------------------------------

#: Table columns: (header, the row's text).  The narrow table shows the
#: sort column (p95 when sorting by count) next to the count.
_JOB_COLUMNS = {
    JV.SORT_P95: ("p95", lambda r: r.p95),
    JV.SORT_WAIT_P95: ("wait p95", lambda r: r.wait_p95),
    JV.SORT_SUCCESS: ("success", lambda r: r.success),
}


def draw_jobs(layout: Any, context: Any) -> None:
    v = runtime.get().view
    jobs = v.jobs
    ws = properties.state(context)
    wide = is_wide(context)
    if ws is not None:
        layout.row().prop(ws, "jobs_window", expand=True)
    if jobs is None:
        layout.label(text=v.message or "Starting the metrics engine…", icon="ERROR" if v.status == "error" else "TIME")
        return
    for note in (jobs.window_note, jobs.shared_note and f"Not shared with other add-ons: {jobs.shared_note}"):
        if note:
            layout.label(text=note, icon="INFO")
    if not jobs.available:
        layout.label(text=jobs.note, icon="INFO")
        return
    layout.label(text=jobs.totals, icon="GRAPH")
    if jobs.note:
        layout.label(text=jobs.note, icon="INFO")
    _draw_running(layout.column(align=True), jobs, {b.name: b.kind for b in v.backends})
    _draw_recent(layout.column(align=True), jobs, wide)
    _draw_job_table(layout, ws, jobs, wide)
    _draw_vram(layout.column(align=True), jobs)


def draw_outages(layout: Any, context: Any) -> None:
    """A 24 h heartbeat strip per backend (one image: names and summaries
    on the left, each strip as tall as its rows), then the last outages."""
    v = runtime.get().view
    o = v.outages
    if o is None:
        layout.label(text=v.message or "Starting the metrics engine…", icon="ERROR" if v.status == "error" else "TIME")
        return
    if not o.available:
        layout.label(text=o.note, icon="INFO")
        return
    for g in range(0, len(o.strips), OV.STRIPS_PER_IMAGE):
        group = o.strips[g : g + OV.STRIPS_PER_IMAGE]
        rows = OV.strip_rows(group)
        split = layout.split(factor=0.45)
        names = split.column(align=True)
        for s, n in zip(group, rows):
            names.label(text=s.name, icon="REC" if 2 in s.cells[-1:] else "BLANK1")
            if n == 2:
                line = names.row()
                line.active = False
                line.label(text=s.summary)
        icon_id = charts.strips_icon(f"heartbeat-{g}", [s.cells for s in group], rows, tuple((s.name, s.cells) for s in group))
        if icon_id:
            split.template_icon(icon_value=icon_id, scale=float(sum(rows)))
        else:  # background mode: previews have no icons
            right = split.column(align=True)
            for s, n in zip(group, rows):
                right.label(text=OV.text_strip(s.cells))
                if n == 2:
                    right.label(text="")
    if o.strips:
        line = layout.row()
        line.active = False
        line.label(text="24 h ago → now  (red: down, amber: both)")
    col = layout.column(align=True)
    if not o.incidents:
        col.label(text=o.note or "No outage in the last 24 h", icon="CHECKMARK")
    for r in o.incidents:
        row = col.row()
        row.alert = r.ongoing
        row.label(text=f"{r.service}: {r.duration}, {r.cause}", icon="ERROR" if r.ongoing else "TIME")
        sub = col.row()
        sub.active = False
        sub.label(text=f"{r.when}  {r.detail}".strip(), icon="BLANK1")
    if o.incidents_more:
        col.label(text=f"+{o.incidents_more} more: movie-director-metrics incidents")


#: Icon per VRAM verdict (jobs_view.VRAM_VERDICTS).
_VRAM_ICONS = {"fits": "CHECKMARK", "tight": "ERROR", "no": "CANCEL", "unknown": "QUESTION"}


def _draw_vram(col: Any, jobs: JV.JobsView) -> None:
    """Per model: what its jobs needed against the VRAM free now.  Always
    one header line (rows keep their places while jobs come and go)."""
    col.label(text="VRAM for the next job", icon="MEMORY")
    if not jobs.vram:
        line = col.row()
        line.active = False
        line.label(text="no job with a VRAM reading yet", icon="BLANK1")
        return
    for r in jobs.vram:
        line = col.row()
        line.alert = r.verdict == "no"
        line.active = r.verdict != "unknown"
        line.label(text=r.text, icon=_VRAM_ICONS.get(r.verdict, "QUESTION"))


#: The action on a backend's running / queued job row, by kind.
_JOB_ACTIONS = {("comfyui", "running"): "interrupt", ("comfyui", "queued"): "delete", ("a1111", "running"): "interrupt"}


def _draw_running(col: Any, jobs: JV.JobsView, kinds: dict[str, str]) -> None:
    col.label(text=f"Running and queued: {len(jobs.running) + jobs.running_more}", icon="PLAY")
    if not jobs.running:
        row = col.row()
        row.active = False
        row.label(text="none")
    for r in jobs.running:
        row = col.row(align=True)
        row.alert = bool(r.stuck)  # red: it looks stuck
        split = row.split(factor=0.55, align=True)
        split.label(text=f"{r.service} · {r.model}", icon="ERROR" if r.stuck else "PLAY" if r.state == "running" else "TIME")
        right = split.row(align=True)
        right.label(text=f"{r.elapsed} · {r.stuck or r.eta}" if (r.stuck or r.eta) else r.elapsed)
        if HAS_PROGRESS:
            right.progress(text=r.progress_text, factor=r.factor, type="BAR")
        else:
            right.label(text=r.progress_text)
        _draw_job_action(right, r, kinds.get(r.service, ""))
    if jobs.running_more:
        col.label(text=f"+{jobs.running_more} more")


def _draw_job_action(layout: Any, r: JV.RunningJob, kind: str) -> None:
    """Interrupt a running prompt / delete a queued one of a backend that
    has that action; else an empty slot of the same size (rows stay aligned)."""
    action = _JOB_ACTIONS.get((kind, r.state))
    spec = V.action_spec(kind, action) if action else None
    if spec is None or (spec.target is not None and not r.job_id):
        layout.label(text="", icon="BLANK1")
        return
    op = layout.operator(spec.idname, text="", icon=V.ACTION_ICONS[(spec.kind, spec.action)])
    op.backend = r.service
    if spec.target is not None:
        op.target = r.job_id


def _draw_recent(col: Any, jobs: JV.JobsView, wide: bool) -> None:
    col.label(text="Last finished", icon="SORTTIME")
    if not jobs.recent:
        row = col.row()
        row.active = False
        row.label(text="none")
    for r in jobs.recent:
        row = col.row(align=True)
        row.alert = not r.ok
        split = row.split(factor=0.45, align=True)
        split.label(text=f"{r.service} · {r.model}", icon="CHECKMARK" if r.ok else "ERROR")
        right = split.row(align=True)
        right.label(text=r.outcome)
        right.label(text=r.processing)
        if wide:
            right.label(text=f"wait {r.queue_wait}")
            line = col.row()
            line.active = False
            line.label(text="  ".join(t for t in (r.finished, r.tags, r.job_id) if t))


def _draw_job_table(layout: Any, ws: Any, jobs: JV.JobsView, wide: bool) -> None:
    if ws is not None:
        layout.row().prop(ws, "jobs_by", expand=True)
        row = layout.row(align=True)
        row.prop(ws, "jobs_sort", text="")
        row.prop(ws, "jobs_reverse", text="", icon="SORT_DESC" if ws.jobs_reverse else "SORT_ASC")
    if not jobs.table:
        return
    col = layout.column(align=True)
    if wide:
        columns = list(_JOB_COLUMNS.values())
    else:
        columns = [_JOB_COLUMNS.get(jobs.sort, _JOB_COLUMNS[JV.SORT_P95])]
    header = col.row(align=True).split(factor=0.4, align=True)
    header.label(text=jobs.by)
    cells = header.row(align=True)
    cells.label(text="jobs")
    for title, _ in columns:
        cells.label(text=title)
    for r in jobs.table:
        split = col.row(align=True).split(factor=0.4, align=True)
        split.label(text=r.name)
        cells = split.row(align=True)
        cells.alert = bool(r.failed)
        cells.label(text=r.count_text if wide else str(r.count))
        for _, text in columns:
            cells.label(text=text(r))
    if jobs.table_more:
        col.label(text=f"+{jobs.table_more} more")


# ---- panel classes -------------------------------------------------------------------


class _SidebarPanel(Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = CATEGORY


class VIEW3D_PT_mdm_connection(_SidebarPanel):
    bl_idname = "VIEW3D_PT_mdm_connection"
    bl_label = "Connection Status"

    def draw_header(self, context):  # type: ignore[no-untyped-def]
        draw_connection_header(self.layout, context)

    def draw_header_preset(self, context):  # type: ignore[no-untyped-def]
        draw_connection_alerts(self.layout, context)

    def draw(self, context):  # type: ignore[no-untyped-def]
        draw_connection(self.layout, context)


class VIEW3D_PT_mdm_health(_SidebarPanel):
    bl_idname = "VIEW3D_PT_mdm_health"
    bl_label = "Health Monitoring"
    bl_parent_id = "VIEW3D_PT_mdm_connection"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):  # type: ignore[no-untyped-def]
        draw_health(self.layout, context)


class VIEW3D_PT_mdm_jobs(_SidebarPanel):
    bl_idname = "VIEW3D_PT_mdm_jobs"
    bl_label = "Jobs"
    bl_parent_id = "VIEW3D_PT_mdm_connection"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):  # type: ignore[no-untyped-def]
        draw_jobs(self.layout, context)


class VIEW3D_PT_mdm_outages(_SidebarPanel):
    bl_idname = "VIEW3D_PT_mdm_outages"
    bl_label = "Outages (24 h)"
    bl_parent_id = "VIEW3D_PT_mdm_connection"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):  # type: ignore[no-untyped-def]
        draw_outages(self.layout, context)


class VIEW3D_PT_mdm_llm(_SidebarPanel):
    bl_idname = "VIEW3D_PT_mdm_llm"
    bl_label = "LLM"
    bl_parent_id = "VIEW3D_PT_mdm_health"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):  # type: ignore[no-untyped-def]
        draw_llm(self.layout, context)


class VIEW3D_PT_mdm_alerts(_SidebarPanel):
    bl_idname = "VIEW3D_PT_mdm_alerts"
    bl_label = "Alerts"
    bl_parent_id = "VIEW3D_PT_mdm_health"

    def draw(self, context):  # type: ignore[no-untyped-def]
        draw_alerts(self.layout, context)


class VIEW3D_PT_mdm_compare(_SidebarPanel):
    bl_idname = "VIEW3D_PT_mdm_compare"
    bl_label = "Compare"
    bl_parent_id = "VIEW3D_PT_mdm_health"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):  # type: ignore[no-untyped-def]
        draw_compare(self.layout, context)


classes = (
    MDM_UL_compare,
    VIEW3D_PT_mdm_connection,
    VIEW3D_PT_mdm_health,
    VIEW3D_PT_mdm_llm,
    VIEW3D_PT_mdm_alerts,
    VIEW3D_PT_mdm_compare,
    VIEW3D_PT_mdm_jobs,
    VIEW3D_PT_mdm_outages,
)



def register() -> None:
    """Adds the firing-alerts text to Blender's status bar."""
    bpy.types.STATUSBAR_HT_header.append(draw_status_bar)


def unregister() -> None:
    bpy.types.STATUSBAR_HT_header.remove(draw_status_bar)


#: (panel class, draw function) for tests and benchmarks.
DRAWS = (
    (VIEW3D_PT_mdm_connection, draw_connection),
    (VIEW3D_PT_mdm_health, draw_health),
    (VIEW3D_PT_mdm_llm, draw_llm),
    (VIEW3D_PT_mdm_alerts, draw_alerts),
    (VIEW3D_PT_mdm_compare, draw_compare),
    (VIEW3D_PT_mdm_jobs, draw_jobs),
    (VIEW3D_PT_mdm_outages, draw_outages),
)
