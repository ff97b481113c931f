"""Real-path latencies on the KubeRay control plane, in a real Airflow stack (measures and prints).

    python -m benchmarks.kuberay_latency [--runs 5] [--job-seconds 5] [--shared-jobs 20] [--skip-shared]
    python -m benchmarks.kuberay_latency --trigger-level [--runs 5]    # the trigger alone, no Airflow

Transient (one task = one RayCluster; ``bench_transient``), per run, medians and min-max over the runs:
  ready -> submitted        the RayCluster turning ready, as seen by an independent watch on the API server
                            (same rule as the provider: state ``ready`` or HeadPodReady + RayClusterProvisioned)
                            -> the Jobs API accepted the job (the trigger's ``submitted`` timing)
  trigger ready -> submitted the trigger's own ``cluster_ready`` timing -> submitted
  ready lag                 watch sees ready -> the trigger sees ready
  job end -> event          Ray's job ``end_time`` -> the trigger's event
  event -> task success     the trigger's event -> the task instance's ``end_date`` (Airflow REST API)
  worker slot               ``execute`` up to the deferral + ``execute_complete`` (the operator's timings line)
  task process              the task's two runs (start, then resume) from first to last line of its log file:
                            what the slot costs with Airflow's task start-up and DAG parse included
Shared (``--shared-jobs`` mapped tasks, each submitting a light job to ONE existing RayCluster), the same
figures over the jobs (ready -> submitted becomes trigger start -> submitted: the cluster is long ready).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

from airflow_provider_flyray.config import HeadNodeConfig, RayJobConfig
from airflow_provider_flyray.manifest import RAY_API_GROUP, RAY_API_VERSION, RAYCLUSTER_PLURAL, task_cluster_manifest
from airflow_provider_flyray.naming import TaskIdentity
from benchmarks.common import (
    KubeBench,
    ReadyWatch,
    airflow_stack,
    epoch,
    fmt,
    kube_bench,
    loadavg,
    run_dag,
    summarize_rows,
    task_process_seconds,
    timings_from_log,
    today,
    worker_slot_seconds,
    write_result,
)
from tests.infra.stack import AirflowStack
from tests.support.ray_jobs import SMALL_HEAD, first_event

SLEEP = "python -c \"import time; time.sleep({seconds}); print('done')\""
HEAD = SMALL_HEAD
# 20 job supervisors and drivers: 0.1 logical CPU each (entrypoint_num_cpus), ~100 MB of memory each.
SHARED_HEAD = HeadNodeConfig(
    requests={"cpu": "1", "memory": "3Gi"}, ray_start_params={"num-cpus": "4", "object-store-memory": "200000000"}
)
STACK_ENV = {"AIRFLOW__CORE__PARALLELISM": "8"}

LABELS = {
    "ready_to_submitted": "RayCluster ready (API watch) -> job submitted",
    "trigger_ready_to_submitted": "trigger sees ready -> job submitted",
    "ready_lag": "RayCluster ready (API watch) -> trigger sees it",
    "trigger_start_to_submitted": "trigger started -> job submitted",
    "job_end_to_event": "job end_time (Ray) -> trigger event",
    "event_to_success": "trigger event -> task success (TI end_date)",
    "worker_slot": "worker-slot seconds per task (operator: execute + execute_complete)",
    "task_process": "task process seconds per task (both runs, first to last log line)",
    "create_to_ready": "cluster created -> ready (API watch)",
    "wall": "DAG run triggered -> success",
}


def task_row(stack: AirflowStack, dag_id: str, run_id: str, map_index: int | None = None) -> dict[str, float]:
    """The latency figures of one task instance, from its timings line and the REST API."""
    suffix = "" if map_index is None else f"/{map_index}"
    ti = stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/job{suffix}")
    log_path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/job/logs/1?full_content=true"
    if map_index is not None:
        log_path += f"&map_index={map_index}"
    body = stack.api("GET", log_path)
    content = body.get("content", "")
    text = "\n".join(str(i.get("event", "")) if isinstance(i, dict) else str(i) for i in content)
    t = timings_from_log(text if isinstance(content, list) else str(content))
    task_dir = stack.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / "task_id=job"
    log_file = task_dir / ("" if map_index is None else f"map_index={map_index}") / "attempt=1.log"
    end_date = epoch(ti.get("end_date"))
    assert end_date is not None, f"no end_date on {dag_id}/{run_id}/job{suffix}"
    return {
        "trigger_ready_to_submitted": t["submitted"] - t["cluster_ready"],
        "trigger_start_to_submitted": t["submitted"] - t["trigger_started"],
        "job_end_to_event": t["event"] - t["job_end_time"],
        "event_to_success": end_date - t["event"],
        "worker_slot": worker_slot_seconds(t),
        "task_process": task_process_seconds(log_file),
        # kept for the shared run's overlap check and for the JSON
        "_cluster_ready": t["cluster_ready"],
        "_submitted": t["submitted"],
        "_job_start": t["job_start_time"],
        "_job_end": t["job_end_time"],
        "_execute_started": t["execute_started"],
    }


def transient_runs(bench: KubeBench, stack: AirflowStack, runs: int, job_seconds: float) -> dict[str, Any]:
    watch = ReadyWatch(bench.admin, bench.namespace)
    watch.start()
    rows = []
    try:
        for i in range(runs):
            triggered = time.time()
            run_id = run_dag(stack, "bench_transient", {"entrypoint": SLEEP.format(seconds=job_seconds)})
            done = time.time()
            cluster = stack.xcom("bench_transient", run_id, "job")["cluster_name"]
            figures = task_row(stack, "bench_transient", run_id)
            ready = watch.ready_seen[cluster]
            row: dict[str, Any] = {
                "ready_to_submitted": figures["_submitted"] - ready,
                "ready_lag": figures["_cluster_ready"] - ready,
                **figures,
                "create_to_ready": ready - figures["_execute_started"],
                "wall": done - triggered,
                "_ready_condition_time": watch.condition_time.get(cluster, 0.0),
                "_loadavg": loadavg(),
            }
            rows.append(row)
            print(f"transient run {i + 1}: " + describe(row), flush=True)
    finally:
        watch.stop()
    return {"runs": rows, "summary": summarize_rows(public(rows)), "job_seconds": job_seconds, "loadavg": loadavg()}


def shared_cluster(bench: KubeBench, stack: AirflowStack, jobs: int, job_seconds: float) -> dict[str, Any]:
    """One RayCluster created here; a mapped task of ``jobs`` map indexes, each submitting a job to it."""
    from benchmarks.dags.flyray_bench_dags import SHARED_JOBS

    if jobs != SHARED_JOBS:
        raise SystemExit(f"the bench_shared DAG maps {SHARED_JOBS} jobs; edit SHARED_JOBS to change it")
    identity = TaskIdentity("bench", "shared", uuid.uuid4().hex)
    manifest = task_cluster_manifest(RayJobConfig(head_node_config=SHARED_HEAD), identity, bench.namespace)
    name = manifest["metadata"]["name"]
    watch = ReadyWatch(bench.admin, bench.namespace)
    watch.start()
    custom = bench.custom
    custom.create_namespaced_custom_object(RAY_API_GROUP, RAY_API_VERSION, bench.namespace, RAYCLUSTER_PLURAL, manifest)
    try:
        deadline = time.monotonic() + 300
        while name not in watch.ready_seen:
            if time.monotonic() > deadline:
                raise TimeoutError(f"shared RayCluster {name} not ready")
            time.sleep(0.2)
        time.sleep(5)  # let the dashboard settle: this figure is about a long-ready cluster
        load_before = loadavg()
        triggered = time.time()
        run_id = run_dag(stack, "bench_shared", {"cluster": name, "seconds": job_seconds})
        done = time.time()
        rows = [task_row(stack, "bench_shared", run_id, i) for i in range(jobs)]
    finally:
        watch.stop()
        custom.delete_namespaced_custom_object(RAY_API_GROUP, RAY_API_VERSION, bench.namespace, RAYCLUSTER_PLURAL, name)
    starts = sorted(r["_job_start"] for r in rows)
    ends = sorted(r["_job_end"] for r in rows)
    peak = max(sum(1 for r in rows if r["_job_start"] <= s < r["_job_end"]) for s in starts)
    result: dict[str, Any] = {
        "jobs": jobs,
        "job_seconds": job_seconds,
        "runs": rows,
        "summary": summarize_rows(public(rows)),
        "wall": done - triggered,
        "first_to_last_submitted": max(r["_submitted"] for r in rows) - min(r["_submitted"] for r in rows),
        "peak_jobs_running_at_once": peak,
        "all_running_at_once_seconds": max(0.0, ends[0] - starts[-1]),
        "loadavg_before": load_before,
        "loadavg": loadavg(),
    }
    print(
        f"shared cluster, {jobs} jobs: peak {peak} running at once, wall {result['wall']:.1f}s; "
        + describe(result["summary"]),
        flush=True,
    )
    return result


def public(rows: list[dict[str, Any]]) -> list[dict[str, float]]:
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]


def describe(row: dict[str, Any]) -> str:
    parts = []
    for k, v in row.items():
        if k.startswith("_"):
            continue
        parts.append(f"{k}={v:.2f}s" if isinstance(v, float) else f"{k}={fmt(v)}")
    return ", ".join(parts)


def table(result: dict[str, Any]) -> str:
    """Markdown: one row per figure, transient and shared side by side."""
    transient = (result.get("transient") or {}).get("summary", {})
    shared = (result.get("shared") or {}).get("summary", {})
    n_t = (result.get("transient") or {}).get("runs", [])
    n_s = (result.get("shared") or {}).get("jobs", 0)
    lines = [
        f"| figure | transient cluster, {len(n_t)} runs: median (min-max) "
        f"| {n_s} jobs on one cluster: median (min-max) |",
        "|---|---|---|",
    ]
    for key, label in LABELS.items():
        if key in transient or key in shared:
            lines.append(f"| {label} | {fmt(transient.get(key, {}))} | {fmt(shared.get(key, {}))} |")
    if result.get("shared"):
        s = result["shared"]
        lines.append(
            f"| shared run: jobs running at once (peak) / all {n_s} overlapping for | | "
            f"{s['peak_jobs_running_at_once']} / {s['all_running_at_once_seconds']:.1f} s |"
        )
    return "\n".join(lines)


def measure(
    bench: KubeBench, stack: AirflowStack, runs: int, job_seconds: float, shared_jobs: int, shared_seconds: float
) -> dict[str, Any]:
    result: dict[str, Any] = {"transient": transient_runs(bench, stack, runs, job_seconds)}
    if shared_jobs:
        result["shared"] = shared_cluster(bench, stack, shared_jobs, shared_seconds)
    return result


def stack_connections(bench: KubeBench) -> dict[str, str]:
    """``ray_bench``: the service account, straight to the API server, the dashboard at the head pod's IP."""
    return {"ray_bench": bench.conn(bench.sa_kubeconfig(bench.plane.server, "direct.kubeconfig"), "pod")}


