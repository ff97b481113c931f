"""DAGs of benchmarks/decorator_overhead.py: the same work as a ``@task.ray`` function and as the
equivalent entrypoint job (``python -c``), each on the local Ray head whose address the benchmark puts
in ``FLYRAY_BENCH_ADDRESS`` (no cluster start in either). Poll interval and every other knob are the
provider's defaults."""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_flyray import FlyteRayOperator

START = pendulum.datetime(2026, 1, 1, tz="UTC")
ADDRESS = os.environ.get("FLYRAY_BENCH_ADDRESS", "http://127.0.0.1:8265")
N = 200_000
# The entrypoint job does what the function does: compute, print the result (its only way out).
ENTRYPOINT = f"python -c \"print('result', sum(i * i for i in range({N})))\""

with DAG("bench_decorated", schedule=None, start_date=START, catchup=False):

    @task.ray(ray_conn_id="ray_local", address=ADDRESS)
    def work(n: int) -> int:
        return sum(i * i for i in range(n))

    work(N)

with DAG("bench_entrypoint", schedule=None, start_date=START, catchup=False):
    FlyteRayOperator(task_id="work", entrypoint=ENTRYPOINT, ray_conn_id="ray_local", address=ADDRESS)
