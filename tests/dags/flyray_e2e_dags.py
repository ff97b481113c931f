"""DAGs for the end-to-end tests on the real Airflow stack and the KubeRay control plane."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_flyray import FlyteRayOperator, HeadNodeConfig, RayJobConfig

START = pendulum.datetime(2026, 1, 1, tz="UTC")
HEAD = RayJobConfig(
    head_node_config=HeadNodeConfig(
        requests={"cpu": "1", "memory": "1Gi"}, ray_start_params={"num-cpus": "1", "object-store-memory": "100000000"}
    )
)
TICKS = "bash -c 'for i in $(seq {{ params.seconds }}); do echo tick $i; sleep 1; done; echo FLYRAY_RESULT ticked'"


def kube_task(dag_id: str, **kwargs) -> DAG:
    with DAG(dag_id, schedule=None, start_date=START, catchup=False, params={"seconds": 30}) as dag:
        FlyteRayOperator(
            task_id="job",
            entrypoint=kwargs.pop("entrypoint", TICKS),
            ray_job_config=HEAD,
            ray_conn_id="ray_kube",
            deferrable=True,
            poll_interval=2,
            startup_timeout=240,
            **kwargs,
        )
    return dag


# A job that itself runs 10 s, for the latency split.
kube_task("e2e_kube_10s", entrypoint="bash -c 'sleep 10; echo FLYRAY_RESULT slept'")
# Long enough to open the UI and the Ray dashboard in a browser while it runs.
kube_task("e2e_kube_ui", entrypoint="bash -c 'for i in $(seq 60); do echo tick $i; sleep 1; done'")
