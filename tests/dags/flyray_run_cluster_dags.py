"""One Ray cluster for a DAG run (tests/integration/test_run_cluster_local.py): setup, work, teardown.

``flyray_run_cluster``: two ``@task.ray`` tasks and an entrypoint task on the run's cluster (local
backend); each reports the head's node id and the cluster's job count, a downstream task compares them.
``flyray_run_cluster_fails``: the work task fails; the teardown must delete the cluster all the same.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_flyray import FlyteRayOperator, HeadNodeConfig, RayJobConfig, ray_cluster_for_run

START = pendulum.datetime(2026, 1, 1, tz="UTC")
SMALL = RayJobConfig(
    head_node_config=HeadNodeConfig(ray_start_params={"num-cpus": "1", "object-store-memory": "100000000"})
)
HEAD_ID = (
    "python -c \"import ray; ray.init(); print('RUN_CLUSTER head', "
    "[n['NodeID'] for n in ray.nodes() if n['Alive']][0])\""
)

with DAG("flyray_run_cluster", schedule=None, start_date=START, catchup=False, default_args={"retries": 0}):
    with ray_cluster_for_run("ray_cluster", ray_conn_id="ray_local", ray_job_config=SMALL) as cluster:

        @task.ray(ray_conn_id="ray_local", cluster=cluster, poll_interval=1)
        def head_node() -> str:
            import ray

            ray.init()
            return [n["NodeID"] for n in ray.nodes() if n["Alive"]][0]

        @task
        def compare(first: str, second: str) -> None:
            print("RUN_CLUSTER same head", first == second, first)

        compare(head_node.override(task_id="first")(), head_node.override(task_id="second")())
        FlyteRayOperator(task_id="entrypoint", entrypoint=HEAD_ID, ray_conn_id="ray_local", cluster=cluster)

with DAG("flyray_run_cluster_fails", schedule=None, start_date=START, catchup=False, default_args={"retries": 0}):
    with ray_cluster_for_run("ray_cluster", ray_conn_id="ray_local", ray_job_config=SMALL) as cluster:

        @task.ray(ray_conn_id="ray_local", cluster=cluster, poll_interval=1)
        def fails() -> None:
            raise RuntimeError("the work failed")

        fails()
