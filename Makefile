# Kadence — developer entry points. `make test` and `make demo` are the two commands a fresh clone
# needs; everything else is a step they call, or needs Docker (`make demo-kind`, `make e2e`).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help venv tools lint typecheck imports format crds test unit integration soak demo demo-kind stack e2e clean

help:
	@echo "make demo      - local stack + operator + worker + examples, with a live view of the runs"
	@echo "make demo-kind - the same on a kind cluster through the Helm chart (needs Docker)"
	@echo "make stack     - only the local stack (Kubernetes API, NATS, S3), until Ctrl-C"
	@echo "make test      - lint, type-check, import contracts and the whole test suite"
	@echo "make soak      - the fault suite for longer: make soak SEED=1 DURATION=600 (docs/reliability.md)"
	@echo "make crds      - regenerate crds/ from the pydantic models"
	@echo "make tools     - build (once per machine) or find the control-plane binaries"
	@echo "make e2e       - end-to-end tests on kind (needs Docker)"

$(STAMP): pyproject.toml operator/pyproject.toml tools/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required (found " + sys.version.split()[0] + "); set PYTHON=python3.11 or newer")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]' -e ./operator -e ./tools
	@touch $(STAMP)

venv: $(STAMP)

tools: venv
	$(BIN)/kadence-devstack build --helm --node

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

imports: venv
	$(BIN)/lint-imports

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

crds: venv
	$(PY) -m kadence_operator.crdgen --out crds
	$(PY) tools/sync_chart_crds.py

unit: venv
	$(BIN)/pytest tests/unit

integration: venv tools
	$(BIN)/pytest tests/integration

test: venv tools lint typecheck imports
	$(BIN)/pytest

# The fault suite of tests/faults for longer than `make test` runs it: seeded faults for DURATION
# seconds on the real stack, then the invariants; exits non-zero on any violation. NATS_CLUSTER=3:
# against a 3-node NATS cluster (Queues with 3 replicas, and the nats-node-kill fault).
SEED ?= 1
DURATION ?= 600
NATS_CLUSTER ?= 1
soak: venv tools
	$(PY) -m tests.faults.soak --seed $(SEED) --duration $(DURATION) --nats-cluster $(NATS_CLUSTER)

demo: venv tools
	$(BIN)/kadence-devstack demo

# No `tools`: the cluster is kind's, not the locally built control plane. kind and helm come from
# PATH or are go-installed on first use; the prerequisites are checked before anything else.
# `make demo-kind DEMO_KIND_FLAGS=--delete` deletes the cluster on exit instead of keeping it.
demo-kind: venv
	$(BIN)/kadence-devstack demo-kind $(DEMO_KIND_FLAGS)

stack: venv tools
	$(BIN)/kadence-devstack up

e2e: venv
	$(PY) -m pip install --quiet -e '.[dev,e2e]' -e ./operator -e ./tools
	$(BIN)/pytest e2e -ra

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache test-logs .devstack .devstack-kind
