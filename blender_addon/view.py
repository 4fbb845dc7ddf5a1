"""What the panels show, computed once per timer tick from one engine
snapshot.  Pure Python: no ``bpy`` here, so the numbers and words can be
checked without Blender, and ``draw()`` only lays out ready-made values.

Every class is a frozen dataclass: two views compare equal exactly when the
panels would look the same, which is how the timer decides whether the
sidebar needs a redraw.  Missing data stays ``None``/"n/a", never a zero
that looks real (the engine's own rule).

Nothing jumps between refreshes: numbers have one fixed format each
(milliseconds and percentages always with one decimal, VRAM always in GiB),
rows keep their first-seen order (:func:`stable_order`), and every service
section has the same rows whatever its data (a placeholder where there is
nothing to say), so a service going down or a value changing magnitude
moves no other row.  Bars are smoothed between refreshes by the runtime
(:mod:`smoothing`); the texts on them stay the true values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # types only: jobs_view and outages_view build on this module's formatting
    from .jobs_view import JobsView
    from .outages_view import OutagesView

# Threshold levels: fraction of the threshold used (green < 50 %, yellow
# < 80 %, red beyond).
LEVEL_OK, LEVEL_WARN, LEVEL_BAD, LEVEL_NONE = "ok", "warn", "bad", "none"
WARN_AT, BAD_AT = 0.5, 0.8

#: Backend states (BackendStatus.state) plus the ones the add-on derives.
STATES = ("up", "degraded", "down", "loading", "unknown", "blocked", "disabled", "starting")

SPARK_CHARS = "▁▂▃▄▅▆▇"  # U+2581…U+2587: render in Blender's UI font
SPARK_GAP = "·"


# ---- formatting --------------------------------------------------------------


def fmt_ms(ms: float | None) -> str:
    """Always milliseconds with one decimal ("4.2 ms", "2,500.0 ms"): the
    same shape whatever the magnitude."""
    if ms is None or not math.isfinite(ms):
        return "n/a"
    return f"{ms:,.1f} ms"


def fmt_pct(fraction: float | None) -> str:
    """``fraction`` from 0 to 1, always with one decimal; 99.95 % reads
    "99.9 %", never "100.0 %" (only 100 % itself does)."""
    if fraction is None or not math.isfinite(fraction):
        return "n/a"
    pct = 100.0 * fraction
    return "100.0 %" if pct >= 100.0 else f"{math.floor(pct * 10 + 1e-6) / 10:.1f} %"


def fmt_gib(n: float | None) -> str:
    """Bytes in GiB with one decimal (VRAM: one unit, whatever the size)."""
    if n is None or not math.isfinite(n):
        return "n/a"
    return f"{n / 2**30:.1f}"


def fmt_bytes(n: float | None) -> str:
    if n is None or not math.isfinite(n):
        return "n/a"
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def fmt_age(seconds: float | None) -> str:
    """Coarse on purpose: the text (and so the view) changes at most once a
    second under a minute, once a minute under an hour."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    s = max(0.0, seconds)
    if s < 60:
        return f"{int(s)} s ago"
    if s < 3600:
        return f"{int(s // 60)} min ago"
    if s < 86_400:
        return f"{int(s // 3600)} h ago"
    return f"{int(s // 86_400)} d ago"


def fmt_duration(seconds: float) -> str:
    s = max(0.0, seconds)
    if s < 60:
        return f"{int(s)} s"
    if s < 3600:
        return f"{int(s // 60)} min"
    return f"{s / 3600:.1f} h"


def level_of(fraction: float | None) -> str:
    """Fraction of a threshold used -> LEVEL_*."""
    if fraction is None or not math.isfinite(fraction):
        return LEVEL_NONE
    if fraction < WARN_AT:
        return LEVEL_OK
    if fraction < BAD_AT:
        return LEVEL_WARN
    return LEVEL_BAD


