"""Alert rules and the alert state machine, driven by a manual clock.

Every test records values into a real ``Monitor(manual_clock=True)``,
moves time with ``advance`` and calls ``AlertManager.evaluate()``; the
expected event lists are exact.  ``pytest -s`` prints the scripted
flapping timeline.
"""

from __future__ import annotations

import time

import logging
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

import movie_director_metrics as mdm
from movie_director_metrics import ConfigError, Monitor, ServiceStats
from movie_director_metrics.alerts import (
    DERIVED_METRICS,
    SERVICE_METRICS,
    AlertEvent,
    AlertManager,
    AlertRule,
    parse_rules,
)

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
DAY0 = T0 - T0 % 86_400  # midnight UTC of that day


@pytest.fixture
def mon() -> Monitor:
    return Monitor(manual_clock=True, start_time=T0)


def temp_rule(**kw: Any) -> AlertRule:
    """A rule on the latest GPU temperature: each reading is exactly the value set."""
    args: dict[str, Any] = dict(name="gpu-hot", target="comfyui", metric="gauge:gpu_temp_c", comparator=">",
                                threshold=80, recovery_threshold=70, window="1m")
    args.update(kw)
    return AlertRule(**args)


def drive(mon: Monitor, am: AlertManager, values: Iterable[float | None], step_s: float = 10,
          service: str = "comfyui") -> list[AlertEvent]:
    """Sets the temperature (None: sets nothing), evaluates, then advances ``step_s``."""
    svc = mon.service(service)
    out: list[AlertEvent] = []
    for v in values:
        if v is not None:
            svc.set_resource(gpu_temp_c=v)
        out.extend(am.evaluate())
        mon.advance(step_s)
    return out


def timeline(events: Iterable[AlertEvent]) -> list[tuple[int, str, str]]:
    return [(round(e.at - T0), e.from_state, e.to_state + (" (repeat)" if e.kind == "repeat" else ""))
            for e in events]


# ---- the state machine -----------------------------------------------------

#: One reading every 10 s; the comments say what each one is there to show.
FLAPPING = [
    60,                  # t=0    healthy
    85, 60,              # t=10   a blip: pending, then back to normal before for_s
    85, 90, 85, 90,      # t=30   bad for 30 s: pending at 30, firing at 60
    75, 78,              # t=70   inside the 70..80 band: still firing
    85, 85, 85, 85,      # t=90   still bad: a repeat at 120 (repeat_s=60 after firing at 60)
    65,                  # t=130  recovered: recovering
    75,                  # t=140  band: still recovering
    85,                  # t=150  bad again: firing (no new repeat clock)
    60, 75, 72,          # t=160  recovering; band at 170 and 180 holds it although keep_firing_for_s passed
    60,                  # t=190  recovered after 30 s >= 20 s: normal; cooldown until 250
    90, 90, 90, 90, 90,  # t=200  pending at 200; for_s passed at 230 but the cooldown holds it
    90, 90,              # t=250  firing at 250, the cooldown's end
]
FLAPPING_TIMELINE = [
    (10, "normal", "pending"),
    (20, "pending", "normal"),
    (30, "normal", "pending"),
    (60, "pending", "firing"),
    (120, "firing", "firing (repeat)"),
    (130, "firing", "recovering"),
    (150, "recovering", "firing"),
    (160, "firing", "recovering"),
    (190, "recovering", "normal"),
    (200, "normal", "pending"),
    (250, "pending", "firing"),
]


def test_scripted_flapping_service_gives_the_exact_timeline(mon: Monitor) -> None:
    rule = temp_rule(for_s=30, keep_firing_for_s=20, repeat_s=60, cooldown_s=60)
    am = AlertManager(mon, [rule])
    events = drive(mon, am, FLAPPING)
    print("\nflapping timeline: gauge:gpu_temp_c > 80 (recovery 70), for_s=30, keep_firing_for_s=20, "
          "repeat_s=60, cooldown_s=60, one reading every 10 s")
    print(f"{'t':>4}  {'value':>5}  {'transition':<28} message")
    readings = dict(zip(range(0, 10 * len(FLAPPING), 10), FLAPPING))
    for (t, frm, to), e in zip(timeline(events), events):
        print(f"{t:4d}  {readings[t]:5}  {frm + ' -> ' + to:<28} {e.message}")
    assert timeline(events) == FLAPPING_TIMELINE
    assert [s.state for s in am.states()] == ["firing"]
    assert am.events() == events


def test_flapping_faster_than_for_s_never_fires(mon: Monitor) -> None:
    am = AlertManager(mon, [temp_rule(for_s=30)])
    # bad for 20 s, good for 10 s, for 10 minutes: pending every time, never firing
    events = drive(mon, am, [90, 90, 60] * 20)
    assert timeline(events) == [(t, f, to) for k in range(20)
                                for t, f, to in ((30 * k, "normal", "pending"), (30 * k + 20, "pending", "normal"))]
    assert am.firing() == []


def test_noise_inside_the_band_neither_resolves_nor_refires(mon: Monitor) -> None:
    am = AlertManager(mon, [temp_rule(keep_firing_for_s=10)])
    band = [71, 79, 75, 70.5, 79.9] * 6
    events = drive(mon, am, [90, *band])
    assert timeline(events) == [(0, "normal", "firing")]          # for_s=0: at once
    events = drive(mon, am, [70, *band])                           # at t=310: recovered
    assert timeline(events) == [(310, "firing", "recovering")]     # band: no resolve, no re-fire
    assert [s.state for s in am.states()] == ["recovering"]
    events = drive(mon, am, [69])
    assert timeline(events) == [(620, "recovering", "normal")]


