#!/usr/bin/env bash
# A picture of the real add-on in a real Blender GUI: dist/screenshot.png.
#
# Blender 4.3 GUI from the Debian trixie chroot on a host Xvfb with Mesa's
# software renderer (scripts/blender_chroot.sh builds it once and stages
# the add-on and the engine).
# Demo backends come from movie_director_metrics.simulator, plus a dead
# port and a remote URL (blocked: online access is off in a factory setup).
#
# The grab is `import -window root` (Blender's own screen.screenshot comes
# out black under Xvfb); the "Movie Director" tab and the closed panels
# are opened with xdotool clicks.  The driver also writes
# dist/screenshot.json: what the panels showed and whether the .blend
# became dirty while the timer ran (bpy.data.is_dirty works in a GUI).
#
# Needs root (debootstrap, chroot, mounts).  Not part of `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT_DIR=$PWD
W=1600
H=1000
OUT=${MDM_SHOT_OUT:-$ROOT_DIR/dist/screenshot.png}
PY=${PYTHON:-$ROOT_DIR/.venv/bin/python}

# shellcheck source=scripts/blender_chroot.sh
source scripts/blender_chroot.sh
mdm_chroot_build
mdm_stage_addon "$PY"

cat > "$STAGE/drive.py" <<'PYEOF'
# Runs inside the GUI Blender: enables the add-on, starts demo backends,
# records demo data, opens the sidebar, then reports what it showed.
import json, math, os, socket, sys, time
import bpy, addon_utils

MODULE = "bl_ext.user_default.movie_director_metrics_addon"
OUT = "/opt/mdm/state.json"
bpy.context.preferences.view.show_splash = False
addon_utils.enable(MODULE, default_set=True)
mod = sys.modules[MODULE]
# Panels to show open (MDM_OPEN_PANELS): re-registered without
# DEFAULT_CLOSED, so no click has to find their headers.
try:
    with open("/opt/mdm/open_panels.txt") as f:
        wanted = [w for w in f.read().split() if w]
except OSError:
    wanted = []
for cls in mod.panels.classes:
    if getattr(cls, "bl_idname", "") in wanted:
        bpy.utils.unregister_class(cls)
        cls.bl_options = set()
        bpy.utils.register_class(cls)
prefs = bpy.context.preferences.addons[MODULE].preferences
prefs.storage_path = "/opt/mdm/history.sqlite3"
prefs.refresh_interval_s = 1.0

from movie_director_metrics.simulator import Simulator
import numpy as np

sim = Simulator(latency_ms=25.0, error_rate=0.0, queue=3, job_s=1.0, seed=5)
with socket.socket() as s:
    s.bind(("127.0.0.1", 0)); dead = s.getsockname()[1]
backends = [(c.name, c.kind, c.url) for c in sim.configs()] + [
    ("render-farm", "http", f"http://127.0.0.1:{dead}"),
    ("cloud-llm", "openai", "https://api.example.invalid"),
]
for name, kind, url in backends:
    item = prefs.backends.add()
    item.name, item.kind, item.url = name, kind, url

for area in bpy.context.screen.areas:
    if area.type == "VIEW_3D":
        area.spaces.active.show_region_ui = True
bpy.context.window_manager.movie_director.compare_metric = "avg_ms"

state = {"started": time.time(), "dirty_at_start": bpy.data.is_dirty, "ticks": []}
recorded = [False]
ruled = [False]

