"""Shared test set-up: an isolated AIRFLOW_HOME, a migrated metadata DB, and the fixtures shared across
test directories: the KubeRay control plane (tests/infra/kube/fixtures.py) and tests/support/fixtures.py,
registered as pytest plugins."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

# Airflow reads its configuration at import time: isolate it before anything imports airflow.
_OWN_AIRFLOW_HOME = not os.environ.get("FLYRAY_TEST_AIRFLOW_HOME")  # made here, so removed at the end
_AIRFLOW_HOME = Path(os.environ.get("FLYRAY_TEST_AIRFLOW_HOME") or tempfile.mkdtemp(prefix="flyray-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(Path(__file__).resolve().parent.parent / "dags")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
# Plain log text: tests read it, and Airflow 3.1.0 colours the console even when it is not a terminal.
os.environ.setdefault("NO_COLOR", "1")
os.environ.setdefault("AIRFLOW__LOGGING__COLORED_CONSOLE_LOG", "False")
# This session's mark on every process it starts (see tests/support/leftovers.py: SESSION_ENV).
os.environ.setdefault("FLYRAY_TEST_SESSION", uuid.uuid4().hex)
os.environ["AIRFLOW_CONN_RAY_LOCAL"] = '{"conn_type": "flyray", "extra": {"backend": "local"}}'

import pytest  # noqa: E402

pytest_plugins = ["tests.infra.kube.fixtures", "tests.support.fixtures"]


def pytest_unconfigure(config: pytest.Config) -> None:
    if _OWN_AIRFLOW_HOME:
        shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    return _AIRFLOW_HOME


@pytest.fixture(scope="session")
def airflow_db(airflow_home: Path) -> Path:
    """A migrated metadata DB (SQLite) for `airflow dags test` runs."""
    from tests.support.airflow_runs import migrate

    migrate()
    return airflow_home
