"""Every benchmark in one command; results in benchmarks/results/<date>.json and .md, tables printed at the end.

    .venv/bin/python -m benchmarks [--quick] [--skip-capacity] [--skip-memory] [--skip-polls] [--skip-kube]

1. trigger capacity sweep (``python -m benchmarks.trigger_capacity``, a subprocess; its JSON is read back);
   then the triggerer's memory against what a job prints (``python -m benchmarks.trigger_memory``: peak RSS
   for a job printing 1 MiB vs 200 MiB on a real local Ray head; ``--quick``: 1 vs 20 MiB); then status
   requests per job per poll with 1, 10 and 50 jobs on one local head (``python -m benchmarks.cluster_polls``;
   ``--quick``: 1 and 10 jobs, one run each);
2. real-path latency on the KubeRay control plane in a real Airflow stack (benchmarks/kuberay_latency.py):
   5 transient-cluster runs, then 20 jobs watched at once on one cluster;
3. API economy (benchmarks/api_economy.py): requests per job-minute for a 60 s job, ours vs a fixed 5 s poll.

2 and 3 share one Airflow stack and one namespace. The control plane is started if it is down, and stopped
at the end only then. ``--quick``: 2 latency runs, no 20-job run, 20 s jobs for the API economy, and the
capacity sweep's own ``--quick``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from typing import Any

from benchmarks import api_economy, kuberay_latency
from benchmarks.common import RESULTS, airflow_stack, kube_bench, loadavg, machine_facts, today, write_result
from tests.support import REPO


def capacity(quick: bool) -> dict[str, Any]:
    if importlib.util.find_spec("benchmarks.trigger_capacity") is None:
        return {"skipped": "benchmarks/trigger_capacity.py is not there"}
    out = RESULTS / f"capacity-{today()}{'-quick' if quick else ''}.json"
    command = [sys.executable, "-m", "benchmarks.trigger_capacity", "--out", str(out), *(["--quick"] if quick else [])]
    print("$ " + " ".join(command[1:]), flush=True)
    started = time.time()
    done = subprocess.run(command, cwd=REPO)
    if done.returncode != 0:
        return {"failed": f"exit status {done.returncode}", "command": " ".join(command[1:])}
    data = json.loads(out.read_text())
    data["results_file"] = str(out.relative_to(REPO))
    data["seconds"] = time.time() - started
    return data


def memory(quick: bool) -> dict[str, Any]:
    out = RESULTS / f"memory-{today()}{'-quick' if quick else ''}.json"
    sizes = ["1", "20"] if quick else ["1", "200"]
    command = [sys.executable, "-m", "benchmarks.trigger_memory", "--sizes-mb", *sizes, "--out", str(out)]
    print("$ " + " ".join(command[1:]), flush=True)
    done = subprocess.run(command, cwd=REPO)
    if done.returncode != 0:
        return {"failed": f"exit status {done.returncode}", "command": " ".join(command[1:])}
    data: dict[str, Any] = json.loads(out.read_text())
    data["results_file"] = str(out.relative_to(REPO))
    return data


def cluster_polls(quick: bool) -> dict[str, Any]:
    out = RESULTS / f"cluster-polls-{today()}{'-quick' if quick else ''}.json"
    jobs, runs = (["1", "10"], "1") if quick else (["1", "10", "50"], "3")
    command = [sys.executable, "-m", "benchmarks.cluster_polls", "--jobs", *jobs, "--runs", runs, "--out", str(out)]
    print("$ " + " ".join(command[1:]), flush=True)
    done = subprocess.run(command, cwd=REPO)
    if done.returncode != 0:
        return {"failed": f"exit status {done.returncode}", "command": " ".join(command[1:])}
    data: dict[str, Any] = json.loads(out.read_text())
    data["results_file"] = str(out.relative_to(REPO))
    return data


def capacity_table(data: dict[str, Any]) -> str:
    if "points" not in data:
        return f"(not run: {data.get('skipped') or data.get('failed')})"
    from benchmarks.capacity_report import markdown_table

    return str(markdown_table(data))


def kube_parts(quick: bool) -> dict[str, Any]:
    runs, shared, econ_seconds = (2, 0, 20) if quick else (5, 20, 60)
    with kube_bench("bench") as bench:
        proxy, counted_kubeconfig = api_economy.start_proxy(bench)
        connections = kuberay_latency.stack_connections(bench) | {"ray_econ": bench.conn(counted_kubeconfig, "proxy")}
        with airflow_stack(connections, kuberay_latency.STACK_ENV) as stack:
            latency = kuberay_latency.measure(bench, stack, runs, 5, shared, 45)
            latency["commands"] = f"python -m benchmarks.kuberay_latency --runs {runs} --job-seconds 5" + (
                " --skip-shared" if not shared else f" --shared-jobs {shared} --shared-seconds 45"
            )
            economy = api_economy.measure(bench, stack, proxy, counted_kubeconfig, econ_seconds)
            economy["commands"] = f"python -m benchmarks.api_economy --job-seconds {econ_seconds}"
            return {"airflow_start_seconds": stack.startup_seconds, "latency": latency, "api_economy": economy}


def markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    parts = [
        f"# flyray benchmarks, {results['date']}",
        "",
        f"`{results['command']}` on {machine['cpus']} CPUs ({machine['cpu_model']}), {machine['memory_gib']} GiB; "
        f"load average {' '.join(map(str, results['loadavg_start']))} at the start, "
        f"{' '.join(map(str, results['loadavg_end']))} at the end (a shared machine: timings are noisy). "
        f"Took {results['seconds'] / 60:.1f} min.",
    ]
    if "capacity" in results:
        parts += ["", "## Trigger capacity", "", capacity_table(results["capacity"])]
    if "memory" in results:
        from benchmarks import trigger_memory

        mem = results["memory"]
        shown = trigger_memory.table(mem) if "runs" in mem else f"(not run: {mem.get('failed')})"
        parts += ["", "## Triggerer memory against job output", "", shown]
    if "cluster_polls" in results:
        from benchmarks import cluster_polls as polls

        data = results["cluster_polls"]
        shown = polls.table(data) if "points" in data else f"(not run: {data.get('failed')})"
        parts += ["", "## Status requests with many jobs on one cluster (one triggerer)", "", shown]
    if "latency" in results:
        lat = results["latency"]
        parts += [
            "",
            "## Real-path latency (KubeRay control plane, real Airflow stack)",
            "",
            kuberay_latency.table(lat),
            "",
            f"Command: `{lat['commands']}`. "
            f"Job: `{kuberay_latency.SLEEP.format(seconds=lat['transient']['job_seconds'])}`"
            f" (transient); the shared run maps {lat.get('shared', {}).get('jobs', 0)} jobs of "
            f"{lat.get('shared', {}).get('job_seconds', 0):g} s onto one existing RayCluster. "
            '"RayCluster ready" is the instant an independent watch on the API server sees it ready.',
        ]
    if "api_economy" in results:
        eco = results["api_economy"]
        parts += [
            "",
            f"## API economy ({eco['job_seconds']} s job, requests counted at the API server proxy)",
            "",
            api_economy.table(eco),
            "",
            f"Command: `{eco['commands']}`. A watch counts once but stays open (ours: 2 during startup, 1 "
            "while the job runs, re-opened every 5 min); the WebSocket log tail counts once and stays open.",
        ]
    return "\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-capacity", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-polls", action="store_true")
    parser.add_argument("--skip-kube", action="store_true")
    args = parser.parse_args()
    started = time.time()
    results: dict[str, Any] = {
        "date": today(),
        "command": "python -m benchmarks " + " ".join(sys.argv[1:]),
        "machine": machine_facts(),
        "loadavg_start": loadavg(),
    }
    if not args.skip_capacity:
        results["capacity"] = capacity(args.quick)
    if not args.skip_memory:
        results["memory"] = memory(args.quick)
    if not args.skip_polls:
        results["cluster_polls"] = cluster_polls(args.quick)
    if not args.skip_kube:
        results.update(kube_parts(args.quick))
    results["loadavg_end"] = loadavg()
    results["seconds"] = time.time() - started
    name = f"{results['date']}{'-quick' if args.quick else ''}"
    path = write_result(f"{name}.json", results)
    text = markdown(results)
    (RESULTS / f"{name}.md").write_text(text)
    print("\n" + text)
    print(f"written: {path.relative_to(REPO)} and {path.with_suffix('.md').relative_to(REPO)}")


if __name__ == "__main__":
    main()
