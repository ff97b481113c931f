"""A local ``working_dir`` shipped by FlyteRayOperator (tests/integration/test_shipping_local.py).

``working_dir="shipping_project"`` is relative to this file's folder. The job runs on the head whose
address is in ``FLYRAY_SHIPPING_ADDRESS`` (one head for two runs: the second finds the package there);
without it, on a transient local head.
"""

from __future__ import annotations

import os
from typing import Any

import pendulum
from airflow.sdk import DAG

from airflow_provider_flyray import FlyteRayOperator

ADDRESS = os.environ.get("FLYRAY_SHIPPING_ADDRESS")
WHERE: dict[str, Any] = {"address": ADDRESS} if ADDRESS else {}

with DAG(
    "flyray_shipping_operator",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 0},
):
    FlyteRayOperator(
        task_id="run_project",
        entrypoint="python main.py",
        ray_conn_id="ray_local",
        runtime_env={"working_dir": "shipping_project"},
        poll_interval=1,
        **WHERE,
    )
