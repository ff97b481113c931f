"""One Ray cluster for a DAG run, on real Airflow (`airflow dags test`) and a real local Ray head:
the setup starts one head, three tasks run on it, the teardown stops it; also when the work fails."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_flyray.backends.local_process import local_cluster_pids
from airflow_provider_flyray.cluster import ClusterRef
from tests.support.airflow_runs import dags_test, home_with_test_dags

pytestmark = [pytest.mark.airflow, pytest.mark.ray]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> dict[str, str]:
    return home_with_test_dags(tmp_path_factory.mktemp("airflow-run-cluster"))


def setup_xcom(env: dict[str, str], dag_id: str) -> dict[str, Any]:
    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as conn:
        (value,) = conn.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND task_id = 'ray_cluster' AND key = 'return_value' "
            "ORDER BY timestamp DESC LIMIT 1",  # this run's (the home may hold earlier runs, e.g. on KubeRay)
            (dag_id,),
        ).fetchone()
    return json.loads(value)


def test_tasks_of_a_run_share_one_cluster_that_the_teardown_stops(airflow_db):
    output = dags_test("example_flyray_run_cluster")
    assert "state=success" in output and "state=failed" not in output, output[-6000:]
    assert output.count("Started local Ray cluster") == 1, "only the setup starts a head"
    assert "is ready for the tasks of this DAG run" in output
    assert output.count("the DAG run's shared cluster") == 3  # first, second, entrypoint
    same = next(line for line in output.splitlines() if "RUN_CLUSTER same head" in line)
    assert "RUN_CLUSTER same head True" in same, same
    head_id = same.rsplit(" ", 1)[1]
    assert f"[ray] RUN_CLUSTER head {head_id}" in output  # the entrypoint task saw the same head
    ref = ClusterRef.from_dict(setup_xcom({"AIRFLOW_HOME": str(airflow_db)}, "example_flyray_run_cluster"))
    assert ref.backend == "local" and ref.owned
    assert "Deleted local Ray cluster" in output  # the teardown, once
    assert local_cluster_pids(ref) == []


def test_the_teardown_stops_the_cluster_when_the_work_fails(home):
    output = dags_test("flyray_run_cluster_fails", home)
    assert "state=failed" in output and "the work failed" in output, output[-6000:]
    ref = ClusterRef.from_dict(setup_xcom(home, "flyray_run_cluster_fails"))
    assert "Deleted local Ray cluster" in output
    assert local_cluster_pids(ref) == []
