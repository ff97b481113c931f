"""``@task.ray``'s overhead against the equivalent entrypoint job, and job end -> trigger event
(measures and prints; not a test).

    python -m benchmarks.decorator_overhead [--runs 5] [--trigger-runs 10]

One local Ray head (2 CPUs) for the whole run; the jobs use it by address, so no cluster start is in any
figure. Same run, interleaved (decorated, entrypoint, decorated, ...):

(a) ``airflow dags test`` of benchmarks/dags/flyray_decorator_bench_dags.py's two DAGs (the same work:
    a function returning ``sum(i*i for i in range(200000))`` vs ``python -c`` printing it), deferrable,
    default poll interval. From the operator's ``flyray timings`` line: the task's wall time
    (execute_started -> finished) and its worker-slot time (execute_started -> deferred plus resumed ->
    finished); and the ``airflow dags test`` process's wall time. Overhead = decorated - entrypoint
    (medians). Goals: wall < 0.5 s, worker slot < 0.2 s.
(b) RayJobTrigger driven directly (as tests/integration/test_decorator_trigger_local.py does), default
    poll interval (5 s): Ray's ``end_time`` to the event's ``timings.event``, p50 and p95, for a function
    job and an entrypoint job, each short (~0.1 s of work) and ~3 s long (Ray's log tail is streaming
    when it ends). Goal: p95 < 1 s for decorated tasks.

Writes benchmarks/results/decorator-overhead-<date>.json.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.common import loadavg, machine_facts, timings_from_log, today, worker_slot_seconds, write_result
from tests.support import REPO

BENCH_DAG_FILE = REPO / "benchmarks" / "dags" / "flyray_decorator_bench_dags.py"
DEFAULT_POLL = 5.0


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    items = sorted(values)
    return items[max(0, min(len(items), math.ceil(q / 100 * len(items))) - 1)]


def stats(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50": statistics.median(values),
        "p95": percentile(values, 95),
        "min": min(values),
        "max": max(values),
        "values": [round(v, 3) for v in values],
    }


# ---- (a) airflow dags test ------------------------------------------------------------------------------


def dags_runs(address: str, runs: int) -> dict[str, Any]:
    from tests.support.airflow_runs import dags_test, migrate

    home = Path(tempfile.mkdtemp(prefix="flyray-bench-decorator-"))
    dags = home / "dags"
    dags.mkdir()
    (dags / BENCH_DAG_FILE.name).write_text(BENCH_DAG_FILE.read_text())
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_RAY_LOCAL": '{"conn_type": "flyray", "extra": {"backend": "local"}}',
        "FLYRAY_BENCH_ADDRESS": address,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    migrate(env)
    rows: dict[str, list[dict[str, float]]] = {"bench_decorated": [], "bench_entrypoint": []}
    for i in range(runs + 1):  # the first pair warms up (imports, the head's worker pool): not counted
        for dag_id in rows:
            started = time.time()
            output = dags_test(dag_id, env)
            process_wall = time.time() - started
            if "state=success" not in output:
                raise RuntimeError(f"{dag_id} did not succeed:\n{output[-3000:]}")
            t = timings_from_log(output)
            row = {
                "process_wall": process_wall,
                "task_wall": t["finished"] - t["execute_started"],
                "worker_slot": worker_slot_seconds(t),
                "job": t["job_end_time"] - t["job_start_time"],
                "submit_to_job_end": t["job_end_time"] - t["submitted"],
                "job_end_to_event": t["event"] - t["job_end_time"],
                "event_to_finished": t["finished"] - t["event"],
            }
            label = "warm-up" if i == 0 else f"run {i}"
            print(f"  {label:8} {dag_id:17} " + " ".join(f"{k}={v:.2f}" for k, v in row.items()), flush=True)
            if i:
                rows[dag_id].append(row)
    result: dict[str, Any] = {}
    for dag_id, got in rows.items():
        result[dag_id] = {key: stats([r[key] for r in got]) for key in got[0]}
    dec, ent = result["bench_decorated"], result["bench_entrypoint"]
    result["overhead"] = {
        key: dec[key]["p50"] - ent[key]["p50"] for key in ("process_wall", "task_wall", "worker_slot", "job")
    }
    return result


# ---- (b) the trigger alone --------------------------------------------------------------------------------


def short_function(n: int) -> int:
    return sum(i * i for i in range(n))


def long_function(n: int) -> int:
    import time

    for step in range(30):
        print("step", step, flush=True)
        time.sleep(0.1)
    return sum(i * i for i in range(n))


SHORT_ENTRYPOINT = "python -c \"print('result', sum(i * i for i in range(200000)))\""
LONG_ENTRYPOINT = (
    "python -c \"import time\nfor s in range(30):\n    print('step', s, flush=True); time.sleep(0.1)\n"
    "print('result', sum(i * i for i in range(200000)))\""
)


def trigger_for(address: str, function: Any = None, entrypoint: str | None = None) -> Any:
    from airflow_provider_flyray.backends.address import AddressBackend
    from airflow_provider_flyray.function_call import (
        DRIVER_ENTRYPOINT,
        call_json,
        function_source,
        job_env_vars,
        new_marker,
        with_env_vars,
    )
    from airflow_provider_flyray.jobs_api import JobSubmission
    from airflow_provider_flyray.naming import TaskIdentity, job_metadata_for, submission_id_for
    from airflow_provider_flyray.triggers.ray_job import RayJobTrigger

    identity = TaskIdentity("bench", "decorator" if function else "entrypoint", uuid.uuid4().hex)
    if function is not None:
        call = call_json(function_source(function), [200_000], {})
        submission = JobSubmission(
            submission_id_for(identity),
            DRIVER_ENTRYPOINT,
            runtime_env=with_env_vars(None, job_env_vars(call, new_marker())),
            metadata=job_metadata_for(identity),
        )
    else:
        assert entrypoint is not None
        submission = JobSubmission(submission_id_for(identity), entrypoint, metadata=job_metadata_for(identity))
    return RayJobTrigger(
        ray_conn_id="ray_local",
        cluster=AddressBackend.ref_for(address).to_dict(),
        submission=submission.to_dict(),
        owner_key=identity.task_key,
        poll_interval=DEFAULT_POLL,
    )


def trigger_runs(address: str, runs: int) -> dict[str, Any]:
    from tests.support.ray_jobs import run_to_event

    kinds = {
        "decorated_short": lambda: trigger_for(address, function=short_function),
        "entrypoint_short": lambda: trigger_for(address, entrypoint=SHORT_ENTRYPOINT),
        "decorated_3s": lambda: trigger_for(address, function=long_function),
        "entrypoint_3s": lambda: trigger_for(address, entrypoint=LONG_ENTRYPOINT),
    }
    seen: dict[str, list[float]] = {k: [] for k in kinds}
    for i in range(runs + 1):
        for kind, make in kinds.items():
            event = run_to_event(make(), timeout=120)
            if event["status"] != "success":
                raise RuntimeError(f"{kind}: {event['status']} {event['reason']}")
            delay = event["timings"]["event"] - event["end_time"] / 1000
            print(f"  {'warm-up' if i == 0 else f'run {i}':8} {kind:17} end->event={delay:.2f}s", flush=True)
            if i:
                seen[kind].append(delay)
    return {kind: stats(values) for kind, values in seen.items()}


# ---- main -------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5, help="airflow dags test runs of each DAG (after a warm-up)")
    parser.add_argument("--trigger-runs", type=int, default=10, help="trigger runs of each kind (after a warm-up)")
    args = parser.parse_args()
    os.environ.setdefault("AIRFLOW_CONN_RAY_LOCAL", '{"conn_type": "flyray", "extra": {"backend": "local"}}')
    # This process drives triggers: its Airflow must not read a user's AIRFLOW_HOME.
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="flyray-bench-home-"))
    from airflow_provider_flyray.backends.local_process import start_local_cluster, stop_local_cluster
    from tests.support.waits import wait_for_dashboard

    results: dict[str, Any] = {"date": today(), "machine": machine_facts(), "loadavg_before": loadavg()}
    ref = start_local_cluster("bench-decorator", num_cpus=2, object_store_memory=100_000_000)
    try:
        assert ref.address
        wait_for_dashboard(ref.address)
        print(f"(b) job end -> trigger event, RayJobTrigger driven directly, poll {DEFAULT_POLL:g}s", flush=True)
        results["end_to_event"] = trigger_runs(ref.address, args.trigger_runs)
        print("(a) airflow dags test, decorated vs entrypoint (same work, same head)", flush=True)
        results["dags_test"] = dags_runs(ref.address, args.runs)
    finally:
        stop_local_cluster(ref)
    results["loadavg_after"] = loadavg()
    path = write_result(f"decorator-overhead-{today()}.json", results)

    dec, ent = results["dags_test"]["bench_decorated"], results["dags_test"]["bench_entrypoint"]
    over = results["dags_test"]["overhead"]
    print(f"\n(a) medians of {args.runs} runs (p95 in brackets)")
    print(f"{'':22} {'decorated':>16} {'entrypoint':>16} {'overhead':>9}")
    for key, goal in (("task_wall", 0.5), ("worker_slot", 0.2), ("process_wall", None), ("job", None)):
        d, e = dec[key], ent[key]
        note = f"  (goal < {goal} s)" if goal else ""
        print(f"{key:22} {d['p50']:8.2f} [{d['p95']:5.2f}] {e['p50']:8.2f} [{e['p95']:5.2f}] {over[key]:+8.2f}s{note}")
    for key in ("job_end_to_event", "event_to_finished"):
        d, e = dec[key], ent[key]
        print(f"{key:22} {d['p50']:8.2f} [{d['p95']:5.2f}] {e['p50']:8.2f} [{e['p95']:5.2f}]")
    print(f"\n(b) job end -> trigger event, {args.trigger_runs} runs each (goal: decorated p95 < 1 s)")
    for kind, s in results["end_to_event"].items():
        print(f"{kind:18} p50 {s['p50']:.2f}s  p95 {s['p95']:.2f}s  (min {s['min']:.2f}, max {s['max']:.2f})")
    print(f"\nwritten to {path.relative_to(REPO)}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
