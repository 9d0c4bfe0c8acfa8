# Two commands matter: `make dev` runs the backend locally on emulators; `make test` checks it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: dev test lint typecheck deploy-check pytest bench clean client web chromium docs docs-check

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

# No install scripts: the only ones are re2's native build (an optional dependency of
# firebase-tools' Hosting emulator, which falls back to JavaScript regexps without it: minutes
# of C++ on 2 cores), esbuild's binary check (it finds its platform package without it),
# protobufjs' version notice and @firebase/util's FIREBASE_WEBAPP_CONFIG hook (unset here).
node_modules/.installed: package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

# The deploy configuration's checkers, each in a venv of its own (docs/guides/deploy.md).
CHECKOV_VENV := .venv-checkov
IAC_VENV := .venv-iac

$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	@touch $@

$(IAC_VENV)/.installed: requirements-iac.txt
	@test -x $(IAC_VENV)/bin/python || $(PYTHON) -m venv $(IAC_VENV)
	$(IAC_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-iac.txt
	@touch $@

# The browser tests drive Debian's Chromium (Playwright cannot download its own offline);
# CI runs as root on a fresh machine, so the test run installs it there when it is missing
# (`make dev` does not need it).
chromium:
	@command -v chromium >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
		else echo "chromium is missing: sudo apt-get install -y chromium" >&2; exit 1; fi; }

setup: $(VENV)/.installed node_modules/.installed

# The typed web client (clients/web): its types, from the merged OpenAPI document that
# tools/openapi_doc.py writes without a server. tests/test_web_client.py fails when the
# committed types differ from what this makes.
client: $(VENV)/.installed node_modules/.installed
	$(PY) -m tools.openapi_doc build/openapi.json
	node_modules/.bin/openapi-typescript build/openapi.json --default-non-nullable false \
		-o clients/web/src/schema.d.ts

# The reference web app's one ES module, bundled with the Firebase JS SDK (docs/guides/front-end.md).
WEB_SOURCES := $(wildcard hosting/src/*.ts clients/web/src/*.ts)
hosting/public/app.js: $(WEB_SOURCES) node_modules/.installed
	node_modules/.bin/esbuild hosting/src/app.ts --bundle --format=esm --target=es2022 \
		--minify --log-level=warning --outfile=$@

web: hosting/public/app.js

dev: setup web
	$(PY) -m dev.stack

# A marketplace week lived in minutes on a stack of its own (scheduler live, clock moved):
# bookings, reminders, a refund, visits, the payout run, audit seals; prints the week's books.
.PHONY: demo
demo: setup web
	$(PY) -m pytest tests/test_week.py -q -s -p no:cacheprovider

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.installed node_modules/.installed
	$(VENV)/bin/mypy shared functions dev bench tools
	@for f in functions/*-*/main.py; do echo "mypy $$f"; $(VENV)/bin/mypy $$f || exit 1; done
	node_modules/.bin/tsc -p tsconfig.json

# tests/test_terraform.py parses terraform/ with python-hcl2 from $(IAC_VENV).
# PYTEST_WORKERS processes (pytest-xdist), each with a local stack of its own, take whole test
# files (all but SHARED_OUT in tests/conftest.py, shared test by test); then the `after_all`
# tests read what every worker recorded. With PYTEST_ARGS (a subset) the whole-run checks are
# not run: they judge the whole run.
PYTEST_WORKERS ?= 2
pytest: setup web chromium $(IAC_VENV)/.installed
	@queries=$$(mktemp -d); status=0; \
	ALODOKTOR_QUERY_DIR=$$queries $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup --durations=25 \
		$(PYTEST_ARGS) || status=$$?; \
	if [ -z "$(PYTEST_ARGS)" ]; then \
		ALODOKTOR_QUERY_DIR=$$queries $(PY) -m pytest -m after_all tests || status=$$?; \
	fi; \
	rm -rf $$queries; exit $$status

# Lint and type errors fail the run too, but pytest still runs so one report shows everything.
# The environments install side by side first: pip and npm mostly wait on disk and the
# package index, so on a fresh clone they overlap rather than queue.
test:
	@$(MAKE) --no-print-directory -j5 $(VENV)/.installed node_modules/.installed \
		$(CHECKOV_VENV)/.installed $(IAC_VENV)/.installed chromium
	@status=0; \
	$(MAKE) --no-print-directory lint || status=1; \
	$(MAKE) --no-print-directory typecheck || status=1; \
	$(MAKE) --no-print-directory deploy-check || status=1; \
	$(MAKE) --no-print-directory docs-check || status=1; \
	$(MAKE) --no-print-directory pytest || status=1; \
	exit $$status

# What of the deploy configuration runs offline (the Google provider cannot be downloaded, so
# `terraform validate` cannot): formatting, checkov (no failed check; each skip is an inline
# `checkov:skip=ID:reason`) and the Cloud Build schema. tests/test_terraform.py does the rest.
deploy-check: $(CHECKOV_VENV)/.installed $(IAC_VENV)/.installed
	@# fmt reads no provider; an absent CLI config file named by the environment only warns.
	TF_CLI_CONFIG_FILE=/dev/null terraform fmt -check -recursive terraform
	$(CHECKOV_VENV)/bin/checkov --quiet --compact --skip-download \
		--framework terraform dockerfile -d terraform -d ci
	$(IAC_VENV)/bin/check-jsonschema --builtin-schema vendor.cloudbuild cloudbuild.yaml

# The docs site (mkdocs.yml, docs/): guides, and reference generated from the code
# (python -m tools.docs_reference; tests/test_docs_reference.py fails when it is stale).
# `make docs` builds it and serves it at http://127.0.0.1:8000, rebuilding on change;
# docs-check builds it in strict mode (a broken link or a page left out fails), offline: Mermaid
# comes from node_modules (tools/mkdocs_hooks.py), no web fonts.
DOCS_PORT ?= 8000
docs: $(VENV)/.installed node_modules/.installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --strict --dev-addr 127.0.0.1:$(DOCS_PORT)

docs-check: $(VENV)/.installed node_modules/.installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

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

# The notify sweep draining 5,000 queued notices on its own stack (issue 16): messages per
# second and Firestore operations per message (python -m bench.notify_sweep --help).
.PHONY: bench-notify
bench-notify: setup
	$(PY) -m bench.notify_sweep $(BENCH_ARGS)

# The audit log at scale on its own stack (issue 17): 50 concurrent writers through the old
# hash chain and the new log, seals of 1,000 and 10,000 entries, verification of 100,000
# (python -m bench.audit_seal --help).
.PHONY: bench-audit
bench-audit: setup
	$(PY) -m bench.audit_seal $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) $(IAC_VENV) node_modules .stack .mypy_cache .ruff_cache .pytest_cache \
		hosting/public/app.js
