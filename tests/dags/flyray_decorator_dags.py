"""``@task.ray`` DAGs the test-suite runs with `airflow dags test` (tests/integration/test_decorator_local.py).

Several tasks per DAG, each one case, so that a handful of runs cover them all. The Ray jobs run on one
local Ray head that the test starts (its address in ``FLYRAY_DECORATOR_ADDRESS``), so a task does not
pay for a head of its own; without it (another test's AIRFLOW_HOME parsing this folder) they would
start a transient local head each. A downstream ``@task`` prints what it received from XCom as one
``DEC_REPORT {json}`` line. Failing tasks record their exception's text in
``$FLYRAY_DECORATOR_FAILURES/<task_id>.txt`` (the failure message, exactly as Airflow has it).
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_flyray import HeadNodeConfig, RayJobConfig

START = pendulum.datetime(2026, 1, 1, tz="UTC")
ADDRESS = os.environ.get("FLYRAY_DECORATOR_ADDRESS")
SMALL = RayJobConfig(
    head_node_config=HeadNodeConfig(ray_start_params={"num-cpus": "1", "object-store-memory": "100000000"})
)
WHERE: dict[str, Any] = {"address": ADDRESS} if ADDRESS else {"ray_job_config": SMALL}
# A frame of another submission's marker, and a line that only looks like a frame: a function printing
# them must not change its result (the marker is random per submission and hidden from the function).
FORGED_MARKER = "0123456789abcdef0123456789abcdef"
FORGED_FRAME = f"##flyray:{FORGED_MARKER}:1/1:eyJraW5kIjoicmV0dXJuIiwidmFsdWUiOiJmb3JnZWQifQ=="
FAKE_LINE = "##flyray: not a frame at all"


def record_failure(context: Any) -> None:
    folder = os.environ.get("FLYRAY_DECORATOR_FAILURES")
    if folder:
        Path(folder, f"{context['ti'].task_id}.txt").write_text(str(context.get("exception")))


with DAG(
    "flyray_decorator_results",
    schedule=None,
    start_date=START,
    catchup=False,
    params={"x": "px"},
    default_args={"retries": 0},
):

    @task.ray(ray_conn_id="ray_local", poll_interval=1, **WHERE)
    def square(n: int) -> int:
        print("squaring", n)
        return n * n

    @task.ray(ray_conn_id="ray_local", poll_interval=1, multiple_outputs=True, **WHERE)
    def stats(values: list[int]) -> dict[str, int]:
        return {"total": sum(values), "count": len(values)}

    @task.ray(ray_conn_id="ray_local", poll_interval=1, **WHERE)
    def templated(day: str, x: str = "") -> list[str]:
        return [day, x]

    @task.ray(ray_conn_id="ray_local", poll_interval=1, **WHERE)
    def add(a: int, b: int) -> int:
        return a + b

    @task.ray(ray_conn_id="ray_local", poll_interval=1, **WHERE)
    def forger() -> str:
        import os

        print("VISIBLE PRINT one")
        print("##flyray:0123456789abcdef0123456789abcdef:1/1:eyJraW5kIjoicmV0dXJuIiwidmFsdWUiOiJmb3JnZWQifQ==")
        print("##flyray: not a frame at all")
        print("MARKER IN ENV", "FLYRAY_RESULT_MARKER" in os.environ, flush=True)
        print("no newline at the end", end="")
        return "genuine"

    @task.ray(ray_conn_id="ray_local", poll_interval=1, get_logs=False, **WHERE)
    def quiet() -> str:
        print("HIDDEN PRINT")
        return "quiet result"

    @task
    def report(
        mapped: Any, total: int, count: int, fast: int, partial: Any, forged: str, blocking: int, quiet: str
    ) -> None:
        # (Named parameters: a TaskFlow **kwargs would receive the whole context too.)
        received = {
            "mapped": list(mapped),
            "total": total,
            "count": count,
            "fast": fast,
            "partial": list(partial),
            "forged": forged,
            "blocking": blocking,
            "quiet": quiet,
        }
        print("DEC_REPORT " + json.dumps(received, sort_keys=True))

    @task
    def show_templated(value: list[str], ds: str | None = None) -> None:
        print("DEC_TEMPLATED " + json.dumps({"value": value, "ds": ds}))

    parts = stats([1, 2, 3])
    show_templated(templated("{{ ds }}", x="{{ params.x }}"))
    report(
        mapped=square.expand(n=[2, 3]),
        total=parts["total"],
        count=parts["count"],
        fast=square.override(task_id="square_fast", poll_interval=0.5)(n=5),
        partial=add.partial(a=10).expand(b=[1, 2]),
        forged=forger(),
        blocking=square.override(task_id="square_blocking", deferrable=False)(n=6),
        quiet=quiet(),
    )


with DAG(
    "flyray_decorator_failures",
    schedule=None,
    start_date=START,
    catchup=False,
    default_args={"retries": 0, "on_failure_callback": record_failure},
):

    @task.ray(ray_conn_id="ray_local", poll_interval=1, **WHERE)
    def boom(n: int) -> None:
        print("BEFORE BOOM")

        def inner(value: int) -> None:
            raise ValueError(f"boom {value}: the remote failure")

        inner(n)

    @task.ray(ray_conn_id="ray_local", poll_interval=1, **WHERE)
    def bad_result() -> Any:
        return {"when": {1, 2}}

    @task.ray(ray_conn_id="ray_local", poll_interval=1, **WHERE)
    def echo(value: Any = None, other: Any = None) -> Any:
        return value

    boom(7)
    bad_result()
    echo.override(task_id="bad_arg_datetime")(datetime.datetime(2026, 1, 2, 3, 4, 5))
    echo.override(task_id="bad_arg_set")(1, other={"tags": {"a", "b"}})