def test_recovery_equal_to_the_recovery_threshold_counts_as_recovered(mon: Monitor) -> None:
    # ">" is bad above 80; recovered means "not > 70", so exactly 70 recovers, 70.001 does not
    am = AlertManager(mon, [temp_rule()])
    assert timeline(drive(mon, am, [81, 70.001, 70])) == [(0, "normal", "firing"), (20, "firing", "normal")]


def test_keep_firing_for_s_holds_firing_after_recovery(mon: Monitor) -> None:
    am = AlertManager(mon, [temp_rule(keep_firing_for_s=45)])
    events = drive(mon, am, [90, 60, 60, 60, 60, 60, 60, 60])
    # recovering at 10; 40 - 10 = 30 < 45; 50 - 10 = 40 < 45; 60 - 10 = 50 >= 45
    assert timeline(events) == [(0, "normal", "firing"), (10, "firing", "recovering"), (60, "recovering", "normal")]
    assert am.firing() == [] and am.states() == []


def test_firing_includes_recovering(mon: Monitor) -> None:
    am = AlertManager(mon, [temp_rule(keep_firing_for_s=60)])
    drive(mon, am, [90, 60])
    [st] = am.firing()
    assert (st.rule, st.target, st.state, st.since, st.value) == ("gpu-hot", "comfyui", "recovering", T0 + 10, 60.0)
    assert st.threshold == 80 and st.severity == "warning" and st.suppressed is None
    assert st.message == am.events()[-1].message and st.message.startswith("firing -> recovering: ")


def test_repeat_every_repeat_s_while_firing_and_none_with_zero(mon: Monitor) -> None:
    am = AlertManager(mon, [temp_rule(name="r60", repeat_s=60), temp_rule(name="r0", repeat_s=0)])
    events = drive(mon, am, [90] * 31)  # 0..300 s
    r60 = [(t, to) for (t, _, to), e in zip(timeline(events), events) if e.rule == "r60"]
    assert r60 == [(0, "firing")] + [(t, "firing (repeat)") for t in (60, 120, 180, 240, 300)]
    assert [e.kind for e in events if e.rule == "r0"] == ["transition"]
    assert all(e.from_state == e.to_state == "firing" for e in events if e.kind == "repeat")


def test_repeat_interval_counts_from_the_last_notification_not_the_step(mon: Monitor) -> None:
    am = AlertManager(mon, [temp_rule(repeat_s=25)])
    events = drive(mon, am, [90] * 8)  # evaluations every 10 s: due at 25 -> sent at 30, then 60
    assert timeline(events) == [(0, "normal", "firing"), (30, "firing", "firing (repeat)"),
                                (60, "firing", "firing (repeat)")]


def test_cooldown_delays_firing_again_after_a_resolve(mon: Monitor) -> None:
    am = AlertManager(mon, [temp_rule(cooldown_s=100)])
    events = drive(mon, am, [90, 60] + [90] * 12)
    # resolved at 10 -> no firing before 110; for_s=0 so it waits in pending
    assert timeline(events) == [(0, "normal", "firing"), (10, "firing", "normal"),
                                (20, "normal", "pending"), (110, "pending", "firing")]
    assert "cooling down" in events[2].message


# ---- suppression: maintenance and snooze ------------------------------------


def test_maintenance_span_blocks_pending_and_firing_then_for_s_starts_after_it(mon: Monitor) -> None:
    rule = temp_rule(for_s=20, maintenance=[(T0 + 30, T0 + 90)])
    am = AlertManager(mon, [rule])
    events = drive(mon, am, [60, 60, 90, 90, 90, 90, 90, 90, 90, 90, 90, 90, 90])
    # pending at 20; the window [30, 90) sends it back to normal and keeps it there;
    # at 90 pending again, firing 20 s later
    assert timeline(events) == [(20, "normal", "pending"), (30, "pending", "normal"),
                                (90, "normal", "pending"), (110, "pending", "firing")]
    assert "maintenance 2023-11-14 22:13:50Z to 2023-11-14 22:14:50Z" in events[1].message


def test_maintenance_does_not_end_a_firing_alert_but_mutes_its_repeats(mon: Monitor) -> None:
    am = AlertManager(mon, [temp_rule(repeat_s=20, maintenance=[[T0 + 30, T0 + 75]])])
    events = drive(mon, am, [90] * 10 + [60])
    # repeats due at 20 (sent), 40 and 60 are muted, the overdue one goes out at 80
    assert timeline(events) == [(0, "normal", "firing"), (20, "firing", "firing (repeat)"),
                                (80, "firing", "firing (repeat)"), (100, "firing", "normal")]
    assert am.rules[0].maintenance == ((T0 + 30, T0 + 75),)  # lists normalized to tuples