# ---- the trigger alone (no Airflow): what the provider itself adds ---------------------------------


def trigger_level(bench: KubeBench, runs: int, job_seconds: float) -> dict[str, Any]:
    import os

    from airflow_provider_flyray.cluster import ClusterRef
    from airflow_provider_flyray.hooks.ray_cluster import RayClusterHook
    from airflow_provider_flyray.jobs_api import JobSubmission
    from airflow_provider_flyray.naming import submission_id_for
    from airflow_provider_flyray.triggers.ray_job import RayJobTrigger

    os.environ["AIRFLOW_CONN_RAY_BENCH"] = stack_connections(bench)["ray_bench"]
    hook = RayClusterHook("ray_bench")
    watch = ReadyWatch(bench.admin, bench.namespace)
    watch.start()
    rows = []
    try:
        for i in range(runs):
            identity = TaskIdentity("bench", "latency", uuid.uuid4().hex)
            manifest = task_cluster_manifest(RayJobConfig(head_node_config=HEAD), identity, bench.namespace)
            created = time.time()
            hook.create_or_adopt_cluster(manifest, identity.task_key)
            ref = ClusterRef("raycluster", name=manifest["metadata"]["name"], namespace=bench.namespace, owned=True)
            try:
                trigger = RayJobTrigger(
                    ray_conn_id="ray_bench",
                    cluster=ref.to_dict(),
                    submission=JobSubmission(submission_id_for(identity), SLEEP.format(seconds=job_seconds)).to_dict(),
                    owner_key=identity.task_key,
                    startup_deadline=time.time() + 300,
                )
                event = asyncio.run(first_event(trigger))
            finally:
                hook.delete_cluster(ref, identity.task_key)
            if event["status"] != "success":
                raise RuntimeError(f"run failed: {event['reason']}")
            t, ready = event["timings"], watch.ready_seen[ref.name]
            row = {
                "create_to_ready": ready - created,
                "ready_to_submitted": t["submitted"] - ready,
                "trigger_ready_to_submitted": t["submitted"] - t["cluster_ready"],
                "job_end_to_event": t["event"] - event["end_time"] / 1000,
            }
            rows.append(row)
            print(f"trigger-level run {i + 1}: " + describe(row), flush=True)
    finally:
        watch.stop()
    return {"runs": rows, "summary": summarize_rows(rows), "loadavg": loadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--job-seconds", type=float, default=5)
    parser.add_argument("--shared-jobs", type=int, default=20)
    parser.add_argument("--shared-seconds", type=float, default=45)
    parser.add_argument("--skip-shared", action="store_true")
    parser.add_argument("--trigger-level", action="store_true", help="the trigger alone, without Airflow")
    args = parser.parse_args()
    result: dict[str, Any]
    with kube_bench("bench-lat") as bench:
        if args.trigger_level:
            result = {"trigger_level": trigger_level(bench, args.runs, args.job_seconds)}
            print("\n" + describe(result["trigger_level"]["summary"]))
            return
        with airflow_stack(stack_connections(bench), STACK_ENV) as stack:
            result = measure(
                bench,
                stack,
                args.runs,
                args.job_seconds,
                0 if args.skip_shared else args.shared_jobs,
                args.shared_seconds,
            )
    result["date"] = today()  # type: ignore[assignment]
    path = write_result(f"latency-{result['date']}.json", result)
    print(f"\n{table(result)}\n\n(python -m benchmarks.kuberay_latency --runs {args.runs}; written to {path})")


if __name__ == "__main__":
    main()
