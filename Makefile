# k2 — the two commands a new user needs:
#   make run    set up everything; start Kafka, ingest and the API; replay the ASX sample; serve until Ctrl-C
#   make test   set up everything and run the whole test suite (what CI runs)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
K2 := $(VENV)/bin/k2
STAMP := $(VENV)/.k2-installed

.PHONY: setup run test lint typecheck unit integration faults bench clean stop

setup: $(STAMP) jars prometheus

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $(STAMP)

jars: $(STAMP)
	$(K2) broker fetch

# Prometheus server + promtool (Debian package) for the observability tests.
prometheus:
	@bash scripts/install-prometheus.sh

run: setup
	K2=$(K2) bash scripts/run.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(VENV)/bin/pytest tests/unit -q

test: setup lint typecheck
	$(VENV)/bin/pytest tests -q

bench: setup
	$(K2) broker start
	$(K2) bench ingest --out bench-results/ingest.json

stop:
	-$(K2) broker stop

clean: stop
	rm -rf .k2 $(VENV)
