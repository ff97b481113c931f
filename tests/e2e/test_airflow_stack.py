"""End to end on a real Airflow stack (scheduler, triggerer, api-server, dag-processor; LocalExecutor):
the local backend and the KubeRay backend on the control plane, links while deferred and after, the
task log and XCom. The lifecycle under faults (triggerer restart, user kill, execution_timeout...) is
the fault matrix in tests/faults."""

from __future__ import annotations

import time
import urllib.request

import pytest

from airflow_provider_flyray.naming import MANAGED_BY_LABEL
from tests.stack import AirflowStack

pytestmark = [pytest.mark.kube, pytest.mark.airflow, pytest.mark.ray]


def wait_for_state(stack: AirflowStack, dag_id: str, run_id: str, states: set[str], timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        ti = stack.task_instance(dag_id, run_id, "job" if dag_id.startswith("e2e_") else ti_name(dag_id))
        if ti["state"] in states:
            return ti
        assert time.monotonic() < deadline, f"{dag_id} task still {ti['state']}"
        time.sleep(0.5)


def ti_name(dag_id: str) -> str:
    return {"example_flyray_local": "estimate_pi", "example_flyray_kuberay": "train"}.get(dag_id, "job")


def clusters(custom, namespace: str, dag_id: str) -> list[dict]:
    items = custom.list_namespaced_custom_object(
        "ray.io", "v1", namespace, "rayclusters", label_selector=f"dag_id={dag_id}"
    )["items"]
    return [c for c in items if c["metadata"]["labels"].get(MANAGED_BY_LABEL)]


def pods_of(core, namespace: str, cluster: str) -> list:
    return core.list_namespaced_pod(namespace, label_selector=f"ray.io/cluster={cluster}").items


def wait_gone(custom, core, namespace: str, dag_id: str, timeout: float = 30) -> float:
    started = time.monotonic()
    while True:
        live = clusters(custom, namespace, dag_id)
        pods = core.list_namespaced_pod(namespace, label_selector=f"dag_id={dag_id}").items
        if not live and not pods:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, (
            f"left behind: {[c['metadata']['name'] for c in live]} / {len(pods)} pods"
        )
        time.sleep(0.5)


def read_when_up(url: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return urllib.request.urlopen(url, timeout=10).read().decode()
        except OSError:
            assert time.monotonic() < deadline, f"{url} never answered"
            time.sleep(0.5)


def test_local_backend_on_real_airflow(stack):
    dag_id, task_id = "example_flyray_local", "estimate_pi"
    run_id = stack.trigger(dag_id)
    deferred = wait_for_state(stack, dag_id, run_id, {"deferred", "success", "failed"})
    assert deferred["state"] == "deferred", deferred
    links = stack.links(dag_id, run_id, task_id)["extra_links"]
    assert links["Ray Dashboard"].startswith("http://127.0.0.1:")
    assert links["Ray Job"] == links["Ray Dashboard"] + f"/#/jobs/{links['Ray Job'].rsplit('/', 1)[1]}"
    # The button is there before the head has finished starting; the page answers a few seconds later.
    assert "Ray Dashboard" in read_when_up(links["Ray Dashboard"])
    assert stack.wait_for_run(dag_id, run_id) == "success"
    log = stack.task_log(dag_id, run_id, task_id)
    assert "FLYRAY_RESULT pi is about 3." in log, log[-3000:]
    result = stack.xcom(dag_id, run_id, task_id)
    assert result["status"] == "SUCCEEDED" and result["job_id"].endswith("-try1")
    assert stack.links(dag_id, run_id, task_id)["extra_links"] == links


def test_kuberay_example_on_real_airflow(stack, custom, core, e2e_namespace, kube_proxy):
    dag_id, task_id = "example_flyray_kuberay", "train"
    run_id = stack.trigger(dag_id)
    assert wait_for_state(stack, dag_id, run_id, {"deferred", "success", "failed"})["state"] == "deferred"
    links = stack.links(dag_id, run_id, task_id)["extra_links"]
    (cluster,) = clusters(custom, e2e_namespace, dag_id)
    name = cluster["metadata"]["name"]
    expected = f"{kube_proxy.url}/api/v1/namespaces/{e2e_namespace}/services/{name}-head-svc:dashboard/proxy"
    assert links["Ray Dashboard"] == expected
    assert links["Ray Job"].startswith(expected + "/#/jobs/")
    assert stack.wait_for_run(dag_id, run_id, timeout=400) == "success"
    log = stack.task_log(dag_id, run_id, task_id)
    # The job really ran on that cluster: 2 Ray nodes, tasks on the head and worker pods of `name`.
    assert "FLYRAY_RESULT alive nodes: 2" in log, log[-3000:]
    assert f"{name}-head" in log and f"{name}-cpu-worker" in log
    result = stack.xcom(dag_id, run_id, task_id)
    assert result["cluster_name"] == name and result["namespace"] == e2e_namespace and result["status"] == "SUCCEEDED"
    assert stack.links(dag_id, run_id, task_id)["extra_links"] == links
    wait_gone(custom, core, e2e_namespace, dag_id)


# Triggerer restart, user kill and execution_timeout while deferred are rows 3-5 of the fault matrix
# (tests/faults/test_matrix.py), with the other failure scenarios.
