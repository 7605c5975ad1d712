# The commands README.md documents. `make run` and `make test` work on a fresh machine with only
# Python 3.11 and make: uv is installed on first use, then uv installs everything from uv.lock.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
export UV_PYTHON_DOWNLOADS := never

.PHONY: help install run test test-fast bench lint fmt clean

help:
	@echo "make run    - install, then start Dagster (http://127.0.0.1:3000) with the replay feed, Valkey and chdb"
	@echo "make test   - install, then run the whole test suite (slow end-to-end tests included)"
	@echo "make bench  - run the benchmarks and write benchmarks/results.json"
	@echo "make lint   - ruff and mypy"

uv-available:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
.PHONY: uv-available

install: uv-available compiler
	$(UV) sync --frozen

# $(call apt_install,PACKAGES,WHY): Debian packages a step needs, installed with apt only when running as root
# on a machine that has it (elsewhere the step's own error names what is missing); the package index is updated
# only if the install fails without it.
apt_install = [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1 || \
	{ echo "installing $(1) $(2)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(1) >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(1); }; }

# The trade hot path's field-mapping kernel is compiled when uv installs the project (setup.py): it needs a C
# compiler and Python's headers.
compiler:
	@command -v cc >/dev/null 2>&1 || $(call apt_install,gcc libc6-dev,to build the compiled module)
	@python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(sysconfig.get_path("include") + "/Python.h"))' \
		|| $(call apt_install,python3-dev,to build the compiled module)
.PHONY: compiler

run: install
	$(UV) run --frozen trading-platform dev

# The UI test drives Debian's chromium (a browser download does not work everywhere): installed here with
# apt when missing and running as root; elsewhere the test says how to install it.
browser:
	@command -v chromium >/dev/null 2>&1 || $(call apt_install,chromium,for the UI test)
.PHONY: browser

# Two workers: each long scenario module whole on one of them (conftest.SCENARIO_MODULES), the rest around.
test: install browser
	$(UV) run --frozen pytest -q -m "slow or not slow" -n 2 --durations=15

# Four workers on two cores: many of these tests wait on servers and subprocesses, not the CPU (measured: 1 min
# 20 s with four, 1 min 41 s with two).
test-fast: install
	$(UV) run --frozen pytest -q -m "not slow" -n 4

bench: install
	$(UV) run --frozen --group bench python -m benchmarks

lint: install
	$(UV) run --frozen ruff check trading_platform trading_platform_tests benchmarks
	$(UV) run --frozen mypy trading_platform

fmt: install
	$(UV) run --frozen ruff check --fix trading_platform trading_platform_tests benchmarks

clean:
	rm -rf .tp_state .pytest_cache .mypy_cache .ruff_cache