def stable_order(names: Iterable[str], seen: Iterable[str] = ()) -> list[str]:
    """``names`` in first-seen order: those in ``seen`` (the order of the
    previous refreshes) keep their place, new ones follow in their own
    order.  Names in ``seen`` but not in ``names`` are left out; feed the
    result back as the next ``seen`` (with any you want to remember)."""
    present = list(dict.fromkeys(names))
    have = set(present)
    out = [n for n in dict.fromkeys(seen) if n in have]
    known = set(out)
    return out + [n for n in present if n not in known]


def sparkline(values: Iterable[float], width: int = 24) -> str:
    """Unicode block sparkline of the last ``width`` values (NaN: a gap),
    scaled from 0 to the largest value so a flat low line reads as low."""
    vals = list(values)[-width:]
    finite = [v for v in vals if v is not None and math.isfinite(v)]
    if not finite:
        return ""
    top = max(finite)
    out = []
    for v in vals:
        if v is None or not math.isfinite(v):
            out.append(SPARK_GAP)
        elif top <= 0:
            out.append(SPARK_CHARS[0])
        else:
            out.append(SPARK_CHARS[min(len(SPARK_CHARS) - 1, int(v / top * (len(SPARK_CHARS) - 1) + 0.5))])
    return "".join(out)


# ---- the view ------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    """One progress bar: ``factor`` 0…1 of the bar drawn, ``level`` its
    colour dot, ``text`` written on it, ``breach`` when past the limit."""

    label: str
    text: str
    factor: float
    level: str
    breach: bool = False


@dataclass(frozen=True)
class BackendRow:
    name: str
    kind: str
    url: str
    state: str
    #: Why the state is what it is, when that is not obvious (blocked, n/a).
    reason: str = ""
    latency_text: str = "n/a"
    error_text: str = ""
    error_age: str = ""
    version: str = ""
    #: Result of the last "Test connection", e.g. "up, 12 ms (3 s ago)".
    check_text: str = ""
    check_running: bool = False
    #: Why it is not up (a cause of the collectors' diagnosis, e.g.
    #: "refused", "wrong_kind") and what to do about it; "" while up.
    cause: str = ""
    hint: str = ""
    #: Models the backend has loaded (Ollama: what "Unload" offers).
    models: tuple[str, ...] = ()
    #: The answer to the last action sent to it ("Interrupt: ok, HTTP 200
    #: (3 s ago)", or the failure), "" before any; ``action_ok`` its outcome.
    action_text: str = ""
    action_ok: bool = True
    #: The label of the action being sent now, "" when none is.
    action_running: str = ""


@dataclass(frozen=True)
class ServiceView:
    name: str
    kind: str
    state: str
    threshold_ms: float
    #: Header text: p95 latency, or why there is none.
    summary: str
    avg: Bar
    p95: Bar
    success: Bar
    uptime: Bar
    vram: Bar | None
    requests_text: str
    queue_text: str
    processing_text: str
    sparkline: str
    #: (error type, count), most frequent first.
    errors: tuple[tuple[str, int], ...] = ()
    last_error_text: str = ""
    #: One line for the errors: "no errors" or "timeout ×3, oom ×1 (+1 type)".
    errors_text: str = "no errors"


@dataclass(frozen=True)
class LlmModelRow:
    model: str
    requests: str
    tokens: str
    latency: str
    ttft: str
    cost: str
    share: float


@dataclass(frozen=True)
class LlmView:
    available: bool
    note: str = ""
    models: tuple[LlmModelRow, ...] = ()
    totals: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class AlertRow:
    name: str
    state: str  # "pending" | "firing" | "recovering"
    age: str
    detail: str = ""
    #: The rule (snoozing is per rule).
    rule: str = ""
    snoozed: bool = False


@dataclass(frozen=True)
class AlertsView:
    available: bool
    note: str = ""
    rows: tuple[AlertRow, ...] = ()
    #: (rule, time left) of snoozed rules: listed so they can be unsnoozed.
    snoozed: tuple[tuple[str, str], ...] = ()
    #: One line per notification target: (text, ok); URLs never shown.
    notify: tuple[tuple[str, bool], ...] = ()


def notify_line(st: Any) -> tuple[str, bool]:
    """A notification target's status (``alerts.NotifyStatus``) as a line."""
    counts = f"{st.sent} sent" + (f", {st.failed} failed" if st.failed else "") + (f", {st.dropped} dropped" if st.dropped else "")
    text = f"{st.name} ({st.kind}): {st.state}, {counts}"
    if st.state in ("failing", "retrying") and st.last_error:
        text += f": {st.last_error}"
    return text, st.state not in ("failing", "retrying", "blocked", "unavailable")


