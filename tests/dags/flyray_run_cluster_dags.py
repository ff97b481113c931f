"""A DAG run's cluster whose work fails (tests/integration/test_run_cluster_local.py): the teardown
must delete the cluster all the same. The successful case is dags/example_flyray_run_cluster.py."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_flyray import HeadNodeConfig, RayJobConfig, ray_cluster_for_run

START = pendulum.datetime(2026, 1, 1, tz="UTC")
SMALL = RayJobConfig(
    head_node_config=HeadNodeConfig(ray_start_params={"num-cpus": "1", "object-store-memory": "100000000"})
)

with (
    DAG("flyray_run_cluster_fails", schedule=None, start_date=START, catchup=False, default_args={"retries": 0}),
    ray_cluster_for_run("ray_cluster", ray_conn_id="ray_local", ray_job_config=SMALL) as cluster,
):

    @task.ray(ray_conn_id="ray_local", cluster=cluster, poll_interval=1)
    def fails() -> None:
        raise RuntimeError("the work failed")

    fails()