def test_daily_maintenance_wraps_midnight_and_is_utc() -> None:
    rule = temp_rule(maintenance=["23:30-00:30", "12:00-12:15"])

    def at(hh: int, mm: int) -> float:
        return DAY0 + 86_400 * 3 + hh * 3600 + mm * 60

    assert rule.suppression(at(23, 29)) is None
    assert rule.suppression(at(23, 30)) == "maintenance 23:30-00:30 UTC"
    assert rule.suppression(at(0, 29)) == "maintenance 23:30-00:30 UTC"
    assert rule.suppression(at(0, 30)) is None                      # half-open
    assert rule.suppression(at(12, 14)) == "maintenance 12:00-12:15 UTC"
    assert rule.suppression(at(12, 15)) is None
    assert temp_rule(maintenance=["22:00-24:00"]).suppression(at(23, 59)) is not None


def test_daily_maintenance_in_the_state_machine(mon: Monitor) -> None:
    # T0 is 22:13:20 UTC: a daily window 22:14-22:16 covers t = 40 .. 159
    am = AlertManager(mon, [temp_rule(maintenance=["22:14-22:16"])])
    events = drive(mon, am, [60, 60, 60, 60] + [90] * 14)
    assert timeline(events) == [(160, "normal", "firing")]
    [state] = am.states()
    assert state.suppressed is None


def test_snooze_blocks_new_alerts_and_manager_snooze_keeps_states(mon: Monitor) -> None:
    am = AlertManager(mon, [temp_rule(snooze_until=T0 + 50)])
    events = drive(mon, am, [90] * 7)
    assert timeline(events) == [(50, "normal", "firing")]
    am.snooze("gpu-hot", T0 + 1000)                 # snoozing a firing alert does not end it
    assert [s.state for s in am.states()] == ["firing"]
    events = drive(mon, am, [60, 90, 90])
    assert timeline(events) == [(70, "firing", "normal")]  # and bad values do not start a new one
    assert am.states() == []
    am.snooze("gpu-hot", None)
    assert timeline(drive(mon, am, [90])) == [(100, "normal", "firing")]
    with pytest.raises(KeyError):
        am.snooze("nope", None)


def test_snoozed_state_reports_why(mon: Monitor) -> None:
    am = AlertManager(mon, [temp_rule(for_s=60)])
    drive(mon, am, [90])
    am.snooze("gpu-hot", T0 + 3600)
    events = drive(mon, am, [90])
    assert timeline(events) == [(10, "pending", "normal")]
    assert "snoozed until 2023-11-14 23:13:20Z" in events[0].message


def test_snooze_until_accepts_a_toml_datetime() -> None:
    [rule] = parse_rules('[[rule]]\nname = "a"\ntarget = "x"\nmetric = "p95_ms"\ncomparator = ">"\n'
                         'threshold = 1\nsnooze_until = 2023-11-14T22:13:20Z\n')
    assert rule.snooze_until == T0


# ---- targets and metrics -----------------------------------------------------


def test_star_fans_out_per_service_including_ones_created_later(mon: Monitor) -> None:
    for name in ("a1111", "comfyui", "ollama"):
        mon.service(name).set_resource(gpu_temp_c=50)
    mon.service("comfyui").set_resource(gpu_temp_c=95)
    am = AlertManager(mon, [temp_rule(target="*")])
    assert timeline(am.evaluate()) == [(0, "normal", "firing")]
    assert [(s.target, s.state) for s in am.states()] == [("comfyui", "firing")]
    mon.advance(10)
    mon.service("forge").set_resource(gpu_temp_c=99)
    mon.service("a1111").set_resource(gpu_temp_c=90)
    events = am.evaluate()
    assert sorted(e.target for e in events) == ["a1111", "forge"]
    assert [(s.target, s.state) for s in am.states()] == [("a1111", "firing"), ("comfyui", "firing"),
                                                          ("forge", "firing")]


def test_derived_metrics(mon: Monitor) -> None:
    svc = mon.service("comfyui")
    svc.set_resource(vram_used_bytes=7.2e9, vram_total_bytes=8e9, gpu_util_pct=97)
    svc.set_queue(running=1, pending=4)
    for k in range(20):
        svc.record(100.0 + k, ok=k % 4 != 0)          # 5 of 20 fail: error_rate 0.25
    rules = [
        AlertRule("vram", "comfyui", "vram_used_pct", ">=", 90, window="1m"),
        AlertRule("queue", "comfyui", "queue_depth", ">", 4, window="1m"),
        AlertRule("errors", "comfyui", "error_rate", ">", 0.2, window="1m"),
        AlertRule("util", "comfyui", "gauge:gpu_util_pct", ">", 95, window="1m"),
        AlertRule("slow", "comfyui", "p95_ms", ">", 115, window="1m"),
        AlertRule("quiet", "comfyui", "count", "<", 10, window="1m"),
    ]
    am = AlertManager(mon, rules)
    events = am.evaluate()
    got = {e.rule: e.value for e in events}
    assert set(got) == {"vram", "queue", "errors", "util", "slow"}
    assert got["vram"] == pytest.approx(90.0)
    assert got["queue"] == 5.0
    assert got["errors"] == pytest.approx(0.25)
    assert got["util"] == 97.0
    assert got["slow"] == pytest.approx(mon.stats("comfyui", "1m").p95_ms)


def test_up_reads_as_one_or_zero(mon: Monitor) -> None:
    mon.service("comfyui").health(False)
    am = AlertManager(mon, [AlertRule("down", "comfyui", "up", "<", 1, window="1m")])
    [e] = am.evaluate()
    assert e.value == 0.0 and e.to_state == "firing"


