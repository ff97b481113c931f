# The two set-up commands of the README: `make demo` and `make test`. Both create .venv if needed, and
# `make test` installs what the tests need outside the venv (Chromium, `make browser`; PostgreSQL's server,
# `make postgres`).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Commands that tests and demos start (airflow, ray, python) come from the project's venv.
export PATH := $(abspath $(BIN)):$(PATH)
# The test infrastructure (tests/infra): the KubeRay control plane and the real-Airflow stack.
KUBE   := $(BIN)/python -m tests.infra.kube
STACK  := $(BIN)/python -m tests.infra.stack
# apt-get runs as root: through sudo when make does not.
SUDO   := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: install browser postgres demo test lint docs unit faults faults-rayjob compat bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Debian's Chromium, which the browser test (tests/e2e/test_ui_browser.py) drives through Playwright
# (Playwright cannot download its own browser here); installed only when there is none.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium (apt-get) for tests/e2e/test_ui_browser.py"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Debian's PostgreSQL server, for the metadata DB of the e2e and fault-matrix Airflow stacks: each test
# session starts its own server in a temporary data directory on a loopback port (tests/infra/postgres.py)
# and stops it; the system's own cluster is not used. Installed only when there is none.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing postgresql (apt-get) for the Airflow stacks of tests/e2e and tests/faults"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

# A real Airflow (api-server, scheduler, dag-processor, triggerer) runs the example DAG on a local Ray cluster.
demo: $(STAMP)
	$(STACK) demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The docs (docs/, Sphinx) as HTML in docs/_build/html; a warning or a broken reference (-n) fails it.
docs: $(STAMP)
	$(BIN)/sphinx-build -W --keep-going -n -b html docs docs/_build/html

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -q

# Everything: lint, type check, the docs build, Chromium if missing, the control plane build (cached), unit + integration
# tests on real Ray, real Airflow and the KubeRay control plane (started and stopped by the test session).
test: $(STAMP) lint docs browser postgres
	$(KUBE) build
	$(BIN)/python -m pytest -ra -p no:cacheprovider --durations=30 $(PYTEST_ARGS)

# The fault matrix (tests/faults: failures, security, bad inputs) alone, ending with its table; also part of `test`.
faults: $(STAMP) postgres
	$(KUBE) build
	$(BIN)/python -m pytest -p no:cacheprovider tests/faults $(PYTEST_ARGS)

# The matrix's applicable rows again in RayJob mode (tests/faults/test_matrix_rayjob.py, ~15 min): not in
# `test`, which stays well inside CI's time limit; `test` has RayJob mode's own row (R1, Airflow lost).
faults-rayjob: $(STAMP) postgres
	$(KUBE) build
	FLYRAY_RAYJOB_MATRIX=1 $(BIN)/python -m pytest -p no:cacheprovider tests/faults/test_matrix_rayjob.py $(PYTEST_ARGS)

# The compatibility run (tests/compat, ~2 h; not in `test`): the unit tests, `airflow dags test` and the
# local-Ray trigger tests on each Airflow minor line's lowest and highest patch release, the local-Ray
# tests on Ray 2.52, and the KubeRay tests with operators v1.4.0 and v1.5.0; venvs cached in
# ~/.cache/flyray-compat; results in benchmarks/results/compat-<date>.{json,md} (docs/compatibility.md).
compat: $(STAMP)
	$(BIN)/python -m tests.compat $(COMPAT_ARGS)

# Benchmarks (not tests): trigger capacity vs astro-provider-ray, real-path latency, API economy.
bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	$(KUBE) build
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

clean:
	-$(KUBE) down
	rm -rf .demo .pytest_cache .mypy_cache .ruff_cache docs/_build
