#!/usr/bin/env bash
# Shared by scripts/screenshot.sh and scripts/bench_blender.sh: a real
# Blender 4.3 GUI on a host Xvfb with Mesa's software renderer.
#
# Debian bookworm has no Blender >= 4.2, so Blender comes from a Debian
# trixie debootstrap chroot, built once and kept in $MDM_CHROOT (default
# target/blender-trixie, ~1.8 GB).  Source this file, then call:
#
#   mdm_chroot_build         host tools + the chroot (no-op once built)
#   mdm_stage_addon PY [SRC] add-on into the chroot's extension repo, the
#                            engine into /opt/mdm/site (SRC: wheel | venv)
#   mdm_xvfb_start W H       Xvfb on :$MDM_DISPLAY, X socket + /proc mounted
#                            into the chroot; exports DISPLAY
#   mdm_chroot_cleanup       kill Blender ($BL_PID) and Xvfb, unmount
#
# Needs root (debootstrap, chroot, mounts).  Expects the caller to be in
# the repository root with $ROOT_DIR set.
: "${ROOT_DIR:=$PWD}"
CHROOT=${MDM_CHROOT:-$ROOT_DIR/target/blender-trixie}
DISPLAY_NUM=${MDM_DISPLAY:-57}
STAGE=$CHROOT/opt/mdm
EXT_DIR=$CHROOT/root/.config/blender/4.3/extensions/user_default

mdm_chroot_build() {
  need() { command -v "$1" >/dev/null 2>&1; }
  if ! need Xvfb || ! need import || ! need xdotool || ! need debootstrap; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends xvfb imagemagick xdotool debootstrap >/dev/null
  fi
  if [ ! -x "$CHROOT/usr/bin/blender" ]; then
    echo "== building the trixie chroot in $CHROOT (once)"
    mkdir -p "$CHROOT"
    [ -e "$CHROOT/etc/debian_version" ] || debootstrap --variant=minbase trixie "$CHROOT" http://deb.debian.org/debian
    chroot "$CHROOT" /bin/bash -c "export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && \
      apt-get install -y -qq --no-install-recommends blender libgl1-mesa-dri libglx-mesa0 libegl-mesa0 python3-numpy >/dev/null"
  fi
}

# The add-on is copied as-is and the engine put on PYTHONPATH (/opt/mdm/site;
# Blender reads PYTHONPATH only when started with --python-use-system-env).
# Engine source, $2:
#   wheel (default)  scripts/build_addon.py builds the engine wheel and the
#                    extension (needs `make bpy-venv` for Blender's extension
#                    tool); the wheel is unpacked: Blender 4.3 checks only a
#                    wheel's python tag, so it would refuse the cp311-abi3
#                    wheel on its Python 3.13; the abi3 module loads fine;
#   venv             the package as the project venv imports it (`make build`),
#                    copied: no wheel, no bpy needed.
mdm_stage_addon() {
  local py=$1 source=${2:-wheel}
  rm -rf "$STAGE" "$CHROOT/root/.config/blender"
  mkdir -p "$STAGE/site" "$EXT_DIR"
  if [ "$source" = venv ]; then
    local pkg
    pkg=$("$py" -c "import movie_director_metrics as m, os; print(os.path.dirname(m.__file__))")
    ls "$pkg"/_core*.so >/dev/null  # an extension module built by `make build`
    cp -r "$pkg" "$STAGE/site/movie_director_metrics"
    find "$STAGE/site" -name __pycache__ -prune -exec rm -rf {} +
    echo "== engine from $pkg"
  else
    echo "== building the add-on"
    "$py" scripts/build_addon.py --quiet >/dev/null
    local wheel
    wheel=$(ls blender_addon/wheels/movie_director_metrics-*-cp311-abi3-*.whl | head -1)
    "$py" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$wheel" "$STAGE/site"
  fi
  cp -r blender_addon "$EXT_DIR/movie_director_metrics_addon"
  rm -rf "$EXT_DIR/movie_director_metrics_addon/wheels"
  find "$EXT_DIR" -name __pycache__ -prune -exec rm -rf {} +
}

mdm_unmount() {
  for m in tmp/.X11-unix proc; do
    if mountpoint -q "$CHROOT/$m"; then umount -l "$CHROOT/$m"; fi
  done
}

mdm_xvfb_start() {
  mdm_unmount  # left by a killed run
  Xvfb ":$DISPLAY_NUM" -screen 0 "${1}x${2}x24" -nolisten tcp >/dev/null 2>&1 &
  XVFB_PID=$!
  export DISPLAY=":$DISPLAY_NUM"
  for _ in $(seq 50); do [ -e "/tmp/.X11-unix/X$DISPLAY_NUM" ] && break; sleep 0.1; done
  # Only the X socket and /proc go in (debootstrap made the /dev nodes): no
  # bind mount of /dev that an `rm -rf target` could reach through if the
  # caller were killed before its cleanup.
  mkdir -p "$CHROOT/tmp/.X11-unix"
  mount --bind /tmp/.X11-unix "$CHROOT/tmp/.X11-unix"
  mount -t proc proc "$CHROOT/proc"
}

mdm_chroot_cleanup() {
  set +e
  if [ -n "${BL_PID:-}" ]; then kill "$BL_PID" 2>/dev/null; wait "$BL_PID" 2>/dev/null; fi
  if [ -n "${XVFB_PID:-}" ]; then kill "$XVFB_PID" 2>/dev/null; wait "$XVFB_PID" 2>/dev/null; fi
  mdm_unmount
}

# Usage as a program: `bash scripts/blender_chroot.sh build` builds the chroot only.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  cd "$(dirname "$0")/.."
  ROOT_DIR=$PWD
  CHROOT=${MDM_CHROOT:-$ROOT_DIR/target/blender-trixie}
  STAGE=$CHROOT/opt/mdm
  EXT_DIR=$CHROOT/root/.config/blender/4.3/extensions/user_default
  case "${1:-build}" in
    build) mdm_chroot_build ;;
    *) echo "usage: $0 [build]" >&2; exit 2 ;;
  esac
fi