def test_every_service_metric_is_a_numeric_field() -> None:
    mon = Monitor(manual_clock=True, start_time=T0)
    svc = mon.service("x")
    svc.record(10.0)
    svc.health(True, 3.0)
    svc.set_queue(1, 1)
    svc.record_processing(5.0)
    st = mon.stats("x", "1m")
    fields = st.as_dict()
    for metric in SERVICE_METRICS:
        assert isinstance(fields[metric], (int, float)), metric
    assert not set(DERIVED_METRICS) & set(fields)


def test_missing_data_keeps_every_state(mon: Monitor) -> None:
    am = AlertManager(mon, [temp_rule(name="pend", for_s=40), temp_rule(name="fire", repeat_s=30)])
    events = drive(mon, am, [90])
    assert sorted(timeline(events)) == [(0, "normal", "firing"), (0, "normal", "pending")]
    mon.advance(70)                                     # unevaluated: the 1m window empties
    assert mon.stats("comfyui", "1m").resources == {}
    assert drive(mon, am, [None] * 12) == []            # every value None for 2 minutes: nothing moves
    assert sorted((s.rule, s.state, s.since) for s in am.states()) == [("fire", "firing", T0),
                                                                       ("pend", "pending", T0)]
    # data comes back still bad: the pending one has waited long enough, the repeat is overdue
    events = drive(mon, am, [90])
    assert sorted((e.rule, e.from_state, e.to_state, e.kind) for e in events) == [
        ("fire", "firing", "firing", "repeat"), ("pend", "pending", "firing", "transition")]


def test_unknown_service_or_no_data_creates_no_state(mon: Monitor) -> None:
    mon.service("comfyui").record(10.0)              # a service, but no gauge
    am = AlertManager(mon, [temp_rule(), temp_rule(name="ghost", target="nobody")])
    assert am.evaluate() == [] and am.states() == []


