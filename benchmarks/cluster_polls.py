"""Status requests per job per poll interval when N jobs wait on one cluster in one triggerer.

    .venv/bin/python -m benchmarks.cluster_polls [--jobs 1 10 50] [--runs 3] [--baseline-runs 1] [--out FILE]

Against a real local Ray head (``start_local_cluster``, loopback ports) behind a counting proxy
(tests/support/cluster_polls.py): for each N, N RayJobTriggers run at once in one event loop (as in a
triggerer), each following a job that sleeps long enough for all of them to be waiting together for a
while (the submissions of 50 jobs take tens of seconds on 2 cores). Counted at the proxy, in the steady
window (a poll interval after the last submission to the first end): ``GET /api/jobs/`` (the shared list)
and each job's ``GET /api/jobs/{id}``, as requests per job per poll interval; the whole run's status
requests per job too (with the submission's checks, each job's first check and its final confirmation).
Median of ``--runs`` runs. The baseline ("sharing off") is the same run with the per-cluster sharing
disabled (``cluster_statuses.SHARED_FROM`` raised past N: every job asks for itself, as before).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from airflow_provider_flyray.triggers import cluster_statuses
from benchmarks.common import loadavg, machine_facts, today, write_result
from tests.support.cluster_polls import counting_proxy, run_counted

POLL = 1.0


def job_seconds(jobs: int) -> float:
    """Long enough that every job is submitted well before the first ends (on a loaded 2-core machine)."""
    return 15 + 0.8 * jobs


def one_run(proxy: Any, jobs: int, shared: bool) -> dict[str, Any]:
    saved = cluster_statuses.SHARED_FROM
    if not shared:
        cluster_statuses.SHARED_FROM = jobs + 1
    try:
        result = run_counted(proxy, jobs, job_seconds(jobs), POLL, timeout=900)
    finally:
        cluster_statuses.SHARED_FROM = saved
    row = result.to_dict()
    status_requests = result.whole_run.get("list", 0) + result.whole_run.get("job_get", 0)
    row["whole_run_status_requests_per_job"] = round(status_requests / jobs, 2)
    row["all_succeeded"] = all(e["status"] == "success" for e in result.events)
    row["loadavg"] = loadavg()
    return row


def median(rows: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in rows))


def measure(job_counts: list[int], runs: int, baseline_runs: int) -> dict[str, Any]:
    from airflow_provider_flyray.backends.local_process import start_local_cluster, stop_local_cluster
    from tests.support.waits import wait_for_dashboard

    ref = start_local_cluster("bench-polls", num_cpus=2, object_store_memory=100_000_000)
    assert ref.address is not None
    points = []
    try:
        wait_for_dashboard(ref.address)
        proxy = counting_proxy(ref.address)
        try:
            for jobs in job_counts:
                point: dict[str, Any] = {"jobs": jobs, "job_seconds": job_seconds(jobs)}
                for name, shared, count in (("shared", True, runs), ("sharing_off", False, baseline_runs)):
                    rows = []
                    for _ in range(count):
                        rows.append(one_run(proxy, jobs, shared))
                        print(f"N={jobs} {name}: {json.dumps(rows[-1])}", flush=True)
                    point[name] = {
                        "runs": rows,
                        "per_job_per_poll": median(rows, "per_job_per_poll") if rows else None,
                        "requests_per_poll": median(rows, "requests_per_poll") if rows else None,
                        "whole_run_status_requests_per_job": (
                            median(rows, "whole_run_status_requests_per_job") if rows else None
                        ),
                    }
                points.append(point)
        finally:
            proxy.stop()
    finally:
        stop_local_cluster(ref)
    return {
        "against": "a real local Ray head (Ray 2.60, loopback), requests counted at a proxy in front of it",
        "poll_interval": POLL,
        "points": points,
        "command": f"python -m benchmarks.cluster_polls --jobs {' '.join(map(str, job_counts))} --runs {runs} "
        f"--baseline-runs {baseline_runs}",
    }


def cell(part: dict[str, Any] | None, key: str) -> str:
    if not part or part.get(key) is None:
        return "-"
    return f"{part[key]:.3f}" if key != "whole_run_status_requests_per_job" else f"{part[key]:.1f}"


def table(data: dict[str, Any]) -> str:
    rows = [
        "| jobs on one cluster | status requests / job / poll (shared) | (sharing off) | requests / poll (shared) "
        "| (sharing off) | whole run: status requests / job (shared) | (sharing off) | runs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for point in data["points"]:
        shared, off = point.get("shared"), point.get("sharing_off")
        runs = f"{len((shared or {}).get('runs', []))} + {len((off or {}).get('runs', []))}"
        rows.append(
            f"| {point['jobs']} | {cell(shared, 'per_job_per_poll')} | {cell(off, 'per_job_per_poll')} "
            f"| {cell(shared, 'requests_per_poll')} | {cell(off, 'requests_per_poll')} "
            f"| {cell(shared, 'whole_run_status_requests_per_job')} | {cell(off, 'whole_run_status_requests_per_job')} "
            f"| {runs} |"
        )
    rows.append("")
    rows.append(
        f"Poll interval {data['poll_interval']:g} s; medians; against {data['against']}; command `{data['command']}`."
    )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline-runs", type=int, default=1)
    parser.add_argument("--out", help="write the JSON here (default: benchmarks/results/cluster-polls-<date>.json)")
    args = parser.parse_args()
    started = time.time()
    data = measure(args.jobs, args.runs, args.baseline_runs)
    data.update(date=today(), machine=machine_facts(), seconds=round(time.time() - started, 1))
    if args.out:
        with open(args.out, "w") as out:
            json.dump(data, out, indent=2)
        path = args.out
    else:
        path = str(write_result(f"cluster-polls-{data['date']}.json", data))
    print(f"\n{table(data)}\n\n(written to {path})")


if __name__ == "__main__":
    main()
