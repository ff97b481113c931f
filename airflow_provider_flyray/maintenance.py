"""The maintenance DAG: sweeps idle pool clusters on a schedule, so ``idle_ttl`` holds without traffic.

Put two lines in a file of the DAGs folder (``dags/example_flyray_pool_maintenance.py`` does)::

    from airflow_provider_flyray.maintenance import pool_maintenance_dag

    dag = pool_maintenance_dag(ray_conn_id="ray_default", namespaces=["ray"])

An idle pool cluster is then gone within its ``idle_ttl`` plus ``every`` (plus the task's own start-up);
one whose last holder was killed, within ``lease_seconds`` more.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_flyray.operators.ray_pool import RaySweepPoolsOperator

DEFAULT_EVERY = timedelta(minutes=5)


def pool_maintenance_dag(
    *,
    dag_id: str = "flyray_pool_maintenance",
    ray_conn_id: str = "ray_default",
    namespaces: Sequence[str | None] = (None,),
    every: timedelta = DEFAULT_EVERY,
) -> DAG:
    """A DAG sweeping the pool clusters of ``namespaces`` (None: the connection's) every ``every``."""
    with DAG(
        dag_id=dag_id,
        schedule=every,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        tags=["flyray", "maintenance"],
        doc_md=__doc__,
    ) as dag:
        for namespace in namespaces:
            RaySweepPoolsOperator(
                task_id=f"sweep_{namespace or 'default'}" if len(namespaces) > 1 else "sweep_pools",
                ray_conn_id=ray_conn_id,
                namespace=namespace,
                retries=0,
                execution_timeout=timedelta(minutes=5),
            )
    return dag