def test_model_targets_read_the_source(mon: Monitor, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[tuple[str, str, str | float]] = []
    values = {"gpt-4o": 2500.0}

    def llm(name: str, metric: str, window: str | float) -> float | None:
        calls.append((name, metric, window))
        if name == "broken":
            raise RuntimeError("tracker offline")
        return values.get(name)

    rules = [AlertRule("ttft", "model:gpt-4o", "ttft_p95_ms", ">", 2000, window="15m"),
             AlertRule("other", "model:llama3", "ttft_p95_ms", ">", 2000),
             AlertRule("broken", "model:broken", "cost_usd", ">", 1)]
    am = AlertManager(mon, rules, sources={"model": llm})
    with caplog.at_level(logging.ERROR, logger="movie_director_metrics.alerts"):
        events = am.evaluate()
        am.evaluate()
    assert [(e.target, e.to_state) for e in events] == [("model:gpt-4o", "firing")]
    assert calls[:3] == [("gpt-4o", "ttft_p95_ms", "15m"), ("llama3", "ttft_p95_ms", "5m"),
                         ("broken", "cost_usd", "5m")]
    assert len([r for r in caplog.records if "tracker offline" in (r.exc_text or "")]) == 1  # logged once


def test_one_snapshot_per_distinct_window(mon: Monitor) -> None:
    calls: list[str | float | None] = []

    class Counting:
        tiers = mon.tiers

        def snapshot(self, window: str | float | None = None) -> dict[str, ServiceStats]:
            calls.append(window)
            return mon.snapshot(window)

        def now(self) -> float:
            return mon.now()

    mon.service("comfyui").set_resource(gpu_temp_c=50)
    rules = [temp_rule(name=f"r{k}", window=w) for k, w in enumerate(["1m", "60s", "5m", "300", "5m", "1h"])]
    am = AlertManager(Counting(), rules)
    am.evaluate()
    assert sorted(calls) == [60, 300, 3600]  # type: ignore[type-var]


# ---- callbacks and threads ---------------------------------------------------


def test_callbacks_get_every_event_in_order_and_a_raising_one_breaks_nothing(
        mon: Monitor, caplog: pytest.LogCaptureFixture) -> None:
    am = AlertManager(mon, [temp_rule(for_s=30, keep_firing_for_s=20, repeat_s=60, cooldown_s=60)])
    first: list[AlertEvent] = []
    last: list[AlertEvent] = []
    am.on_event(first.append)

    @am.on_event
    def explode(event: AlertEvent) -> None:
        raise RuntimeError(f"notifier down at {event.at}")

    am.on_event(last.append)
    with caplog.at_level(logging.ERROR, logger="movie_director_metrics.alerts"):
        events = drive(mon, am, FLAPPING)
    assert first == events == last
    assert timeline(first) == FLAPPING_TIMELINE
    failures = [r for r in caplog.records if "alert callback" in r.getMessage()]
    assert len(failures) == len(FLAPPING_TIMELINE)


def test_callbacks_may_read_and_evaluate_again(mon: Monitor) -> None:
    am = AlertManager(mon, [temp_rule()])
    seen: list[tuple[str, int]] = []

    def reentrant(event: AlertEvent) -> None:
        seen.append((event.to_state, len(am.states())))
        am.evaluate()  # no deadlock; nothing new at the same reading

    am.on_event(reentrant)
    drive(mon, am, [90, 60])
    assert seen == [("firing", 1), ("normal", 0)]


def test_concurrent_evaluations_fire_each_alert_once_and_deliver_in_log_order(mon: Monitor) -> None:
    names = [f"svc-{k:02d}" for k in range(16)]
    for n in names:
        mon.service(n).set_resource(gpu_temp_c=90)
    am = AlertManager(mon, [temp_rule(name=f"r{k}", target="*") for k in range(20)])
    delivered: list[AlertEvent] = []
    am.on_event(delivered.append)          # list.append: safe, and callbacks never overlap
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for _ in range(50):
            am.evaluate()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(delivered) == 20 * 16                               # each (rule, service) fired exactly once
    assert len({(e.rule, e.target) for e in delivered}) == 20 * 16
    assert delivered == am.events()                               # delivered in the log's order


def test_start_and_stop_run_evaluate_on_a_daemon_thread(mon: Monitor) -> None:
    am = AlertManager(mon, [temp_rule()])
    got = threading.Event()
    am.on_event(lambda e: got.set())
    mon.service("comfyui").set_resource(gpu_temp_c=99)
    am.start(interval_s=0.01)
    am.start(interval_s=0.01)  # already running: nothing happens
    try:
        assert got.wait(5.0)
        assert am.running
    finally:
        am.stop()
    assert not am.running
    with pytest.raises(ConfigError, match="interval_s"):
        am.start(0)


# ---- rules: construction, TOML, errors ---------------------------------------


RULES_TOML = """
[[rule]]
name = "comfyui-slow"
target = "comfyui"
metric = "p95_ms"
comparator = ">"
threshold = 2000
recovery_threshold = 1500
window = "5m"
for_s = 60
keep_firing_for_s = 120
repeat_s = 900
cooldown_s = 300
severity = "critical"
maintenance = ["02:00-02:30", [1767225600, 1767229200]]

[[rule]]
name = "any-vram"
target = "*"
metric = "vram_used_pct"
comparator = ">="
threshold = 95
"""


def test_load_rules_from_text_and_file(mon: Monitor, tmp_path: Path) -> None:
    am = AlertManager(mon)
    rules = am.load_rules(RULES_TOML)
    assert [r.name for r in am.rules] == ["comfyui-slow", "any-vram"]
    slow = rules[0]
    assert (slow.threshold, slow.recovery_threshold, slow.window_s, slow.severity) == (2000.0, 1500.0, 300, "critical")
    assert slow.maintenance == ("02:00-02:30", (1767225600.0, 1767229200.0))
    assert rules[1].recovery_threshold == 95.0 and rules[1].window == "5m" and rules[1].for_s == 0
    path = tmp_path / "alerts.toml"
    path.write_text(RULES_TOML)
    assert parse_rules(path) == rules == parse_rules(str(path))
    assert all(AlertRule(**r.as_table()) == r for r in rules)


def test_load_rules_replace_keeps_unchanged_rules_and_closes_the_rest(mon: Monitor) -> None:
    mon.service("comfyui").set_resource(gpu_temp_c=99)
    am = AlertManager(mon)
    base = '[[rule]]\nname = "{n}"\ntarget = "comfyui"\nmetric = "gauge:gpu_temp_c"\ncomparator = ">"\n' \
           'threshold = {t}\nwindow = "1m"\n'
    am.load_rules(base.format(n="keep", t=80) + base.format(n="change", t=80) + base.format(n="drop", t=80))
    assert len(am.evaluate()) == 3
    closed: list[AlertEvent] = []
    am.on_event(closed.append)
    am.load_rules(base.format(n="keep", t=80) + base.format(n="change", t=90), replace=True)
    assert sorted((e.rule, e.to_state, e.message.rsplit(": ", 1)[1]) for e in closed) == [
        ("change", "normal", "rule changed"), ("drop", "normal", "rule removed")]
    assert [(s.rule, s.state) for s in am.states()] == [("keep", "firing")]
    assert [e.rule for e in am.evaluate()] == ["change"]


def test_remove_rule_closes_its_alerts(mon: Monitor) -> None:
    am = AlertManager(mon, [temp_rule(target="*")])
    mon.service("comfyui").set_resource(gpu_temp_c=99)
    am.evaluate()
    got: list[AlertEvent] = []
    am.on_event(got.append)
    assert am.remove_rule("gpu-hot") and not am.remove_rule("gpu-hot")
    assert [(e.from_state, e.to_state, e.target) for e in got] == [("firing", "normal", "comfyui")]
    assert am.states() == [] and am.rules == ()


@pytest.mark.parametrize("change, fragment", [
    (dict(comparator="=>"), "alert rule 'gpu-hot': comparator = '=>': expected one of '>', '>=', '<', '<='"),
    (dict(comparator=">", recovery_threshold=85),
     "alert rule 'gpu-hot': recovery_threshold = 85: expected <= threshold 80 (the healthy side of >)"),
    (dict(comparator="<", threshold=10, recovery_threshold=5),
     "alert rule 'gpu-hot': recovery_threshold = 5: expected >= threshold 10 (the healthy side of <)"),
    (dict(window="5 minutes"), "alert rule 'gpu-hot': window = '5 minutes': expected a window such as"),
    (dict(window=0), "window = 0: expected a window"),
    (dict(metric="p96_ms"), "alert rule 'gpu-hot': metric = 'p96_ms': expected one of count, errors"),
    (dict(metric="gauge:fan_rpm"), "metric = 'gauge:fan_rpm': expected gauge:<name> with a name from vram_used_bytes"),
    (dict(threshold=float("nan")), "threshold = nan: expected a finite number"),
    (dict(threshold=True), "threshold = True: expected a finite number"),
    (dict(for_s=-1), "for_s = -1: expected seconds from 0 to 2592000"),
    (dict(repeat_s=10**9), "repeat_s = 1000000000: expected seconds from 0 to 2592000"),
    (dict(severity="page"), "severity = 'page': expected one of info, warning, critical"),
    (dict(target=""), "target = '': expected a service name"),
    (dict(target="model:*"), "target = 'model:*': expected \"model:<name>\" with a name"),
    (dict(maintenance=["25:00-26:00"]), "maintenance[0] = '25:00-26:00': expected times from 00:00 to 24:00"),
    (dict(maintenance=["2-3"]), "maintenance[0] = '2-3': expected \"HH:MM-HH:MM\" (UTC)"),
    (dict(maintenance=[(T0 + 10, T0)]), "maintenance[0] = (1700000010.0, 1700000000.0): expected [start_epoch_s, "
                                        "end_epoch_s] with start < end"),
    (dict(maintenance="02:00-03:00"), "maintenance = '02:00-03:00': expected a list"),
    (dict(maintenance=["03:00-03:00"]), "start and end are the same time of day"),
    (dict(name=""), "alert rule '': name: expected 1 to 128 printable characters"),
])
def test_invalid_rules_name_the_rule_field_and_expectation(change: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as ei:
        temp_rule(**change)
    assert fragment in str(ei.value)
    assert isinstance(ei.value, ValueError)


def rule_text(**fields: str) -> str:
    base = {"name": '"slow"', "target": '"comfyui"', "metric": '"p95_ms"', "comparator": '">"', "threshold": "500"}
    base.update(fields)
    return "[[rule]]\n" + "".join(f"{k} = {v}\n" for k, v in base.items() if v)


@pytest.mark.parametrize("text, fragment", [
    (rule_text(treshold="400"), "rule[0] ('slow'): unknown key 'treshold'; expected one of name, target"),
    (rule_text(comparator='"=="'), "alert rule 'slow': comparator = '==': expected one of"),
    (rule_text(window='"5x"'), "alert rule 'slow': window = '5x': expected a window"),
    (rule_text(recovery_threshold="600"), "alert rule 'slow': recovery_threshold = 600: expected <= threshold 500"),
    (rule_text(threshold=""), "rule[0] ('slow'): threshold is missing"),
    (rule_text(threshold='"500"'), "alert rule 'slow': threshold = '500': expected a finite number"),
    (rule_text() + rule_text(), "rule[1] ('slow'): name 'slow' is used twice"),
    (rule_text() + "[alerts]\nx = 1\n", "unknown top-level key 'alerts': expected [[rule]] tables"),
    ("[[rule]\nname = 1\n", "not valid TOML"),
])
def test_invalid_toml_rules_name_the_file_rule_and_field(tmp_path: Path, text: str, fragment: str,
                                                         mon: Monitor) -> None:
    path = tmp_path / "alerts.toml"
    path.write_text(text)
    am = AlertManager(mon)
    with pytest.raises(ConfigError) as ei:
        am.load_rules(path)
    assert str(ei.value).startswith(f"{path}: ")
    assert fragment in str(ei.value)
    with pytest.raises(ConfigError, match="^<alert rules>: "):
        am.load_rules(text)
    assert am.rules == ()  # all or nothing


def test_rules_the_manager_cannot_serve(mon: Monitor, tmp_path: Path) -> None:
    am = AlertManager(mon)
    with pytest.raises(ConfigError, match=r"alert rule 'gpu-hot': window = '7d': expected at most 86400 s"):
        am.add_rule(temp_rule(window="7d"))
    with pytest.raises(ConfigError, match=r"target = 'model:gpt-4o': needs a 'model' source"):
        am.add_rule(temp_rule(target="model:gpt-4o", metric="ttft_p95_ms"))
    am.add_rule(temp_rule())
    with pytest.raises(ConfigError, match="name is already used"):
        am.add_rule(temp_rule())
    path = tmp_path / "long.toml"
    path.write_text(rule_text(window='"30d"'))
    with pytest.raises(ConfigError, match=f"^{path}: alert rule 'slow': window = '30d'"):
        am.load_rules(path)
    with pytest.raises(ConfigError, match="no such alert rules file"):
        am.load_rules(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match=r"sources\['llm'\]"):
        AlertManager(mon, sources={"llm": lambda n, m, w: None})
    with_storage_tiers = Monitor(manual_clock=True, start_time=T0, tiers=[(1, 300), (60, 1440), (3600, 720)])
    AlertManager(with_storage_tiers, [temp_rule(window="30d")])  # 30 days of hours: accepted


# ---- persistence -------------------------------------------------------------


def test_event_rows_restore_into_a_new_manager(mon: Monitor) -> None:
    rule = temp_rule(for_s=30, keep_firing_for_s=20, repeat_s=60, cooldown_s=60)
    am = AlertManager(mon, [rule])
    events = drive(mon, am, FLAPPING)
    rows = [e.as_row() for e in events]
    assert rows[3] == (T0 + 60, "comfyui", "gpu-hot", "pending", "firing", 90.0, rule.threshold, "warning",
                       "transition", events[3].message)
    assert events[3].message.startswith("pending -> firing: [warning] gpu-hot on comfyui: ")

    again = AlertManager(mon, [rule])
    assert again.restore_events(reversed(rows)) == len(rows)
    assert again.events() == events
    # the alert firing at the restart is not announced again; its repeat clock goes on from t=250
    assert [(s.state, s.since) for s in again.states()] == [("firing", T0 + 250)]
    later = drive(mon, again, [90] * 5)   # t = 270 .. 310
    assert timeline(later) == [(310, "firing", "firing (repeat)")]


def test_restore_rows_from_elsewhere_and_of_unknown_rules(mon: Monitor) -> None:
    am = AlertManager(mon, [temp_rule()])
    # Rows without a from-state, severity or kind (not written by us).
    kept = am.restore_events([
        (T0 + 1, "comfyui", "old-rule", None, "firing", 3.0, None, None, None, "hand-written"),
        (T0 + 2, "comfyui", "old-rule", None, "firing", 4.0, None, None, None, "hand-written"),
        (T0 + 3, "comfyui", "old-rule", None, "bogus", None, None, None, None, ""),
    ])
    assert kept == 2
    first, second = am.events()
    assert (first.from_state, first.kind, first.threshold, first.severity) == ("normal", "transition", None, "warning")
    assert (second.from_state, second.kind) == ("firing", "repeat")
    assert am.states() == []  # no such rule loaded: history only


def test_events_of_a_version_3_history_file_are_migrated_from_their_message(tmp_path: Path) -> None:
    """Files written before the event columns existed keep their events:
    the migration reads from-state, severity and kind out of the message,
    once, and the manager restores them from columns (no message parsing)."""
    import sqlite3

    from movie_director_metrics.storage import BLOB_FORMAT, MIGRATIONS

    db = tmp_path / "v3.sqlite3"
    conn = sqlite3.connect(db)
    for script in MIGRATIONS[:3]:
        conn.executescript(script)
    conn.execute("PRAGMA user_version = 3")
    conn.executemany("INSERT INTO meta VALUES (?, ?)", [("blob_format", BLOB_FORMAT), ("created_at", "0")])
    now = time.time()
    conn.executemany(
        "INSERT INTO alert_events (at_s, target, rule, state, value, message) VALUES (?, ?, ?, ?, ?, ?)",
        [
            (now - 30, "comfyui", "gpu-hot", "pending", 90.0, "normal -> pending: [critical] gpu-hot on comfyui: x"),
            (now - 20, "comfyui", "gpu-hot", "firing", 91.0, "pending -> firing: [critical] gpu-hot on comfyui: y"),
            (now - 10, "comfyui", "gpu-hot", "firing", 92.0, "firing -> firing (repeat): [critical] gpu-hot: z"),
        ],
    )
    conn.commit()
    conn.close()
    with Monitor(storage=db) as m:
        evs = m.alerts.events()
        assert [(e.from_state, e.to_state, e.severity, e.kind) for e in evs] == [
            ("normal", "pending", "critical", "transition"),
            ("pending", "firing", "critical", "transition"),
            ("firing", "firing", "critical", "repeat"),
        ]
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert c.execute("SELECT from_state, severity, kind FROM alert_events ORDER BY at_s").fetchall() == [
            ("normal", "critical", "transition"), ("pending", "critical", "transition"), ("firing", "critical", "repeat")
        ]


def test_events_since_is_exclusive_and_the_log_is_bounded(mon: Monitor) -> None:
    am = AlertManager(mon, [temp_rule()], max_events=3)
    drive(mon, am, [90, 60, 90, 60, 90])
    assert timeline(am.events()) == [(20, "normal", "firing"), (30, "firing", "normal"), (40, "normal", "firing")]
    assert timeline(am.events(since=T0 + 30)) == [(40, "normal", "firing")]
    with pytest.raises(ConfigError, match="max_events"):
        AlertManager(mon, max_events=0)


def test_rule_is_frozen_and_hashable() -> None:
    rule = temp_rule(maintenance=["02:00-03:00"])
    assert rule == temp_rule(maintenance=("02:00-03:00",)) and hash(rule) == hash(temp_rule(maintenance=["02:00-03:00"]))
    with pytest.raises(AttributeError):
        rule.threshold = 1  # type: ignore[misc]



def test_the_module_docstring_example_parses() -> None:
    from movie_director_metrics import alerts

    doc = alerts.__doc__ or ""
    example = doc.split("::\n", 1)[1].split("\nStates of each", 1)[0]
    [rule] = parse_rules(example)
    assert rule.name == "comfyui-slow" and rule.snooze_until == 1767230000.0


def test_events_export_to_csv_and_json(tmp_path: Path) -> None:
    import csv as _csv
    import json as _json

    with Monitor(manual_clock=True, start_time=1_700_000_000.0) as m:
        svc = m.service("s")
        m.alerts.add_rule(AlertRule(name="slow, \"really\"", target="s", metric="p95_ms", comparator=">",
                                    threshold=100.0, recovery_threshold=80.0))
        svc.record(500.0)
        m.alerts.evaluate()
        m.advance(400)
        svc.record(10.0)
        m.alerts.evaluate()
        evs = m.alerts.events()
        assert [(e.from_state, e.to_state) for e in evs] == [("normal", "firing"), ("firing", "normal")]
        out = m.alerts.export_events(tmp_path / "ev.csv")
        rows = list(_csv.DictReader(out.open(encoding="utf-8")))
        assert [(r["rule"], r["from_state"], r["to_state"]) for r in rows] == [
            ('slow, "really"', "normal", "firing"), ('slow, "really"', "firing", "normal")]
        assert rows[0]["at"] == "2023-11-14T22:13:20Z" and float(rows[0]["value"]) == pytest.approx(500, rel=0.01)
        js = _json.loads(m.alerts.export_events(tmp_path / "ev.json", "json", since=evs[0].at).read_text())
        assert [e["to_state"] for e in js["events"]] == ["normal"]
        with pytest.raises(mdm.InvalidValueError, match="format='xml'"):
            m.alerts.export_events(tmp_path / "ev.xml", "xml")  # type: ignore[arg-type]


def test_model_targets_read_the_monitors_llm_figures() -> None:
    with Monitor(manual_clock=True, start_time=1_700_000_000.0) as m:
        m.llm.record("openai", "gpt-4o", {"prompt_tokens": 10, "completion_tokens": 5}, latency_ms=900.0)
        m.alerts.add_rule(AlertRule(name="slow-model", target="model:gpt-4o", metric="latency_p95_ms",
                                    comparator=">", threshold=500.0, window="1h"))
        m.alerts.add_rule(AlertRule(name="absent", target="model:nope", metric="latency_p95_ms",
                                    comparator=">", threshold=500.0, window="1h"))
        m.advance(61)
        events = m.alerts.evaluate()
        assert [(e.rule, e.target, e.to_state) for e in events] == [("slow-model", "model:gpt-4o", "firing")]
        assert events[0].value == pytest.approx(900.0, rel=0.01)


# ---- LLM spend and tokens from TOML ----------------------------------------------------

LLM_RULES = """
[[rule]]
name = "openai-spend"
target = "provider:OpenAI"      # every OpenAI model together (the provider name as the tracker spells it)
metric = "cost_usd"
comparator = ">"
threshold = 0.36
window = "1h"

[[rule]]
name = "gpt-4o-input"
target = "model:gpt-4o"
metric = "input_tokens"         # input_uncached + cache_read + cache_write
comparator = ">="
threshold = 150000
window = "1h"

[[rule]]
name = "ollama-output"
target = "provider:ollama"
metric = "output"
comparator = ">"
threshold = 1000
window = "1h"
"""


def test_llm_spend_and_token_rules_from_toml_fire_on_recorded_usage() -> None:
    with Monitor(manual_clock=True, start_time=T0) as m:
        m.alerts.load_rules(LLM_RULES)
        usage = {"prompt_tokens": 100_000, "completion_tokens": 10_000}
        m.llm.record("openai", "gpt-4o", usage, latency_ms=900.0)
        m.llm.record("openai", "gpt-4o-mini", usage, latency_ms=400.0)
        m.llm.record("ollama", "llama3", {"prompt_eval_count": 10, "eval_count": 500}, latency_ms=300.0)
        m.advance(1)
        per_model = {s.model: s.cost_usd for s in m.llm.stats("1h")}
        # Neither model alone passes 0.36 USD; together they do (the shipped prices).
        assert per_model["gpt-4o"] < 0.36 and per_model["gpt-4o"] + per_model["gpt-4o-mini"] > 0.36  # type: ignore[operator]
        assert m.alerts.evaluate() == [e for e in m.alerts.events() if e.rule == "openai-spend"]
        [spend] = m.alerts.firing()
        assert (spend.rule, spend.target) == ("openai-spend", "provider:OpenAI")
        assert spend.value == pytest.approx(per_model["gpt-4o"] + per_model["gpt-4o-mini"])  # type: ignore[operator]
        m.llm.record("openai", "gpt-4o", {"prompt_tokens": 50_000, "completion_tokens": 0}, latency_ms=900.0)
        m.llm.record("ollama", "llama3", {"prompt_eval_count": 10, "eval_count": 600}, latency_ms=300.0)
        m.advance(1)
        events = m.alerts.evaluate()
        assert [(e.rule, e.to_state, e.value) for e in events] == [
            ("gpt-4o-input", "firing", 150_000.0), ("ollama-output", "firing", 1100.0)]
        m.advance(3601)  # the usage leaves the window: no data, so every alert stays as it was
        assert m.alerts.evaluate() == [] and len(m.alerts.firing()) == 3


def test_llm_targets_check_their_metric() -> None:
    with pytest.raises(ConfigError, match=r"metric = 'cost': expected one of requests, .*cost_usd.* \(an LLM figure of a provider\)"):
        AlertRule("x", "provider:openai", "cost", ">", 1)
    with pytest.raises(ConfigError, match="provider:<name>"):
        AlertRule("x", "", "cost_usd", ">", 1)
    AlertRule("x", "model:gpt-4o", "total_tokens", ">", 1)


def test_llm_metrics_are_the_numeric_llm_stats_fields_and_input_tokens() -> None:
    import dataclasses

    from movie_director_metrics.alerts import LLM_METRICS
    from movie_director_metrics.llm import LlmStats

    numeric = {f.name for f in dataclasses.fields(LlmStats)} - {"provider", "model", "service", "window_s"}
    assert set(LLM_METRICS) == numeric | {"input_tokens"}
