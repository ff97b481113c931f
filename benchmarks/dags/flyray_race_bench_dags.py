"""The DAG of benchmarks/deferral_race.py: many tasks whose Ray job ends at once, so that each trigger
fires about a second after its task deferred (the window of apache/airflow#72716), on one running local
Ray head (``address=``, given by the benchmark in FLYRAY_RACE_ADDRESS)."""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG

from airflow_provider_flyray import FlyteRayOperator

TASKS = int(os.environ.get("FLYRAY_RACE_TASKS", "30"))

with DAG(
    "bench_deferral_race",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_tasks=64,
):
    FlyteRayOperator.partial(
        task_id="job",
        address=os.environ.get("FLYRAY_RACE_ADDRESS", "http://127.0.0.1:8265"),
        ray_conn_id="ray_local",
        deferrable=True,
        retries=0,
    ).expand(entrypoint=["true"] * TASKS)
