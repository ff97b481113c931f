"""Dynamic task mapping: one Ray job (and one transient cluster) per mapped entrypoint.

Uses the local backend so it runs anywhere; point ``ray_conn_id`` at a KubeRay connection and each
mapped task gets its own RayCluster, named from its map index.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_flyray import FlyteRayOperator, HeadNodeConfig, RayJobConfig

with DAG(
    dag_id="example_flyray_mapped",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "ray"],
):
    FlyteRayOperator.partial(
        task_id="square",
        ray_conn_id="ray_local",
        ray_job_config=RayJobConfig(
            head_node_config=HeadNodeConfig(ray_start_params={"num-cpus": "1", "object-store-memory": "100000000"})
        ),
        deferrable=True,
        poll_interval=2,
    ).expand(
        entrypoint=[
            f"python -c \"import ray; ray.init(); print('FLYRAY_RESULT', ray.get(ray.remote(lambda x: x * x).remote({n})))\""
            for n in (2, 3)
        ]
    )
