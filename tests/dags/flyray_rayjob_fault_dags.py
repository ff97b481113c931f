"""DAGs of the RayJob-mode fault rows (tests/faults/test_rayjob_airflow_lost.py), run by a real Airflow
against the control plane: a job that ticks for ``params.seconds`` on a RayJob whose cluster KubeRay
makes, deletes after the job (``shutdownAfterJobFinishes``) and stops at ``activeDeadlineSeconds``."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from airflow_provider_flyray import FlyteRayOperator, HeadNodeConfig, RayJobConfig

HEAD = HeadNodeConfig(
    requests={"cpu": "1", "memory": "1Gi"}, ray_start_params={"num-cpus": "1", "object-store-memory": "100000000"}
)
TICKS = "bash -c 'for i in $(seq {{ params.seconds }}); do echo tick $i; sleep 1; done; echo RAYJOB-LOST done'"

with DAG(
    dag_id="fault_rayjob_airflow_lost",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"seconds": 45},
):
    FlyteRayOperator(
        task_id="job",
        ray_conn_id="ray_kube",
        entrypoint=TICKS,
        ray_job_config=RayJobConfig(head_node_config=HEAD),
        kuberay_resource="RayJob",
        execution_timeout=timedelta(minutes=10),
        deferrable=True,  # the triggerer follows the job (the default is [operators] default_deferrable)
        poll_interval=2,
        retries=0,
    )
