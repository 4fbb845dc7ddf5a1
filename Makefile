# Quick start: `make run` (demo) and `make test` (everything CI runs).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: venv build run test rust-test lint stubtest pytest loom wheel bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "maturin>=1.7,<2" "numpy>=1.24" "pytest>=8" "pytest-benchmark>=4" "mypy>=1.10"
	touch $@

venv: $(VENV)/.installed

## Build the extension (release) into the project venv.
build: venv
	$(VENV)/bin/maturin develop --release --quiet

## The main job: a short simulated dashboard.
run: build
	$(PY) -m movie_director_metrics.demo

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

rust-test:
	cargo test --workspace --release

stubtest: build
	$(PY) -m mypy.stubtest movie_director_metrics --allowlist stubtest-allowlist.txt
	$(PY) -m mypy

pytest: build
	$(PY) -m pytest

## Every check CI runs.
test: lint rust-test stubtest pytest

## Model-check the lock-free protocols under loom.
loom:
	RUSTFLAGS="--cfg loom" cargo test -p metrics_core --release --lib --target-dir target/loom loom

wheel: venv
	$(VENV)/bin/maturin build --release --out dist

clean:
	rm -rf $(VENV) target dist
