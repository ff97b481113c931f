# The two set-up commands of the README: `make demo` and `make test`. Both create .venv if needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Commands that tests and demos start (airflow, ray, python) come from the project's venv.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install demo test lint unit faults bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# A real Airflow (api-server, scheduler, dag-processor, triggerer) runs the example DAG on a local Ray cluster.
demo: $(STAMP)
	$(BIN)/python -m tests.stack demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -q

# Everything: lint, type check, the control plane build (cached), unit + integration tests on real
# Ray, real Airflow and the KubeRay control plane (started and stopped by the test session).
test: $(STAMP) lint
	$(BIN)/python -m tests.kube build
	$(BIN)/python -m pytest -ra -p no:cacheprovider $(PYTEST_ARGS)

# The fault matrix (tests/faults: failures, security, bad inputs) alone, ending with its table; also part of `test`.
faults: $(STAMP)
	$(BIN)/python -m tests.kube build
	$(BIN)/python -m pytest -p no:cacheprovider tests/faults $(PYTEST_ARGS)

# Benchmarks (not tests): trigger capacity vs astro-provider-ray, real-path latency, API economy.
bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	$(BIN)/python -m tests.kube build
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

clean:
	-$(BIN)/python -m tests.kube down
	rm -rf .demo .pytest_cache .mypy_cache .ruff_cache
