"""End to end on a real Airflow stack (scheduler, triggerer, api-server, dag-processor; LocalExecutor):
the local backend and the KubeRay backend on the control plane, links while deferred and after, the
task log and XCom. The lifecycle under faults (triggerer restart, user kill, execution_timeout...) is
the fault matrix in tests/faults."""

from __future__ import annotations

import re

import pytest

from tests.support.airflow_runs import wait_for_state
from tests.support.leftovers import managed_clusters, wait_until_empty
from tests.support.waits import read_when_up

pytestmark = [pytest.mark.kube, pytest.mark.airflow, pytest.mark.ray]


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
    (cluster,) = managed_clusters(custom, e2e_namespace, f"dag_id={dag_id}")
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
    wait_until_empty(core, custom, e2e_namespace, f"dag_id={dag_id}", timeout=30)


def test_decorated_function_result_through_the_rest_api(stack, custom, core, e2e_namespace):
    """@task.ray on a transient KubeRay cluster (the stack's ServiceAccount): the function's return value
    is the task's XCom, read through the REST API; it ran on the task's own head pod."""
    dag_id = "e2e_decorator_kube"
    run_id = stack.trigger(dag_id, {"n": 7})
    assert stack.wait_for_run(dag_id, run_id, timeout=400) == "success"
    result = stack.xcom(dag_id, run_id, "job")
    assert result["squares"] == [0, 1, 4, 9, 16, 25, 36], result
    log = stack.task_log(dag_id, run_id, "job")
    released = re.search(rf"Released RayCluster {e2e_namespace}/([a-z0-9-]+)", log)
    assert released, log[-3000:]
    assert result["host"].startswith(released.group(1) + "-head-"), result
    assert "##flyray:" not in log  # result frames never reach the task log
    wait_until_empty(core, custom, e2e_namespace, f"dag_id={dag_id}", timeout=30)


def test_decorated_function_remote_traceback_in_the_task_log(stack):
    """@task.ray on the local backend, raising: the task fails, and its log (through the REST API) has
    the exception and the remote traceback pointing at the DAG file's line."""
    dag_id = "e2e_decorator_raises"
    run_id = stack.trigger(dag_id)
    assert stack.wait_for_run(dag_id, run_id, timeout=300) == "failed"
    assert stack.task_instance(dag_id, run_id, "job")["state"] == "failed"
    log = stack.task_log(dag_id, run_id, "job")
    dag_file = stack.dags_folder / "flyray_e2e_dags.py"
    line = next(i for i, text in enumerate(dag_file.read_text().splitlines(), 1) if "return 1 / divisor" in text)
    assert "the function raised ZeroDivisionError: division by zero" in log, log[-4000:]
    assert "--- remote traceback ---" in log
    assert f'File "{dag_file}", line {line}, in raises_remotely' in log, log[-4000:]
    assert "E2E BEFORE THE RAISE" in log
    assert "##flyray:" not in log


# Triggerer restart, user kill and execution_timeout while deferred are rows 3-5 of the fault matrix
# (tests/faults/test_matrix.py), with the other failure scenarios.
