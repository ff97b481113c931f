"""Submit to a RayCluster that already exists (it is never created or deleted by the task)."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_flyray import FlyteRayOperator

with DAG(
    dag_id="example_flyray_existing_cluster",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"cluster_name": "shared-ray", "namespace": "default"},
    tags=["example", "ray", "kuberay"],
):
    FlyteRayOperator(
        task_id="report",
        entrypoint="python -c \"import ray; ray.init(); print('FLYRAY_RESULT', ray.cluster_resources().get('CPU'))\"",
        cluster_name="{{ params.cluster_name }}",
        namespace="{{ params.namespace }}",
        ray_conn_id="ray_default",
        deferrable=True,
        poll_interval=2,
    )
