"""End-to-end figures on a real Airflow stack and the KubeRay control plane (measures and prints).

    python -m benchmarks.e2e_figures [--runs 3]

Prints: the Airflow stack's start time; the wall time of each example DAG (trigger -> success); for a
DAG whose Ray job itself runs 10 s, the split of the user's wait into Airflow scheduling, cluster start,
job and teardown; and the worker-slot seconds per deferred task (execute + execute_complete), as medians.
Timestamps come from the operator's `flyray timings` log line and the REST API. Results are also
written to benchmarks/results/e2e-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time

from kubernetes import client

from benchmarks.common import airflow_stack, timings_from_log, worker_slot_seconds
from tests.infra.kube.fixtures import session as control_plane_session
from tests.infra.stack import AirflowStack
from tests.support import REPO, tenants
from tests.support.airflow_runs import E2E_DAGS, example_dags, task_of


def run_once(stack: AirflowStack, dag_id: str) -> dict[str, float]:
    task_id = task_of(dag_id)
    stack.wait_for_dag(dag_id)
    stack.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
    triggered = time.time()
    run_id = stack.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None})["dag_run_id"]
    while (state := stack.run_state(dag_id, run_id)) not in ("success", "failed"):
        time.sleep(0.2)
    done = time.time()
    if state != "success":
        raise RuntimeError(f"{dag_id} {run_id} {state}")
    t = timings_from_log(stack.task_log(dag_id, run_id, task_id))
    row = {
        "wall": done - triggered,
        "scheduling": t["execute_started"] - triggered,
        "worker_slot": worker_slot_seconds(t),
    }
    if "cluster_ready" in t:
        row["cluster_start"] = t["cluster_ready"] - t["execute_started"]
        row["job"] = t["job_end_time"] - t["cluster_ready"]
        row["teardown"] = done - t["job_end_time"]
        row["job_end_to_event"] = t["event"] - t["job_end_time"]
        row["ready_to_job_start"] = t["job_start_time"] - t["cluster_ready"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, object] = {"date": datetime.date.today().isoformat(), "runs": args.runs}
    with (
        control_plane_session() as plane,
        tenants.namespace(client.CoreV1Api(plane.api_client()), "bench-e2e") as namespace,
        plane.api_proxy(as_admin=True) as proxy,
    ):
        conn = tenants.flyray_conn(
            kube_config_path=plane.kubeconfig,
            namespace=namespace,
            dashboard_access="pod",
            dashboard_url_template=tenants.dashboard_url_template(proxy.url),
        )
        connections = {"ray_kube": conn, "ray_default": conn}
        with airflow_stack(connections, dag_files=[*example_dags(), E2E_DAGS]) as stack:
            results["airflow_start_seconds"] = stack.startup_seconds
            print(f"Airflow stack start: {results['airflow_start_seconds']:.1f}s", flush=True)
            for dag_id in ("example_flyray_local", "example_flyray_kuberay", "e2e_kube_10s"):
                rows = [run_once(stack, dag_id) for _ in range(args.runs)]
                for i, row in enumerate(rows, 1):
                    print(f"{dag_id} run {i}: " + ", ".join(f"{k}={v:.2f}s" for k, v in row.items()), flush=True)
                medians = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
                results[dag_id] = {"runs": rows, "median": medians}
    print(f"\nmedians of {args.runs} runs (python -m benchmarks.e2e_figures --runs {args.runs}):")
    for dag_id in ("example_flyray_local", "example_flyray_kuberay", "e2e_kube_10s"):
        median = results[dag_id]["median"]  # type: ignore[index]
        print(f"  {dag_id:24s} " + "  ".join(f"{k}={v:.2f}s" for k, v in median.items()))
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"e2e-{results['date']}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
