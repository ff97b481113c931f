"""The seed's example on KubeRay: ``@task.ray`` on a transient RayCluster with a worker group named
``test-group``, and the same function on an existing RayCluster (``cluster_name``, from the params).

Needs a ``flyray`` connection ``ray_default`` that reaches a Kubernetes cluster running the KubeRay
operator (see the README). The function is the one of ``example_flyray_decorator``, unchanged.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_flyray import HeadNodeConfig, RayJobConfig, WorkerNodeConfig

SMALL = {"cpu": "1", "memory": "1Gi"}
RAY_CONFIG = RayJobConfig(
    head_node_config=HeadNodeConfig(
        requests=SMALL, ray_start_params={"num-cpus": "1", "object-store-memory": "100000000"}
    ),
    worker_node_config=[
        WorkerNodeConfig(
            group_name="test-group",
            replicas=1,
            requests=SMALL,
            ray_start_params={"num-cpus": "1", "object-store-memory": "100000000"},
        )
    ],
)


def ray_squares(n: int) -> list[int]:
    import ray

    @ray.remote
    def f(x: int) -> int:
        return x * x

    futures = [f.remote(i) for i in range(n)]
    return ray.get(futures)


with DAG(
    dag_id="example_flyray_decorator_kuberay",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"n": 5, "cluster_name": "", "namespace": ""},
    render_template_as_native_obj=True,
    tags=["example", "ray", "kuberay"],
):
    squares = task.ray(ray_squares, ray_job_config=RAY_CONFIG, ray_conn_id="ray_default", poll_interval=2)(
        "{{ params.n }}"
    )

    @task.ray(ray_conn_id="ray_default", poll_interval=2)
    def check_on_existing(expected: list[int], n: int) -> dict[str, object]:
        """Runs where params.cluster_name says (skipped when it is empty)."""
        import ray

        ray.init()
        result = {"same": expected == [i * i for i in range(n)], "cpus": ray.cluster_resources().get("CPU")}
        print("FLYRAY_RESULT on the existing cluster:", result)
        return result

    @task
    def report(values: list[int]) -> None:
        print("FLYRAY_RESULT squares:", values)

    @task.short_circuit
    def has_existing_cluster(name: str) -> bool:
        return bool(name)

    existing = check_on_existing.override(
        cluster_name="{{ params.cluster_name or None }}", namespace="{{ params.namespace or None }}"
    )(squares, "{{ params.n }}")
    has_existing_cluster("{{ params.cluster_name }}") >> existing
    report(squares)