@dataclass(frozen=True)
class DashboardView:
    #: "stopped" | "starting" | "running" | "error"
    status: str = "stopped"
    message: str = ""
    window: str = "5m"
    window_note: str = ""
    storage_text: str = ""
    online_note: str = ""
    backends: tuple[BackendRow, ...] = ()
    services: tuple[ServiceView, ...] = ()
    llm: LlmView = field(default_factory=lambda: LlmView(False, "LLM tracking not available"))
    alerts: AlertsView = field(default_factory=lambda: AlertsView(False, "Alerts not available"))
    #: The Jobs panel (:mod:`jobs_view`); None until the engine runs.
    jobs: JobsView | None = None
    #: The Outages panel (:mod:`outages_view`); None until the engine runs.
    outages: OutagesView | None = None


EMPTY = DashboardView()


# ---- actions on a backend -----------------------------------------------------------


@dataclass(frozen=True)
class ActionSpec:
    """One action the panels offer (one operator each, see operators.py):
    the same set as the engine's ``collectors.actions.ACTIONS``."""

    kind: str
    action: str
    label: str
    #: What it acts on: None, "prompt_id" or "model" (``Action.target``).
    target: str | None
    #: A target must be chosen (a pending prompt, a loaded model).
    needs_target: bool
    #: The tooltip, and what the confirmation says happens.
    description: str

    @property
    def idname(self) -> str:
        return f"movie_director.{self.kind}_{self.action}"


ACTION_SPECS: tuple[ActionSpec, ...] = (
    ActionSpec("comfyui", "interrupt", "Interrupt", "prompt_id", False,
               "Stop the running prompt (with its prompt id: only if that one still runs)"),
    ActionSpec("comfyui", "delete", "Delete Pending", "prompt_id", True, "Remove a waiting prompt from the queue"),
    ActionSpec("comfyui", "free", "Free Memory", None, False,
               "Unload every model and free cached memory (the next prompt loads them again)"),
    ActionSpec("a1111", "interrupt", "Interrupt", None, False, "Stop the running generation"),
    ActionSpec("a1111", "skip", "Skip", None, False, "Skip the current image of the batch"),
    ActionSpec("ollama", "unload", "Unload Model", "model", True, "Unload a loaded model from memory now (keep_alive 0)"),
)

#: (kind, action) -> its button's icon.
ACTION_ICONS = {
    ("comfyui", "interrupt"): "CANCEL",
    ("comfyui", "delete"): "TRASH",
    ("comfyui", "free"): "MEMORY",
    ("a1111", "interrupt"): "CANCEL",
    ("a1111", "skip"): "FF",
    ("ollama", "unload"): "UNLINKED",
}


def actions_of(kind: str) -> tuple[ActionSpec, ...]:
    """The actions a backend of ``kind`` offers (none for most kinds)."""
    return tuple(a for a in ACTION_SPECS if a.kind == kind)


def action_spec(kind: str, action: str) -> ActionSpec | None:
    return next((a for a in ACTION_SPECS if a.kind == kind and a.action == action), None)


def short_target(target: str | None) -> str:
    """A target as a line shows it: a prompt id's first 8 characters (a
    uuid is too long for a sidebar), a model name as is."""
    if not target:
        return ""
    return target[:8] if len(target) == 36 and target.count("-") == 4 else target


