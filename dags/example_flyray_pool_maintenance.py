"""Deletes idle pool clusters on a schedule (see ``example_flyray_pool.py``), every 5 minutes.

Without it, an idle pool cluster is deleted by the next task that acquires or releases a pool in its
namespace; with it, within the pool's ``idle_ttl`` plus 5 minutes whatever else runs.
"""

from __future__ import annotations

from airflow_provider_flyray.maintenance import pool_maintenance_dag

dag = pool_maintenance_dag(dag_id="example_flyray_pool_maintenance", ray_conn_id="ray_default")
