"""Is ``[flyray] min_deferral_seconds`` still needed? Tasks failed by Airflow's deferral race
(apache/airflow#72716) with the metadata DB in SQLite and in PostgreSQL (measures and prints).

    .venv/bin/python -m benchmarks.deferral_race [--tasks 30] [--runs 3] [--min-deferral 0 8]
        [--databases sqlite postgres]

The race: a deferred task's worker exits and the executor reports "success" for that try; if the trigger
fires and the resumed attempt is already RUNNING before the scheduler has drained that stale event, the
scheduler logs a "state mismatch" and fails the task, without the job's reason. A trigger that fires
about a second after deferral is what opens that window, so every task here runs ``true`` on one running
local Ray head (``address=``): its trigger submits, sees the job end at once, and fires (after
``min_deferral_seconds``, which delays the event; 0 turns it off). One real Airflow stack (scheduler,
triggerer, api-server, dag-processor; LocalExecutor, parallelism 8) per (database, min_deferral_seconds),
``--runs`` DAG runs of ``--tasks`` mapped tasks each. Per configuration: tasks failed, the scheduler's
"state mismatch" lines, and the median run wall time.

Writes benchmarks/results/deferral-race-<date>.json.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import BENCH_DAGS, loadavg, machine_facts, today, write_result
from tests.infra.postgres import PostgresServer, postgres_server
from tests.support.airflow_runs import airflow_stack

RACE_DAGS = BENCH_DAGS / "flyray_race_bench_dags.py"
DAG_ID = "bench_deferral_race"
# How Airflow's scheduler words the race (scheduler_job_runner.process_executor_events).
MISMATCH = "but the task instance's state attribute is"


def one_config(
    database: str, min_deferral: float, address: str, tasks: int, runs: int, postgres: PostgresServer | None
) -> dict[str, Any]:
    env = {
        "AIRFLOW__FLYRAY__MIN_DEFERRAL_SECONDS": str(min_deferral),
        "AIRFLOW__CORE__PARALLELISM": "8",
        "FLYRAY_RACE_ADDRESS": address,
        "FLYRAY_RACE_TASKS": str(tasks),
    }
    database_url = None
    if database == "postgres":
        assert postgres is not None
        database_url = postgres.create_database(f"race_{int(min_deferral * 10)}_{int(time.time())}")
    home = Path(tempfile.mkdtemp(prefix="flyray-bench-race-"))
    rows = []
    try:
        with airflow_stack(home, [RACE_DAGS], env, database_url) as stack:
            for _ in range(runs):
                started = time.monotonic()
                run_id = stack.trigger(DAG_ID)
                state = stack.wait_for_run(DAG_ID, run_id, timeout=1200, poll=1)
                wall = time.monotonic() - started
                listing = stack.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances?limit=1000")
                states = collections.Counter(str(ti["state"]) for ti in listing["task_instances"])
                rows.append({"run_state": state, "wall": round(wall, 1), "states": dict(states)})
                print(f"{database} min_deferral={min_deferral}: {rows[-1]}", flush=True)
            scheduler_log = (home / "logs" / "scheduler.log").read_text(errors="replace")
    finally:
        shutil.rmtree(home, ignore_errors=True)
    failed = sum(r["states"].get("failed", 0) for r in rows)
    return {
        "database": database,
        "min_deferral_seconds": min_deferral,
        "tasks": tasks * runs,
        "failed": failed,
        "state_mismatch_lines": scheduler_log.count(MISMATCH),
        "median_run_wall": statistics.median(r["wall"] for r in rows),
        "runs": rows,
        "loadavg": loadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--min-deferral", type=float, nargs="+", default=[0.0, 8.0])
    parser.add_argument("--databases", nargs="+", choices=["sqlite", "postgres"], default=["sqlite", "postgres"])
    args = parser.parse_args()

    from airflow_provider_flyray.backends.local_process import start_local_cluster, stop_local_cluster
    from tests.support.waits import wait_for_dashboard

    results = []
    ref = start_local_cluster("bench-race", num_cpus=8, object_store_memory=100_000_000)
    assert ref.address is not None
    try:
        wait_for_dashboard(ref.address)
        with postgres_server() as postgres:
            for min_deferral in args.min_deferral:
                for database in args.databases:
                    results.append(one_config(database, min_deferral, ref.address, args.tasks, args.runs, postgres))
                    summary = {k: v for k, v in results[-1].items() if k not in ("runs", "loadavg")}
                    print(f"done: {summary}", flush=True)
    finally:
        stop_local_cluster(ref)
    lines = [
        "| database | min_deferral_seconds | tasks | failed | state-mismatch lines | median run wall (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        cells = [r["database"], f"{r['min_deferral_seconds']:g}", r["tasks"], r["failed"], r["state_mismatch_lines"]]
        lines.append("| " + " | ".join(map(str, cells)) + f" | {r['median_run_wall']:.1f} |")
    table = "\n".join(lines)
    print(table)
    command = (
        f"python -m benchmarks.deferral_race --tasks {args.tasks} --runs {args.runs} --min-deferral "
        + " ".join(f"{m:g}" for m in args.min_deferral)
        + " --databases "
        + " ".join(args.databases)
    )
    path = write_result(
        f"deferral-race-{today()}.json",
        {"command": command, "machine": machine_facts(), "results": results, "table": table},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