def action_text(kind: str, answer: tuple[str, str | None, bool, str, float] | None, now: float) -> str:
    """The answer line of ``answer`` = (action, target, ok, message, epoch):
    "Interrupt: ok, HTTP 200 (3 s ago)", "Unload Model llama3: failed,
    connection refused (1 min ago)"."""
    if answer is None:
        return ""
    action, target, ok, message, at = answer
    spec = action_spec(kind, action)
    label = spec.label if spec is not None else action
    who = f"{label} {short_target(target)}".strip()
    return f"{who}: {'ok' if ok else 'failed'}, {message} ({fmt_age(now - at)})"


# ---- building it ------------------------------------------------------------------


def _latency_bar(label: str, ms: float | None, threshold_ms: float) -> Bar:
    if ms is None:
        return Bar(label, f"{label} n/a", 0.0, LEVEL_NONE)
    frac = ms / threshold_ms if threshold_ms > 0 else None
    return Bar(
        label,
        f"{label} {fmt_ms(ms)} / {fmt_ms(threshold_ms)}",
        0.0 if frac is None else min(1.0, frac),
        level_of(frac),
        breach=frac is not None and frac >= 1.0,
    )


def _ratio_bar(label: str, fraction: float | None, min_ok: float) -> Bar:
    """A "higher is better" ratio (success, uptime): the level comes from
    how far below 100 % it is against the allowed shortfall ``1 - min_ok``."""
    if fraction is None:
        return Bar(label, f"{label} n/a", 0.0, LEVEL_NONE)
    allowed = max(1e-9, 1.0 - min_ok)
    used = (1.0 - fraction) / allowed
    return Bar(label, f"{label} {fmt_pct(fraction)}", max(0.0, min(1.0, fraction)), level_of(used), breach=used >= 1.0)


def _gauge_last(stats: Any, name: str) -> float | None:
    g = (getattr(stats, "resources", None) or {}).get(name)
    return None if g is None else g.last


def service_state(stats: Any | None, status: Any | None, success_min: float) -> str:
    """The collector's state when there is one, else the engine's last
    health result; "degraded" when up but below the success minimum."""
    state = getattr(status, "state", None)
    if state is None:
        up = getattr(stats, "up", None)
        state = "unknown" if up is None else ("up" if up else "down")
    if state == "up" and stats is not None:
        sr = stats.success_rate
        if sr is not None and sr < success_min:
            return "degraded"
    return state


def build_service(
    name: str,
    kind: str,
    stats: Any,
    status: Any | None,
    threshold_ms: float,
    success_min: float,
    spark_values: Iterable[float] = (),
    keep_vram: bool = False,
) -> ServiceView:
    """``keep_vram``: the service showed VRAM before, so its VRAM row stays
    (reading "n/a") when there is no reading now."""
    s = stats
    vram_used = _gauge_last(s, "vram_used_bytes")
    vram_total = _gauge_last(s, "vram_total_bytes")
    vram = None
    if vram_used is not None:
        if vram_total:
            frac = vram_used / vram_total
            vram = Bar("VRAM", f"VRAM {fmt_gib(vram_used)} / {fmt_gib(vram_total)} GiB", min(1.0, frac), level_of(frac), frac >= 0.95)
        else:
            vram = Bar("VRAM", f"VRAM {fmt_gib(vram_used)} GiB", 0.0, LEVEL_NONE)
    elif keep_vram:  # it had a reading: the row stays, saying there is none now
        vram = Bar("VRAM", "VRAM n/a", 0.0, LEVEL_NONE)
    if s.queue_running is None and s.queue_pending is None:
        queue = "queue n/a"
    else:
        queue = f"queue {s.queue_running or 0} running, {s.queue_pending or 0} pending"
    if s.processing_count:
        proc = f"processing {fmt_ms(s.processing_avg_ms)} avg, {fmt_ms(s.processing_p95_ms)} p95"
    else:
        proc = "processing n/a"
    errors = tuple(list(s.error_counts.items())[:5])
    last_err = ""
    if s.last_error:
        last_err = f"{s.last_error} {fmt_age(s.end - s.last_error_at) if s.last_error_at else ''}".strip()
    p95 = _latency_bar("p95", s.p95_ms, threshold_ms)
    state = service_state(s, status, success_min)
    if state == "up" and p95.breach:
        state = "degraded"  # reachable, but slower than its threshold
    return ServiceView(
        name=name,
        kind=kind,
        state=state,
        threshold_ms=threshold_ms,
        summary=f"p95 {fmt_ms(s.p95_ms)}" if s.p95_ms is not None else ("no requests" if not s.count else "n/a"),
        avg=_latency_bar("avg", s.avg_ms, threshold_ms),
        p95=p95,
        success=_ratio_bar("success", s.success_rate, success_min),
        uptime=_ratio_bar("uptime", None if s.uptime_pct is None else s.uptime_pct / 100.0, success_min),
        vram=vram,
        requests_text=f"{s.count} req, {s.rpm:.1f}/min",
        queue_text=queue,
        processing_text=proc,
        sparkline=sparkline(spark_values),
        errors=errors,
        last_error_text=last_err,
        errors_text=errors_text(errors, len(s.error_counts)),
    )


