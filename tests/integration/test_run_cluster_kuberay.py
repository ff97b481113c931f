"""One RayCluster for a DAG run on the control plane (real kube-apiserver and KubeRay operator), through
`airflow dags test`: one cluster created for three tasks and deleted by the teardown, also when the
work fails; a cluster left by a finished run is deleted by the next run's setup."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from airflow_provider_flyray.config import OnFinishAction, RayJobConfig
from airflow_provider_flyray.dag_run_owner import DagRunOwner
from airflow_provider_flyray.manifest import owned_cluster_manifest
from tests.support import tenants
from tests.support.airflow_runs import dags_test, home_with_test_dags
from tests.support.leftovers import managed_clusters, wait_until_empty
from tests.support.ray_jobs import SMALL_HEAD

pytestmark = [pytest.mark.kube, pytest.mark.airflow]


@pytest.fixture
def kube_conn(kube_control_plane, core, monkeypatch):
    """A fresh namespace; ``ray_local`` (the example's connection) pointed at it (pod-IP access)."""
    with tenants.namespace(core, "flyray-run") as name:
        extra = {"kube_config_path": kube_control_plane.kubeconfig, "namespace": name, "dashboard_access": "pod"}
        yield name, {"AIRFLOW_CONN_RAY_LOCAL": tenants.flyray_conn(**extra)}


def last_finished_run(home: Path, dag_id: str) -> str:
    with sqlite3.connect(home / "airflow.db") as conn:
        (run_id,) = conn.execute(
            "SELECT run_id FROM dag_run WHERE dag_id = ? AND state = 'success' ORDER BY end_date DESC LIMIT 1",
            (dag_id,),
        ).fetchone()
        return str(run_id)


def test_one_raycluster_for_the_run_deleted_by_the_teardown_and_swept_when_left(core, custom, kube_conn, airflow_db):
    namespace, env = kube_conn
    output = dags_test("example_flyray_run_cluster", env)
    assert "state=success" in output and "state=failed" not in output, output[-6000:]
    assert output.count("Created RayCluster") == 1, "only the setup creates a cluster"
    assert output.count("the DAG run's shared cluster") == 3
    assert "RUN_CLUSTER same head True" in output
    assert "Deleted RayCluster" in output
    wait_until_empty(core, custom, namespace)

    # A cluster left behind by that (finished) run, as a killed teardown would leave it:
    old_run = last_finished_run(Path(airflow_db), "example_flyray_run_cluster")
    owner = DagRunOwner("example_flyray_run_cluster", old_run, "ray_cluster")
    config = RayJobConfig(head_node_config=SMALL_HEAD)
    left = owned_cluster_manifest(config, owner, namespace, OnFinishAction.DELETE_CLUSTER)
    custom.create_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters", left)
    again = dags_test("example_flyray_run_cluster", env)
    assert "state=success" in again, again[-6000:]
    assert f"Deleted RayCluster {namespace}/{left['metadata']['name']}, left behind by an earlier run" in again
    wait_until_empty(core, custom, namespace)


def test_the_teardown_deletes_the_raycluster_when_the_work_fails(core, custom, kube_conn, tmp_path):
    namespace, env = kube_conn
    home = home_with_test_dags(tmp_path / "home", env)
    output = dags_test("flyray_run_cluster_fails", home)
    assert "state=failed" in output and "the work failed" in output, output[-6000:]
    assert "Deleted RayCluster" in output
    wait_until_empty(core, custom, namespace)
    assert managed_clusters(custom, namespace) == []
