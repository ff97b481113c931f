"""dags/example_flyray_pool.py through `airflow dags test` on the control plane (real kube-apiserver and
KubeRay operator): three mapped @task.ray tasks share one pool RayCluster (the first creates it, the
others join), each holds and releases its Lease, and the idle cluster stays until its idle_ttl."""

from __future__ import annotations

import pytest

from tests.support import tenants
from tests.support.airflow_runs import dags_test
from tests.support.leftovers import managed_clusters, wait_until_empty
from tests.support.pools import POOL_SELECTOR, leases_in, sweep

pytestmark = [pytest.mark.kube, pytest.mark.airflow]


@pytest.fixture
def kube_conn(kube_control_plane, core, monkeypatch):
    """A fresh namespace; ``ray_local`` (the example's connection) pointed at it (pod-IP access)."""
    with tenants.namespace(core, "flyray-pool") as name:
        extra = {"kube_config_path": kube_control_plane.kubeconfig, "namespace": name, "dashboard_access": "pod"}
        monkeypatch.setenv("AIRFLOW_CONN_RAY_LOCAL", tenants.flyray_conn(**extra))
        yield name


def test_the_tasks_of_a_run_share_one_pool_cluster(kube_control_plane, core, custom, kube_conn, airflow_db):
    namespace = kube_conn
    output = dags_test("example_flyray_pool")
    assert "state=success" in output and "state=failed" not in output, output[-6000:]
    assert output.count("for pool 'config-") == 1, "the first task creates the pool's cluster"
    assert output.count("Joining pool 'config-") == 2, "the others join it"
    assert "POOL heads 3 distinct 1" in output
    assert output.count("Released pool RayCluster") == 3
    (cluster,) = managed_clusters(custom, namespace, POOL_SELECTOR)
    assert leases_in(kube_control_plane.api_client(), namespace) == [], "every task let go of its lease"
    # Idle, but for less than its idle_ttl (300 s): a sweep keeps it.
    assert sweep("ray_local") == []
    custom.delete_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters", cluster["metadata"]["name"])
    wait_until_empty(core, custom, namespace)