def errors_text(errors: tuple[tuple[str, int], ...], n_types: int | None = None) -> str:
    """The errors line of a service: "no errors", or the most frequent
    types with their counts and how many more types there are."""
    if not errors:
        return "no errors"
    shown = errors[:2]
    more = (n_types if n_types is not None else len(errors)) - len(shown)
    text = ", ".join(f"{etype} ×{n}" for etype, n in shown)
    return text + (f" (+{more} type{'s' if more > 1 else ''})" if more > 0 else "")


def build_backend_row(
    cfg: Any,
    status: Any | None,
    stats: Any | None,
    now: float,
    reason: str = "",
    check: tuple[Any, float] | None = None,
    check_running: bool = False,
    action: tuple[str, str | None, bool, str, float] | None = None,
    action_running: str = "",
) -> BackendRow:
    """``cfg``: a BackendConfig; ``status``: its BackendStatus (or None when
    no collector runs); ``check``: (BackendStatus, epoch) of the last
    "Test connection"; ``action``: (action, target, ok, message, epoch) of
    the last action sent to it, ``action_running`` the label of the one
    being sent."""
    state = service_state(stats, status, 0.0) if cfg.enabled else "disabled"
    if state == "degraded":  # the connection row shows reachability only
        state = "up"
    if reason and state in ("unknown", "blocked"):
        state = "blocked"
    lat = getattr(status, "last_latency_ms", None)
    if lat is None and stats is not None:
        lat = stats.health_latency_ms
    err = getattr(status, "last_error", None) or ""
    err_age = ""
    if stats is not None and stats.last_error_at:
        err = err or (stats.last_error or "")
        err_age = fmt_age(now - stats.last_error_at)
    cause = (getattr(status, "cause", None) or "") if state != "up" else ""
    hint = (getattr(status, "hint", None) or "") if cause else ""
    if cause and err:
        err = f"{cause}: {err}"
    check_text = ""
    if check is not None:
        cs, at = check
        lat_c = getattr(cs, "last_latency_ms", None)
        bits = [cs.state] + ([fmt_ms(lat_c)] if lat_c is not None else [])
        check_cause = getattr(cs, "cause", None)
        if check_cause and cs.state != "up":
            bits.append(check_cause)
            hint = hint or (getattr(cs, "hint", None) or "")
        elif getattr(cs, "last_error", None):
            bits.append(cs.last_error)
        check_text = f"{', '.join(bits)} ({fmt_age(now - at)})"
    return BackendRow(
        name=cfg.name,
        kind=cfg.kind,
        url=cfg.url,
        state=state,
        reason=reason,
        latency_text=fmt_ms(lat),
        error_text=err,
        error_age=err_age,
        version=getattr(status, "version", None) or "",
        check_text=check_text,
        check_running=check_running,
        cause=cause,
        hint=hint,
        models=tuple(getattr(status, "models", None) or ()),
        action_text=action_text(cfg.kind, action, now),
        action_ok=action is None or action[2],
        action_running=action_running,
    )


