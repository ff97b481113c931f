"""The README demo: a Ray job on a transient local Ray cluster (no Kubernetes needed).

The connection ``ray_local`` only says ``{"backend": "local"}``; the demo command creates it.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_flyray import FlyteRayOperator, HeadNodeConfig, RayJobConfig

# Estimates pi with Ray tasks; runs unchanged on a local head or a KubeRay cluster.
ESTIMATE_PI = (
    'python -c "import ray, random; ray.init(); '
    "f = ray.remote(lambda n: sum(random.random()**2 + random.random()**2 <= 1 for _ in range(n))); "
    "n = {{ params.samples }}; hits = sum(ray.get([f.remote(n) for _ in range(4)])); "
    "print('FLYRAY_RESULT pi is about', 4 * hits / (4 * n))\""
)

with DAG(
    dag_id="example_flyray_local",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"samples": 20000},
    tags=["example", "ray"],
):
    FlyteRayOperator(
        task_id="estimate_pi",
        entrypoint=ESTIMATE_PI,
        ray_job_config=RayJobConfig(
            head_node_config=HeadNodeConfig(
                requests={"cpu": "2"}, ray_start_params={"object-store-memory": "100000000"}
            ),
            runtime_env={"env_vars": {"MODE": "demo"}},
        ),
        ray_conn_id="ray_local",
        deferrable=True,
        poll_interval=2,
    )
