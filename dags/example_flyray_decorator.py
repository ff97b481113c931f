"""Flyte's Ray example as an Airflow DAG: ``@task.ray`` runs a Python function as the Ray job's driver.

The function maps a Ray remote function over ``range(n)`` and returns the list, which becomes the
task's XCom. It runs unchanged on the connection's local Ray (``ray_local``: ``{"backend": "local"}``)
and on a KubeRay cluster (see ``example_flyray_decorator_kuberay``). Imports and helpers live inside
the function: only its own source is shipped to the cluster.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_flyray import HeadNodeConfig, RayJobConfig, WorkerNodeConfig

# The seed's RayJobConfig: a head and a worker group named "test-group" (a local head ignores workers).
RAY_CONFIG = RayJobConfig(
    head_node_config=HeadNodeConfig(requests={"cpu": "2"}, ray_start_params={"object-store-memory": "100000000"}),
    worker_node_config=[WorkerNodeConfig(group_name="test-group", replicas=1)],
)

with DAG(
    dag_id="example_flyray_decorator",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"n": 5},
    # "{{ params.n }}" renders to the int 5, not "5".
    render_template_as_native_obj=True,
    tags=["example", "ray"],
):

    @task.ray(ray_job_config=RAY_CONFIG, ray_conn_id="ray_local", poll_interval=2)
    def ray_squares(n: int) -> list[int]:
        import ray

        @ray.remote
        def f(x: int) -> int:
            return x * x

        futures = [f.remote(i) for i in range(n)]
        return ray.get(futures)

    @task
    def report(squares: list[int]) -> int:
        print("FLYRAY_RESULT squares:", squares)
        return sum(squares)

    report(ray_squares("{{ params.n }}"))
