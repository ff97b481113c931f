"""RayJob mode against RayCluster mode: one task, the same job, interleaved (measures and prints).

    python -m benchmarks.rayjob_mode [--runs 5] [--job-seconds 5]

A real Airflow stack on the KubeRay control plane runs ``bench_mode_raycluster`` and ``bench_mode_rayjob``
(benchmarks/dags/flyray_rayjob_bench_dags.py) one after the other in each round, as the provider's service
account with docker/rbac.yaml and docker/rbac-rayjob.yaml. Its kubeconfig points at a counting proxy in
front of the kube-apiserver (tests/infra/kube/api_proxy.py), so every Kubernetes request the provider makes
for a task is counted server-side (the dashboard is reached at the head pod's IP: Ray requests are not
Kubernetes requests and are not counted; KubeRay's own requests do not pass the proxy). Per run: wall time
(triggered -> run success), the task's worker-slot seconds (its timings line), Kubernetes requests from
trigger to success (plain and watch), and which. Medians over the runs.

Writes benchmarks/results/rayjob-mode-<date>.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from typing import Any

import yaml
from kubernetes import client, utils

from benchmarks.api_economy import Window, start_proxy, what
from benchmarks.common import (
    KubeBench,
    airflow_stack,
    kube_bench,
    loadavg,
    machine_facts,
    run_dag,
    timings_from_log,
    today,
    worker_slot_seconds,
    write_result,
)
from tests.infra.stack import AirflowStack
from tests.support import REPO
from tests.support.tenants import RAYJOB_RBAC

MODES = {"RayCluster": "bench_mode_raycluster", "RayJob": "bench_mode_rayjob"}
FIGURES = ("wall", "worker_slot_seconds", "kube_requests", "watches", "requests")


def grant_rayjob_role(admin: client.ApiClient, namespace: str) -> None:
    """docker/rbac-rayjob.yaml's Role and RoleBinding next to docker/rbac.yaml's (same ServiceAccount)."""
    for doc in yaml.safe_load_all(RAYJOB_RBAC.read_text()):
        if doc and doc["kind"] != "ServiceAccount":
            utils.create_from_dict(admin, doc, namespace=namespace)
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=f"system:serviceaccount:{namespace}:airflow-flyray",
            resource_attributes=client.V1ResourceAttributes(
                namespace=namespace, group="ray.io", resource="rayjobs", verb="create"
            ),
        )
    )
    deadline = time.time() + 15
    while not client.AuthorizationV1Api(admin).create_subject_access_review(review).status.allowed:
        assert time.time() < deadline, "the RoleBinding of docker/rbac-rayjob.yaml never took effect"
        time.sleep(0.2)


def idle(bench: KubeBench) -> bool:
    """No pod, RayCluster or RayJob left in the namespace."""
    if bench.core.list_namespaced_pod(bench.namespace).items:
        return False
    return not any(
        bench.custom.list_namespaced_custom_object("ray.io", "v1", bench.namespace, plural)["items"]
        for plural in ("rayclusters", "rayjobs")
    )


def one_run(bench: KubeBench, stack: AirflowStack, window: Window, mode: str, seconds: int) -> dict[str, Any]:
    dag_id = MODES[mode]
    started = time.time()
    run_id = run_dag(stack, dag_id, {"seconds": seconds}, timeout=600)
    ended = time.time()
    records = window.records(started, ended)
    slot = worker_slot_seconds(timings_from_log(stack.task_log(dag_id, run_id, "job")))
    deadline = time.monotonic() + 180
    while not idle(bench):  # the next run starts on an empty namespace
        assert time.monotonic() < deadline, f"{mode}: pods or objects still there 180 s after the run"
        time.sleep(0.5)
    kinds = Counter(r.kind for r in records)
    return {
        "wall": ended - started,
        "worker_slot_seconds": slot,
        "kube_requests": float(kinds.get("kube", 0)),
        "watches": float(kinds.get("watch", 0)),
        "requests": float(len(records)),
        "by_request": dict(Counter(what(r) for r in records).most_common()),
        "loadavg": loadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--job-seconds", type=int, default=5)
    args = parser.parse_args()
    rows: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    with kube_bench("rayjob-mode") as bench:
        grant_rayjob_role(bench.admin, bench.namespace)
        proxy, kubeconfig = start_proxy(bench)
        window = Window(proxy)
        connections = {"ray_counted": bench.conn(kubeconfig, "pod")}
        dag_files = [REPO / "benchmarks" / "dags" / "flyray_rayjob_bench_dags.py"]
        with airflow_stack(connections, None, dag_files) as stack:
            for round_ in range(args.runs):
                for mode in MODES:
                    row = one_run(bench, stack, window, mode, args.job_seconds)
                    rows[mode].append(row)
                    figures = ", ".join(f"{k} {row[k]:.1f}" for k in FIGURES)
                    print(f"round {round_ + 1} {mode}: {figures}", flush=True)
    medians = {mode: {k: statistics.median(r[k] for r in runs) for k in FIGURES} for mode, runs in rows.items()}
    lines = [
        "| mode | wall (s) | worker-slot (s) | Kubernetes requests per task (plain + watch) |",
        "|---|---|---|---|",
    ]
    for mode, m in medians.items():
        lines.append(
            f"| {mode} | {m['wall']:.1f} | {m['worker_slot_seconds']:.2f} | "
            f"{m['requests']:.0f} ({m['kube_requests']:.0f} + {m['watches']:.0f}) |"
        )
    table = "\n".join(lines)
    print(table)
    path = write_result(
        f"rayjob-mode-{today()}.json",
        {
            "command": f"python -m benchmarks.rayjob_mode --runs {args.runs} --job-seconds {args.job_seconds}",
            "machine": machine_facts(),
            "medians": medians,
            "runs": rows,
            "table": table,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
