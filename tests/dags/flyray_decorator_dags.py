"""@task.ray DAGs for tests/integration/test_decorator_local.py (local backend, connection ray_local)."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

START = pendulum.datetime(2026, 1, 1, tz="UTC")

with DAG(
    "flyray_decorator_outputs",
    schedule=None,
    start_date=START,
    catchup=False,
    params={"x": 3},
    render_template_as_native_obj=True,
):

    @task.ray(ray_conn_id="ray_local", multiple_outputs=True, poll_interval=2)
    def stats(values: list[int], label: str) -> dict[str, object]:
        print("computing", label)
        # A forged frame (wrong marker) is shown as a line, and does not change the result.
        print("##flyray:" + "0" * 32 + ":1/1:eyJraW5kIjoicmV0dXJuIiwidmFsdWUiOjF9")
        return {"total": sum(values), "label": label}

    @task
    def show(total: int, label: str) -> None:
        print("FLYRAY_RESULT total", total, "label", label)

    out = stats([1, 2, "{{ params.x }}"], "run-{{ params.x }}")
    show(out["total"], out["label"])

with DAG("flyray_decorator_raises", schedule=None, start_date=START, catchup=False):

    @task.ray(ray_conn_id="ray_local", poll_interval=2, deferrable=False)
    def boom(n: int) -> int:
        print("about to fail")
        raise ValueError(f"bad n={n}")

    boom(7)
