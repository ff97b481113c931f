"""DAGs the test-suite runs with `airflow dags test` (not examples: they fail on purpose)."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from airflow_provider_flyray import FlyteRayOperator, HeadNodeConfig, RayJobConfig

SMALL = RayJobConfig(
    head_node_config=HeadNodeConfig(ray_start_params={"num-cpus": "1", "object-store-memory": "100000000"})
)
START = pendulum.datetime(2026, 1, 1, tz="UTC")

with DAG("flyray_failing_job", schedule=None, start_date=START, catchup=False):
    FlyteRayOperator(
        task_id="fails",
        entrypoint="python -c \"import sys; [print('context line', i) for i in range(60)]; print('FINAL WORDS'); sys.exit(3)\"",
        ray_job_config=SMALL,
        ray_conn_id="ray_local",
        deferrable=True,
        poll_interval=1,
    )

with DAG("flyray_templated", schedule=None, start_date=START, catchup=False, params={"greeting": "hello-from-params"}):
    FlyteRayOperator(
        task_id="templated",
        entrypoint="python -c \"import os; print('FLYRAY_RESULT', os.environ['GREETING'], '{{ params.greeting }}')\"",
        runtime_env={"env_vars": {"GREETING": "{{ params.greeting }}"}},
        metadata={"run": "{{ run_id }}"},
        ray_job_config=SMALL,
        ray_conn_id="ray_local",
        deferrable=True,
        poll_interval=1,
    )

with DAG("flyray_blocking", schedule=None, start_date=START, catchup=False):
    FlyteRayOperator(
        task_id="blocking",
        entrypoint="python -c \"print('FLYRAY_RESULT blocking path')\"",
        ray_job_config=SMALL,
        ray_conn_id="ray_local",
        deferrable=False,
        poll_interval=1,
    )

with DAG("flyray_timeout", schedule=None, start_date=START, catchup=False):
    FlyteRayOperator(
        task_id="too_slow",
        entrypoint="sleep 300",
        ray_job_config=SMALL,
        ray_conn_id="ray_local",
        deferrable=True,
        poll_interval=1,
        execution_timeout=timedelta(seconds=25),
    )

# deferrable=False: Airflow's own alarm used to say only "Timeout, PID: ..."; the trigger now stops the
# job and reports its last lines before the alarm, as the deferrable path does.
with DAG("flyray_blocking_timeout", schedule=None, start_date=START, catchup=False):
    FlyteRayOperator(
        task_id="too_slow_here",
        entrypoint="python -c \"import time; print('BEFORE THE TIMEOUT', flush=True); time.sleep(300)\"",
        ray_job_config=SMALL,
        ray_conn_id="ray_local",
        deferrable=False,
        poll_interval=1,
        execution_timeout=timedelta(seconds=30),
    )

KUBE_SMALL = RayJobConfig(
    head_node_config=HeadNodeConfig(
        requests={"cpu": "1", "memory": "1Gi"}, ray_start_params={"num-cpus": "1", "object-store-memory": "100000000"}
    )
)

with DAG("flyray_kube_failing_job", schedule=None, start_date=START, catchup=False):
    FlyteRayOperator(
        task_id="fails",
        entrypoint="python -c \"import sys; print('KUBE FINAL WORDS'); sys.exit(4)\"",
        ray_job_config=KUBE_SMALL,
        ray_conn_id="ray_kube",
        deferrable=True,
        poll_interval=1,
        startup_timeout=240,
    )
