"""Ten tasks of one DAG run: ten transient RayClusters against one shared cluster (measures and prints).

    python -m benchmarks.shared_clusters [--runs 3]

A real Airflow stack (scheduler, triggerer, api-server) on the KubeRay control plane runs the DAGs of
benchmarks/dags/flyray_shared_bench_dags.py, interleaved per round: the same ten 5-second jobs on ten
transient clusters (``bench_ten_transient``), on one pool cluster (``reuse=ReusePolicy(idle_ttl=30,
scope="dag_run")``, ``bench_ten_pool``, deleted by the maintenance DAG once idle for its 30 s ``idle_ttl``:
its pod-seconds include that idle time) and on one cluster of a setup task (``ray_cluster_for_run``,
``bench_ten_run_cluster``), two tasks at a time (an Airflow pool of 2 slots that deferred tasks hold too:
ten, and four, Ray heads starting at once on this 2-core machine timed out in ``ray start``). Per run:
wall time (triggered -> success), cluster starts (RayCluster uids created), Ray pod-seconds (every pod
from first to last sight, until the last one is gone), and the ten job tasks' worker-slot seconds (from
the operator's timings lines). Medians over the runs.
Goal (issue 12): 1 start instead of 10, wall time at most 1/3 of the transient one.

Writes benchmarks/results/shared-clusters-<date>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import threading
import time
import urllib.error
from typing import Any

from benchmarks.common import (
    BENCH_DAGS,
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
from benchmarks.dags.flyray_shared_bench_dags import AT_ONCE, POOL, POOL_IDLE_TTL
from benchmarks.kuberay_latency import stack_connections
from tests.infra.stack import AirflowStack
from tests.support.pools import grant_pool_role

MODES = {"transient": "bench_ten_transient", "pool": "bench_ten_pool", "run_cluster": "bench_ten_run_cluster"}
TASKS = 10


class PodClock(threading.Thread):
    """Every pod and RayCluster of the namespace, from first to last sight (polled every 0.5 s)."""

    def __init__(self, core: Any, custom: Any, namespace: str) -> None:
        super().__init__(daemon=True)
        self.core, self.custom, self.namespace = core, custom, namespace
        self.pods: dict[str, list[float]] = {}
        self.clusters: set[str] = set()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            with contextlib.suppress(Exception):
                now = time.time()
                for pod in self.core.list_namespaced_pod(self.namespace).items:
                    self.pods.setdefault(pod.metadata.uid, [now, now])[1] = now
                listing = self.custom.list_namespaced_custom_object("ray.io", "v1", self.namespace, "rayclusters")
                self.clusters |= {c["metadata"]["uid"] for c in listing.get("items", [])}
            self._halt.wait(0.5)

    def idle(self) -> bool:
        return not self.core.list_namespaced_pod(self.namespace).items

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


def slot_seconds(stack: AirflowStack, dag_id: str, run_id: str) -> float:
    total = 0.0
    for index in range(TASKS):
        body = stack.api(
            "GET",
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/job/logs/1?full_content=true&map_index={index}",
        )
        content = body.get("content", "")
        text = "\n".join(str(i.get("event", "")) if isinstance(i, dict) else str(i) for i in content)
        total += worker_slot_seconds(timings_from_log(text if isinstance(content, list) else str(content)))
    return total


def one_run(bench: Any, stack: AirflowStack, mode: str) -> dict[str, float]:
    clock = PodClock(bench.core, bench.custom, bench.namespace)
    clock.start()
    try:
        started = time.time()
        try:
            run_id = run_dag(stack, MODES[mode], timeout=900)
        except RuntimeError:
            for log in sorted((stack.home / "logs").glob(f"dag_id={MODES[mode]}/**/*.log")):
                text = log.read_text(errors="replace")
                print(f"--- {log}\n{text[-2500:]}", flush=True)
            for name in ("scheduler", "triggerer"):
                print(f"--- {name}.log\n{(stack.home / 'logs' / f'{name}.log').read_text(errors='replace')[-4000:]}")
            raise
        wall = time.time() - started
        if mode == "pool":  # idle for idle_ttl, then deleted by the maintenance DAG (as on its schedule)
            time.sleep(POOL_IDLE_TTL + 1)
            run_dag(stack, "bench_pool_maintenance", timeout=300)
        deadline = time.monotonic() + 180
        while not clock.idle():
            assert time.monotonic() < deadline, f"{mode}: pods still there 180 s after the run"
            time.sleep(0.5)
        time.sleep(1)
    finally:
        clock.stop()
    return {
        "wall": wall,
        "cluster_starts": float(len(clock.clusters)),
        "pod_seconds": sum(last - first for first, last in clock.pods.values()),
        "worker_slot_seconds": slot_seconds(stack, MODES[mode], run_id),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--at-once", type=int, default=AT_ONCE, help="tasks at a time")
    parser.add_argument(
        "--transient-at-once",
        type=int,
        help="tasks at a time for the transient mode (default: --at-once; more than 2 heads at once fail here)",
    )
    args = parser.parse_args()
    rows: dict[str, list[dict[str, float]]] = {mode: [] for mode in args.modes}
    at_once = {mode: args.at_once for mode in args.modes}
    if args.transient_at_once and "transient" in at_once:
        at_once["transient"] = args.transient_at_once
    with kube_bench("shared") as bench:
        grant_pool_role(bench.admin, bench.namespace)
        dag_files = [BENCH_DAGS / "flyray_shared_bench_dags.py"]
        with airflow_stack(stack_connections(bench), {"AIRFLOW__CORE__PARALLELISM": "16"}, dag_files) as stack:
            for round_ in range(args.runs):
                for mode in args.modes:
                    with contextlib.suppress(urllib.error.HTTPError):
                        stack.api("DELETE", f"/api/v2/pools/{POOL}")
                    pool = {"name": POOL, "slots": at_once[mode], "include_deferred": True, "description": "at a time"}
                    stack.api("POST", "/api/v2/pools", pool)
                    row = one_run(bench, stack, mode)
                    rows[mode].append(row)
                    print(
                        f"round {round_ + 1} {mode}: " + ", ".join(f"{k} {v:.1f}" for k, v in row.items()), flush=True
                    )
    medians = {mode: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for mode, runs in rows.items()}
    lines = [
        "| | wall (s) | cluster starts | Ray pod-seconds | worker-slot seconds (10 tasks) |",
        "|---|---|---|---|---|",
    ]
    for mode, m in medians.items():
        cells = [f"{m['wall']:.1f}", f"{m['cluster_starts']:.0f}", f"{m['pod_seconds']:.0f}"]
        lines.append(f"| {mode} | {' | '.join(cells)} | {m['worker_slot_seconds']:.1f} |")
    table = "\n".join(lines)
    print(table)
    base = medians.get("transient", {}).get("wall")
    ratio = {mode: m["wall"] / base for mode, m in medians.items()} if base else {}
    print("wall time / transient:", {k: round(v, 2) for k, v in ratio.items()})
    default = set(at_once.values()) == {AT_ONCE} and args.modes == list(MODES)
    suffix = "" if default else "-" + "-".join(f"{mode}{n}" for mode, n in at_once.items())
    path = write_result(
        f"shared-clusters-{today()}{suffix}.json",
        {
            "command": f"python -m benchmarks.shared_clusters --runs {args.runs} --modes {' '.join(args.modes)}"
            f" --at-once {args.at_once}"
            + (f" --transient-at-once {args.transient_at_once}" if args.transient_at_once else ""),
            "at_once": at_once,
            "machine": machine_facts(),
            "loadavg_end": loadavg(),
            "medians": medians,
            "wall_ratio_to_transient": ratio,
            "runs": rows,
            "table": table,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
