"""DAGs of the benchmarks (python -m benchmarks): copied into the benchmark Airflow stack's dags folder.

The job's command comes from the run's conf (``params.entrypoint``), so one DAG serves every job shape.
Poll interval and every other knob are the provider's defaults: these are the figures a user gets.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_flyray import FlyteRayOperator, HeadNodeConfig, RayJobConfig

START = pendulum.datetime(2026, 1, 1, tz="UTC")
SLEEP = "python -c \"import time; time.sleep({seconds}); print('done')\""
HEAD = RayJobConfig(
    head_node_config=HeadNodeConfig(
        requests={"cpu": "1", "memory": "1Gi"}, ray_start_params={"num-cpus": "1", "object-store-memory": "100000000"}
    )
)
SHARED_JOBS = 20


def one_task(dag_id: str, conn_id: str, job_seconds: int) -> DAG:
    """One task on a transient RayCluster, its job given by the run's conf."""
    with DAG(
        dag_id, schedule=None, start_date=START, catchup=False, params={"entrypoint": SLEEP.format(seconds=job_seconds)}
    ) as dag:
        FlyteRayOperator(
            task_id="job",
            entrypoint="{{ params.entrypoint }}",
            ray_job_config=HEAD,
            ray_conn_id=conn_id,
            deferrable=True,
        )
    return dag


# Through the API server directly (real-path latency) and through the counting API proxy, with the
# dashboard reached through the API server (API economy).
one_task("bench_transient", "ray_bench", 5)
one_task("bench_econ", "ray_econ", 60)

# SHARED_JOBS light jobs watched at once on ONE existing RayCluster (created and deleted by the benchmark).
with DAG(
    "bench_shared",
    schedule=None,
    start_date=START,
    catchup=False,
    max_active_tasks=SHARED_JOBS,
    params={"cluster": "", "seconds": 30},
):
    FlyteRayOperator.partial(
        task_id="job",
        cluster_name="{{ params.cluster }}",
        entrypoint_num_cpus=0.1,
        ray_conn_id="ray_bench",
        deferrable=True,
    ).expand(entrypoint=[SLEEP.format(seconds="{{ params.seconds }}")] * SHARED_JOBS)
