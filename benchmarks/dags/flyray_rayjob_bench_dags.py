"""DAGs of benchmarks/rayjob_mode.py: the same one-task DAG in RayCluster mode and in RayJob mode, each
on the cluster its task gets (transient), through the counting connection ``ray_counted``."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_flyray import FlyteRayOperator, HeadNodeConfig, RayJobConfig

SLEEP = "python -c \"import time; time.sleep({{ params.seconds }}); print('done')\""
HEAD = RayJobConfig(
    head_node_config=HeadNodeConfig(
        requests={"cpu": "1", "memory": "1Gi"}, ray_start_params={"num-cpus": "1", "object-store-memory": "100000000"}
    )
)

for dag_id, resource in (("bench_mode_raycluster", "RayCluster"), ("bench_mode_rayjob", "RayJob")):
    with DAG(
        dag_id,
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        params={"seconds": 5},
    ):
        FlyteRayOperator(
            task_id="job",
            entrypoint=SLEEP,
            ray_job_config=HEAD,
            ray_conn_id="ray_counted",
            kuberay_resource=resource,
            deferrable=True,
        )
