"""Example and test DAGs run by real Airflow (`airflow dags test`) on the local Ray backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.support.airflow_runs import dags_test, home_with_test_dags
from tests.support.leftovers import session_ray_pids

pytestmark = [pytest.mark.airflow, pytest.mark.ray]


@pytest.fixture(autouse=True)
def no_new_local_ray_processes():
    """Every test here must leave no Ray process of a local cluster behind."""
    before = set(session_ray_pids())
    yield
    deadline = time.monotonic() + 10
    while set(session_ray_pids()) - before:
        assert time.monotonic() < deadline, f"left behind: {sorted(set(session_ray_pids()) - before)}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def test_dags_home(tmp_path_factory) -> dict[str, str]:
    """A second AIRFLOW_HOME whose dags folder holds tests/dags (DAGs that fail on purpose)."""
    return home_with_test_dags(tmp_path_factory.mktemp("airflow-test-dags"))


def test_readme_demo_dag(airflow_db):
    output = dags_test("example_flyray_local")
    assert "FLYRAY_RESULT pi is about 3." in output, output[-3000:]
    assert "state=success" in output
    assert "Released local Ray cluster" in output


def test_mapped_dag_runs_one_cluster_per_map_index(airflow_db):
    output = dags_test("example_flyray_mapped")
    assert "FLYRAY_RESULT 4" in output and "FLYRAY_RESULT 9" in output, output[-3000:]
    assert "state=success" in output
    # Two different clusters: the map index is part of the name.
    started = {
        line.split("Started local Ray cluster ")[1].split(" ")[0]
        for line in output.splitlines()
        if "Started local Ray cluster" in line
    }
    assert len(started) == 2, started


def test_a_pool_dag_runs_on_the_local_backend_with_a_head_per_task(airflow_db):
    """dags/example_flyray_pool.py in the demo's setting: pools are a Kubernetes feature, so each task
    starts its own local head and the log says why (tests/integration/test_pools_kuberay.py shares)."""
    output = dags_test("example_flyray_pool")
    assert "state=success" in output, output[-3000:]
    assert output.count("reuse= is for the Kubernetes backend") == 3
    assert "POOL heads 3 distinct 3" in output


def test_failing_job_fails_the_task_with_its_last_lines(test_dags_home):
    output = dags_test("flyray_failing_job", test_dags_home)
    assert "state=failed" in output
    assert "FAILED" in output and "last 50 lines of the Ray job's log" in output, output[-3000:]
    assert "FINAL WORDS" in output


def test_templated_fields_reach_the_job(test_dags_home):
    output = dags_test("flyray_templated", test_dags_home)
    assert "FLYRAY_RESULT hello-from-params hello-from-params" in output, output[-3000:]
    assert "state=success" in output


def test_non_deferrable_path(test_dags_home):
    output = dags_test("flyray_blocking", test_dags_home)
    assert "FLYRAY_RESULT blocking path" in output, output[-3000:]
    assert "state=success" in output
    assert "DEFERRED" not in output


def test_execution_timeout_while_deferred_stops_job_and_cluster(test_dags_home):
    output = dags_test("flyray_timeout", test_dags_home)
    assert "state=failed" in output
    assert "timeout" in output and "execution_timeout reached" in output, output[-3000:]


def test_execution_timeout_without_deferral_reports_like_the_deferrable_path(test_dags_home):
    output = dags_test("flyray_blocking_timeout", test_dags_home)
    assert "state=failed" in output
    assert "execution_timeout reached; Ray job" in output and " stopped" in output, output[-3000:]
    assert "lines of the Ray job's log" in output and "BEFORE THE TIMEOUT" in output, output[-3000:]
    assert "Timeout, PID" not in output, output[-3000:]
    assert "Released local Ray cluster" in output


def test_provider_is_registered_with_airflow(airflow_db):
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "get", "airflow-provider-flyray", "--full", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(result.stdout)
    text = json.dumps(info)
    assert "airflow_provider_flyray.links.ray.RayDashboardLink" in text
    assert "flyray" in text
    links = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "links"], capture_output=True, text=True, check=True
    )
    assert "RayJobLink" in links.stdout
    triggers = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "triggers"], capture_output=True, text=True, check=True
    )
    assert "airflow_provider_flyray.triggers.ray_job" in triggers.stdout


def test_a_rayjob_dag_runs_on_the_local_backend_and_says_why(airflow_db):
    """dags/example_flyray_rayjob.py in the demo's setting: RayJob mode is KubeRay's, so each task runs on
    a local head and the log says so (tests/integration/test_rayjob_kuberay.py runs it on KubeRay)."""
    output = dags_test("example_flyray_rayjob", {"AIRFLOW_CONN_RAY_DEFAULT": os.environ["AIRFLOW_CONN_RAY_LOCAL"]})
    assert "state=success" in output and "state=failed" not in output, output[-3000:]
    assert output.count("kuberay_resource='RayJob' is for KubeRay") == 2
    assert "RAYJOB result: ['RAY!', 'JOB!']" in output