# ---- optional engine parts (LLM usage, alerts) -------------------------------------


def build_llm(llm: Any, window: str, why_not: str = "") -> LlmView:
    """Per-model usage from the engine's LLM tracker (``monitor.llm``, an
    ``llm.LlmTracker``: ``stats(window, by="model")`` and
    ``active_models(window)``); "not available" until the engine has one."""
    if llm is None:
        return LlmView(False, "LLM tracking not available" + (f": {why_not}" if why_not and "not in this" not in why_not else ""))
    try:
        stats = llm.stats(window, by="model")
        active = llm.active_models(window) if hasattr(llm, "active_models") else []
    except Exception as e:  # the tracker's own error, shown as is
        return LlmView(False, f"LLM tracking: {type(e).__name__}: {e}")
    rows = []
    for m in stats:
        rows.append(
            LlmModelRow(
                model=f"{m.provider}/{m.model}" if m.model else m.provider,
                requests=f"{m.requests}" + (f" ({m.errors} err)" if m.errors else ""),
                tokens=f"{m.input_uncached + m.cache_read + m.cache_write:,} in / {m.output:,} out",
                latency=fmt_ms(m.latency_p95_ms),
                ttft=fmt_ms(m.ttft_p95_ms),
                cost="n/a" if m.cost_usd is None else f"${m.cost_usd:,.4f}",
                share=m.share_of_requests or 0.0,
            )
        )
    costs = [m.cost_usd for m in stats]
    total_cost = "n/a" if any(c is None for c in costs) else f"${sum(c or 0.0 for c in costs):,.4f}"
    totals = (
        ("active models", str(len(active))),
        ("requests", str(sum(m.requests for m in stats))),
        ("tokens", f"{sum(m.total_tokens for m in stats):,}"),
        ("cost", total_cost),
    )
    return LlmView(True, "" if rows else "No LLM requests in this range", tuple(rows), totals)


def build_alerts(
    alerts: Any,
    now: float,
    fmt_value: Callable[[str, float | None], str] | None = None,
    why_not: str = "",
    notify: Any = None,
) -> AlertsView:
    """Pending, firing and recovering alerts of an ``alerts.AlertManager``
    (``states()``: rule, target, state, since, value, threshold,
    suppressed)."""
    if alerts is None:
        return AlertsView(False, f"Alerts not available: {why_not}" if why_not else "Alerts not available in this engine build")
    try:
        states = alerts.states()
        rules = {r.name: r for r in alerts.rules}
    except Exception as e:
        return AlertsView(False, f"Alerts: {type(e).__name__}: {e}")
    rows = []
    for a in states:
        rule = rules.get(a.rule)
        metric = getattr(rule, "metric", "")
        fv = fmt_value or (lambda _m, v: "n/a" if v is None else f"{v:.4g}")
        detail = f"{metric} {fv(metric, a.value)} (limit {fv(metric, a.threshold)})"
        if a.suppressed:
            detail += f", {a.suppressed}"
        snoozed = rule is not None and rule.snooze_until is not None and rule.snooze_until > now
        rows.append(
            AlertRow(
                name=f"{a.target} · {a.rule.removeprefix('blender:')}",
                state=a.state,
                age=fmt_age(now - a.since),
                detail=detail,
                rule=a.rule,
                snoozed=snoozed,
            )
        )
    snoozed = tuple(
        (r.name, fmt_duration(r.snooze_until - now)) for r in rules.values() if r.snooze_until is not None and r.snooze_until > now
    )
    lines = tuple(notify_line(st) for st in (notify or {}).values())
    if rows:
        return AlertsView(True, "", tuple(rows), snoozed, lines)
    return AlertsView(True, f"No pending or firing alerts ({len(rules)} rules)" if rules else "No alert rules", (), snoozed, lines)
