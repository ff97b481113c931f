"""One Ray cluster for the tasks of a DAG run: created by a setup task, deleted by its teardown.

``ray_cluster_for_run`` adds a ``RayCreateClusterOperator`` (setup: creates the cluster, waits until it
is ready, returns it as its XCom) and a ``RayDeleteClusterOperator`` (teardown) around the tasks of the
block; each task runs its Ray job on that cluster (``cluster=``) instead of starting its own. The
teardown deletes the cluster when the tasks succeed, when they fail and when the run is marked failed.
With a ``kubernetes`` connection the cluster is a RayCluster built from ``ray_job_config``; with the
``local`` one (``ray_local``, used here), a Ray head on the Airflow machine.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_flyray import FlyteRayOperator, HeadNodeConfig, RayJobConfig, ray_cluster_for_run

RAY_CONFIG = RayJobConfig(
    head_node_config=HeadNodeConfig(requests={"cpu": "1"}, ray_start_params={"object-store-memory": "100000000"})
)
HEAD_ID = (
    "python -c \"import ray; ray.init(); print('RUN_CLUSTER head', "
    "[n['NodeID'] for n in ray.nodes() if n['Alive']][0])\""
)

with (
    DAG(
        dag_id="example_flyray_run_cluster",
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        tags=["example", "ray"],
    ),
    ray_cluster_for_run("ray_cluster", ray_conn_id="ray_local", ray_job_config=RAY_CONFIG) as cluster,
):

    @task.ray(ray_conn_id="ray_local", cluster=cluster, poll_interval=1)
    def head_node() -> str:
        import ray

        ray.init()
        return next(n["NodeID"] for n in ray.nodes() if n["Alive"])

    @task
    def compare(first: str, second: str) -> None:
        print("RUN_CLUSTER same head", first == second, first)

    compare(head_node.override(task_id="first")(), head_node.override(task_id="second")())
    FlyteRayOperator(task_id="entrypoint", entrypoint=HEAD_ID, ray_conn_id="ray_local", cluster=cluster)
