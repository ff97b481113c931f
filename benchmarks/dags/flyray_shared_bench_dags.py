"""The same ten jobs of one DAG run on ten transient RayClusters, on one pool cluster (``reuse=``) and on
one cluster made by a setup task (``ray_cluster_for_run``): benchmarks/shared_clusters.py compares them."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_flyray import FlyteRayOperator, HeadNodeConfig, RayJobConfig, ReusePolicy, ray_cluster_for_run
from airflow_provider_flyray.maintenance import pool_maintenance_dag

START = pendulum.datetime(2026, 1, 1, tz="UTC")
TASKS = 10
# On the 2-core test machine, ten and also four Ray heads starting at once timed out in `ray start`
# ("The current node timed out during startup"), so by default every mode runs its ten tasks two at a
# time: through an Airflow pool of 2 slots that deferred tasks hold too (benchmarks/shared_clusters.py
# creates it and sets its slots per mode, --at-once / --transient-at-once; max_active_tasks alone does not
# count deferred tasks).
AT_ONCE = 2
POOL = "bench_two_at_once"
# Long enough for the pool to outlive the gap between one task's release and the next one's acquire (with
# idle_ttl=0 a waiting task found the cluster already deleted: 5 starts instead of 1).
POOL_IDLE_TTL = 30
JOB = "python -c \"import time; time.sleep(5); print('done')\""
# Small enough that ten fit on the control plane's node at once (8 CPUs, 16 Gi).
CONFIG = RayJobConfig(
    head_node_config=HeadNodeConfig(
        requests={"cpu": "500m", "memory": "1Gi"},
        ray_start_params={"num-cpus": "2", "object-store-memory": "100000000"},
    )
)
COMMON = {"task_id": "job", "ray_conn_id": "ray_bench", "deferrable": True, "pool": POOL}

with DAG("bench_ten_transient", schedule=None, start_date=START, catchup=False, max_active_tasks=10):
    FlyteRayOperator.partial(ray_job_config=CONFIG, **COMMON).expand(entrypoint=[JOB] * TASKS)

with DAG("bench_ten_pool", schedule=None, start_date=START, catchup=False, max_active_tasks=10):
    FlyteRayOperator.partial(
        ray_job_config=CONFIG, reuse=ReusePolicy(idle_ttl=POOL_IDLE_TTL, scope="dag_run"), **COMMON
    ).expand(entrypoint=[JOB] * TASKS)

# What deletes the pool cluster once it has been idle for POOL_IDLE_TTL (the benchmark triggers it then).
pool_maintenance_dag(dag_id="bench_pool_maintenance", ray_conn_id="ray_bench")

with (
    DAG("bench_ten_run_cluster", schedule=None, start_date=START, catchup=False, max_active_tasks=10),
    ray_cluster_for_run("ray_cluster", ray_conn_id="ray_bench", ray_job_config=CONFIG) as cluster,
):
    FlyteRayOperator.partial(cluster=cluster, **COMMON).expand(entrypoint=[JOB] * TASKS)
