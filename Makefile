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

bench: setup
	$(PY) -m bench.modules
	$(PY) -m bench.coldstart

clean:
	rm -rf $(VENV) node_modules .stack .mypy_cache .ruff_cache .pytest_cache
