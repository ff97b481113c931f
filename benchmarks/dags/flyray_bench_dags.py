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

# One task on a transient RayCluster, as the direct API server (real-path latency) ...
with DAG(
    "bench_transient",
    schedule=None,
    start_date=START,
    catchup=False,
    params={"entrypoint": SLEEP.format(seconds=5)},
):
    FlyteRayOperator(
        task_id="job",
        entrypoint="{{ params.entrypoint }}",
        ray_job_config=HEAD,
        ray_conn_id="ray_bench",
        deferrable=True,
    )

# ... and through the counting API proxy, with the dashboard reached through the API server (API economy).
with DAG(
    "bench_econ",
    schedule=None,
    start_date=START,
    catchup=False,
    params={"entrypoint": SLEEP.format(seconds=60)},
):
    FlyteRayOperator(
        task_id="job",
        entrypoint="{{ params.entrypoint }}",
        ray_job_config=HEAD,
        ray_conn_id="ray_econ",
        deferrable=True,
    )

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
