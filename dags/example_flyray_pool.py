"""A pool: tasks (of this run, or of every run) share one Ray cluster, deleted after it sits idle.

``reuse=ReusePolicy(idle_ttl=..., scope=...)`` puts each task's job on its pool's RayCluster instead of a
cluster of its own. Tasks whose ``ray_job_config`` matches share the pool (the key defaults to a hash
of the config); the first one creates the cluster, the others join it, and many jobs run on it at once.
Each task holds a Lease while its job runs; once no Lease has been live for ``idle_ttl`` seconds, the
next acquire, release or run of the maintenance DAG (``example_flyray_pool_maintenance.py``) deletes it.

Pools are a Kubernetes feature: on the ``local`` connection each task starts its own head (and says so).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_flyray import HeadNodeConfig, RayJobConfig, ReusePolicy

RAY_CONFIG = RayJobConfig(
    head_node_config=HeadNodeConfig(requests={"cpu": "1"}, ray_start_params={"object-store-memory": "100000000"})
)
POOL = ReusePolicy(idle_ttl=300, scope="dag_run")

with DAG(
    dag_id="example_flyray_pool",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "ray"],
):

    @task.ray(ray_conn_id="ray_local", ray_job_config=RAY_CONFIG, reuse=POOL, poll_interval=1)
    def head_node(part: int) -> str:
        import ray

        ray.init()
        return next(n["NodeID"] for n in ray.nodes() if n["Alive"])

    @task
    def compare(heads: list[str]) -> None:
        print("POOL heads", len(heads), "distinct", len(set(heads)))

    compare(head_node.expand(part=[1, 2, 3]))
