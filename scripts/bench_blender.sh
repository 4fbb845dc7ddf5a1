#!/usr/bin/env bash
# `make bench-blender`: what the add-on costs a Blender user, measured in a
# real Blender 4.3 GUI (the Debian trixie chroot + Xvfb + Mesa llvmpipe of
# `make screenshot`, see scripts/blender_chroot.sh).
#
# Per scenario, ONE Blender process alternates phases with the add-on
# enabled and disabled (ABBA order, BENCH_BLENDER_ROUNDS rounds) and
# measures viewport playback (fps, p99 frame time), a small Cycles CPU
# render, a Python-heavy bpy operation and the add-on's own CPU time
# (scripts/bench_blender_drive.py says how).  Scenarios
# (BENCH_BLENDER_SCENARIOS, comma-separated, default all three):
#
#   idle    the add-on enabled with no backends
#   nice    6 simulated backends (3 movie_director_metrics.simulator
#           Simulators x their ComfyUI + llama.cpp configs) served by a
#           separate process at nice 19, polled at the default 1 Hz
#   normal  the same with the simulators at normal priority
#
# The simulated backends run on the host, outside Blender, as real backends
# would (the chroot shares the host's loopback).  Results:
# benchmarks/reference/blender-<date>.{json,txt} (also printed).
#
# Knobs: BENCH_BLENDER_ROUNDS (8), BENCH_BLENDER_PHASE_S (10),
# BENCH_BLENDER_OUT (output stem).  Needs root.  Not part of `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT_DIR=$PWD
PY=${PYTHON:-$ROOT_DIR/.venv/bin/python}
SCENARIOS=${BENCH_BLENDER_SCENARIOS:-idle,nice,normal}
ROUNDS=${BENCH_BLENDER_ROUNDS:-8}
PHASE_S=${BENCH_BLENDER_PHASE_S:-10}
OUT_STEM=${BENCH_BLENDER_OUT:-$ROOT_DIR/benchmarks/reference/blender-$(date +%F)}
# The window earlier measurements used: light scene, software GL, >= 25 fps.
W=640
H=400

for s in ${SCENARIOS//,/ }; do
  case "$s" in idle | nice | normal) ;; *)
    echo "BENCH_BLENDER_SCENARIOS: unknown scenario '$s' (idle, nice, normal)" >&2
    exit 2
    ;;
  esac
done
if [ "$ROUNDS" -lt 8 ]; then
  echo "note: BENCH_BLENDER_ROUNDS=$ROUNDS (< 8): a quick run, not a reference measurement" >&2
fi

# shellcheck source=scripts/blender_chroot.sh
source scripts/blender_chroot.sh
mdm_chroot_build
# The engine as the project venv has it (`make build`): what is being
# measured is this checkout, and no bpy/extension build is needed.
mdm_stage_addon "$PY" venv
cp scripts/bench_blender_drive.py "$STAGE/bench_drive.py"
cp scripts/bench_blender_scene.py "$STAGE/bench_scene.py"

SIM_PID=
cleanup() {
  if [ -n "$SIM_PID" ]; then kill "$SIM_PID" 2>/dev/null || true; wait "$SIM_PID" 2>/dev/null || true; fi
  mdm_chroot_cleanup
}
trap cleanup EXIT
mdm_xvfb_start 800 600

in_chroot() {
  chroot "$CHROOT" /usr/bin/env -i DISPLAY=":$DISPLAY_NUM" HOME=/root PATH=/usr/bin:/bin \
    PYTHONPATH=/opt/mdm/site LIBGL_ALWAYS_SOFTWARE=1 "$@"
}

echo "== bench scene"
in_chroot blender -b --factory-startup -noaudio --python /opt/mdm/bench_scene.py -- /opt/mdm/bench.blend \
  >"$STAGE/scene.log" 2>&1 || { cat "$STAGE/scene.log"; exit 1; }

# The backends: 3 Simulators (seeds 0..2, 2 % errors, as in
# benchmarks/test_collector_impact.py), each a ComfyUI- and a
# llama.cpp-shaped server on loopback; their configs go to a file, then the
# process serves until it is killed.
SIMULATORS='
import json, sys, threading
from movie_director_metrics.simulator import Simulator
sims = [Simulator(seed=i, error_rate=0.02) for i in range(3)]
backends = [{"name": f"{c.name}-{i}", "kind": c.kind, "url": c.url} for i, s in enumerate(sims) for c in s.configs()]
with open(sys.argv[1], "w") as f:
    json.dump(backends, f)
threading.Event().wait()
'

RESULTS=()
for scenario in ${SCENARIOS//,/ }; do
  echo "== scenario $scenario: $ROUNDS rounds x (on + off) x ${PHASE_S} s playback"
  backends=$STAGE/backends-$scenario.json
  rm -f "$backends"
  if [ "$scenario" = idle ]; then
    echo '[]' >"$backends"
  else
    prio=()
    [ "$scenario" = nice ] && prio=(nice -n 19)
    "${prio[@]}" "$PY" -c "$SIMULATORS" "$backends" &
    SIM_PID=$!
    for _ in $(seq 100); do [ -s "$backends" ] && break; sleep 0.1; done
    [ -s "$backends" ] || { echo "the simulators did not start" >&2; exit 1; }
  fi
  "$PY" - "$STAGE/bench-$scenario.json" "$scenario" "$ROUNDS" "$PHASE_S" "$backends" <<'PYEOF'
import json, sys
path, scenario, rounds, phase_s, backends = sys.argv[1:]
json.dump({"scenario": scenario, "rounds": int(rounds), "phase_s": float(phase_s),
           "backends": json.load(open(backends)), "out": f"/opt/mdm/result-{scenario}.json"}, open(path, "w"))
PYEOF
  rm -f "$STAGE/result-$scenario.json"
  # A fresh history file per scenario: "idle" must not show the services a
  # previous scenario's backends left in the add-on's default storage.
  rm -rf "$CHROOT/root/.config/blender/4.3/extensions/.user"
  # Per phase: playback + a ~1 s render + the Python op + settling; a hung
  # Blender is killed well past that.
  limit=$((ROUNDS * 2 * (${PHASE_S%.*} + 30) + 120))
  set +e
  in_chroot MDM_BENCH_CONFIG="/opt/mdm/bench-$scenario.json" \
    timeout "$limit" blender --python-use-system-env --factory-startup --no-window-focus -noaudio \
    --window-geometry 0 0 $W $H /opt/mdm/bench.blend --python /opt/mdm/bench_drive.py \
    2>&1 | tee "$STAGE/blender-$scenario.log" | grep --line-buffered '^\[bench\]'
  rc=${PIPESTATUS[0]}
  set -e
  if [ -n "$SIM_PID" ]; then kill "$SIM_PID" 2>/dev/null || true; wait "$SIM_PID" 2>/dev/null || true; SIM_PID=; fi
  if [ "$rc" -ne 0 ] || [ ! -s "$STAGE/result-$scenario.json" ]; then
    echo "scenario $scenario failed (rc $rc); last lines of $STAGE/blender-$scenario.log:" >&2
    tail -30 "$STAGE/blender-$scenario.log" >&2
    exit 1
  fi
  RESULTS+=("$STAGE/result-$scenario.json")
done

mkdir -p "$(dirname "$OUT_STEM")"
"$PY" scripts/bench_blender_report.py --out "$OUT_STEM" "${RESULTS[@]}"
