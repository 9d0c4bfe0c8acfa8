# Two commands matter: `make dev` runs the backend locally on emulators; `make test` checks it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: dev test lint typecheck pytest bench clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

setup: $(VENV)/.installed node_modules/.installed

dev: setup
	$(PY) -m dev.stack

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy shared functions dev bench tools
	@for f in functions/*-*/main.py; do echo "mypy $$f"; $(VENV)/bin/mypy $$f || exit 1; done

pytest: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# Lint and type errors fail the run too, but pytest still runs so one report shows everything.
test: setup
	@status=0; \
	$(MAKE) --no-print-directory lint || status=1; \
	$(MAKE) --no-print-directory typecheck || status=1; \
	$(MAKE) --no-print-directory pytest || status=1; \
	exit $$status

# The benches serve functions from a venv of the deployed requirements alone (plus the naive
# baseline's libraries, bench/requirements.txt): the dev venv's tools change what some
# libraries import (bench/serving.py).
BENCH_VENV := $(VENV)/bench-serve
$(BENCH_VENV)/.installed: requirements.txt bench/requirements.txt
	@test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		-r requirements.txt -r bench/requirements.txt
	@touch $@

# Every benchmark, bounded (about a quarter of an hour on 2 cores); BENCH_ARGS='--json' for one
# JSON object, '--strict' to fail on a missed target; each bench also runs alone
# (python -m bench.coldstart | bench.requests | bench.load --help).
bench: setup $(BENCH_VENV)/.installed
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) node_modules .stack .mypy_cache .ruff_cache .pytest_cache