def demo():
    rt = mod.runtime.get()
    if rt.monitor is None:
        return 0.5
    if not recorded[0]:
        rng = np.random.default_rng(1)
        for i, name in enumerate(["flux-render", "sdxl-farm", "whisper"]):
            svc = rt.monitor.service(name)
            svc.record_many(rng.lognormal(math.log(300 + 900 * i), 0.35, 300), rng.random(300) > 0.02 * (i + 1), error="timeout")
            svc.health(True, 6.0 + i)
            svc.set_queue(running=1, pending=i * 2)
            svc.record_processing(2400.0 + 800 * i)
            svc.set_resource(vram_used_bytes=(5 + 3 * i) * 2**30, vram_total_bytes=24 * 2**30)
        recorded[0] = True
    if not ruled[0] and rt.alerts is not None:
        # A firing alert (the dead port is down): it must show in the top
        # panel's header and the status bar with the other panels closed.
        from movie_director_metrics.alerts import AlertRule
        rt.alerts.add_rule(AlertRule(name="render-farm-down", target="render-farm", metric="up", comparator="<",
                                     threshold=1.0, for_s=0, severity="critical"))
        ruled[0] = True
    v = rt.view
    state["ticks"].append({"t": time.time(), "status": v.status, "dirty": bpy.data.is_dirty,
                           "banner": rt.banner.status_text,
                           "backends": {b.name: b.state for b in v.backends}, "services": [s.name for s in v.services]})
    with open(OUT, "w") as f:
        json.dump(state, f, indent=1)
    return 1.0

bpy.app.timers.register(demo, first_interval=1.0)
PYEOF

echo "${MDM_OPEN_PANELS:-}" | tr ',' ' ' > "$STAGE/open_panels.txt"

trap mdm_chroot_cleanup EXIT
mdm_xvfb_start "$W" "$H"

chroot "$CHROOT" /usr/bin/env -i DISPLAY=":$DISPLAY_NUM" HOME=/root PATH=/usr/bin:/bin \
  PYTHONPATH=/opt/mdm/site LIBGL_ALWAYS_SOFTWARE=1 \
  blender --python-use-system-env --factory-startup --no-window-focus -noaudio --window-geometry 0 0 $W $H \
  --python /opt/mdm/drive.py >"$ROOT_DIR/dist/screenshot-blender.log" 2>&1 &
BL_PID=$!

echo "== waiting for Blender's window"
for _ in $(seq 120); do
  xdotool search --name "Blender" >/dev/null 2>&1 && break
  sleep 1
done
sleep 8  # the add-on starts, the collectors poll, the timer ticks

click() { xdotool mousemove "$1" "$2" click 1; sleep "${3:-1.5}"; }
# Sidebar tabs in the factory layout: Item, Tool, View, then ours.
click "${MDM_TAB_X:-1307}" "${MDM_TAB_Y:-271}"
# Optional: widen the sidebar by dragging its left edge (x1,y1,x2).
if [ -n "${MDM_DRAG:-}" ]; then
  IFS=, read -r dx1 dy1 dx2 <<<"$MDM_DRAG"
  xdotool mousemove "$dx1" "$dy1"; sleep 0.5
  xdotool mousedown 1; sleep 0.3
  for x in $(seq "$dx1" -20 "$dx2"); do xdotool mousemove "$x" "$dy1"; sleep 0.03; done
  sleep 0.3; xdotool mouseup 1
  sleep 1.5
fi
# Then open panels: space-separated x,y clicks on panel headers (factory
# layout, 1600x1000): Health Monitoring, then Compare.  Every click must
# land on a header: the sidebar overlaps the viewport, so a click below the
# panels selects in the scene and dirties the .blend (the earlier
# coordinates did, once Connection Status grew its "not tested" rows).
for xy in ${MDM_CLICKS-1124,414 1100,835}; do click "${xy%,*}" "${xy#*,}"; done
xdotool mousemove 700 500
sleep 3
import -window root "$OUT"
cp "$CHROOT/opt/mdm/state.json" "${OUT%.png}.json"
"$PY" - "${OUT%.png}.json" <<'PYEOF'
import json, sys
s = json.load(open(sys.argv[1]))
ticks = s["ticks"]
dirty = [t["dirty"] for t in ticks]
print(f"{len(ticks)} seconds of live monitoring; last: {ticks[-1]['backends']}")
print(f"bpy.data.is_dirty while the timer ran: {sorted(set(dirty))}")
print(f"status bar / header alert text at the end: {ticks[-1].get('banner')!r}")
sys.exit(1 if any(dirty) else 0)
PYEOF
echo "$OUT"
