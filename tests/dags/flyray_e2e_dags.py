"""DAGs for the end-to-end tests on the real Airflow stack and the KubeRay control plane: operator tasks,
and ``@task.ray`` functions (a result on KubeRay, an exception on the local backend)."""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_flyray import FlyteRayOperator, HeadNodeConfig, RayJobConfig

START = pendulum.datetime(2026, 1, 1, tz="UTC")
HEAD = RayJobConfig(
    head_node_config=HeadNodeConfig(
        requests={"cpu": "1", "memory": "1Gi"}, ray_start_params={"num-cpus": "1", "object-store-memory": "100000000"}
    )
)
TICKS = "bash -c 'for i in $(seq {{ params.seconds }}); do echo tick $i; sleep 1; done; echo FLYRAY_RESULT ticked'"


def kube_task(dag_id: str, **kwargs) -> DAG:
    with DAG(dag_id, schedule=None, start_date=START, catchup=False, params={"seconds": 30}) as dag:
        FlyteRayOperator(
            task_id="job",
            entrypoint=kwargs.pop("entrypoint", TICKS),
            ray_job_config=HEAD,
            ray_conn_id="ray_kube",
            deferrable=True,
            poll_interval=2,
            startup_timeout=240,
            **kwargs,
        )
    return dag


# A job that itself runs 10 s, for the latency split.
kube_task("e2e_kube_10s", entrypoint="bash -c 'sleep 10; echo FLYRAY_RESULT slept'")
# Long enough to open the UI and the Ray dashboard in a browser while it runs.
kube_task("e2e_kube_ui", entrypoint="bash -c 'for i in $(seq 60); do echo tick $i; sleep 1; done'")


# @task.ray on KubeRay (a transient cluster as the stack's ServiceAccount): its value read through the REST API.
with DAG(
    "e2e_decorator_kube",
    schedule=None,
    start_date=START,
    catchup=False,
    params={"n": 5},
    render_template_as_native_obj=True,
):

    @task.ray(task_id="job", ray_conn_id="ray_kube", ray_job_config=HEAD, poll_interval=2, startup_timeout=240)
    def squares_on_kuberay(n: int) -> dict[str, Any]:
        import socket

        import ray

        @ray.remote
        def square(x: int) -> int:
            return x * x

        return {"squares": ray.get([square.remote(i) for i in range(n)]), "host": socket.gethostname()}

    squares_on_kuberay("{{ params.n }}")


# @task.ray raising on the local backend: the remote traceback (this file's lines) in the task log.
LOCAL = RayJobConfig(
    head_node_config=HeadNodeConfig(ray_start_params={"num-cpus": "1", "object-store-memory": "100000000"})
)
with DAG("e2e_decorator_raises", schedule=None, start_date=START, catchup=False, default_args={"retries": 0}):

    @task.ray(task_id="job", ray_conn_id="ray_local", ray_job_config=LOCAL, poll_interval=1)
    def raises_remotely(divisor: int) -> float:
        print("E2E BEFORE THE RAISE")
        return 1 / divisor

    raises_remotely(0)
