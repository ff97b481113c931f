"""Shipping a 10 MiB local ``working_dir`` to a real local Ray head (measures and prints; not a test).

    python -m benchmarks.shipping [--runs 5] [--mib 10]

Each run builds a fresh tree of ``--mib`` MiB (random, so incompressible: the zip is as large as the
tree) and, in a child process that imports only the provider (no ``ray``), does what the operator does:

- first run: hash the tree (``packaging.local_packages``), ask the dashboard, zip it to a temporary file
  and PUT it (``operators.shipping.upload_missing``);
- second run, same tree: hash again, ask the dashboard, which has it: nothing is uploaded.

Per step: wall seconds; and the child's memory: ``tracemalloc`` peak (Python allocations during the
step) and the growth of its peak RSS over its RSS after the imports. Goal: streamed, i.e. the memory
does not grow with the package (far below 2 x its size). Medians of ``--runs``.

Writes benchmarks/results/shipping-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import loadavg, machine_facts, today, write_result
from tests.support import REPO

CHILD = r"""
import asyncio, json, logging, resource, sys, time, tracemalloc
from airflow_provider_flyray.backends import backend_for
from airflow_provider_flyray.backends.address import AddressBackend
from airflow_provider_flyray.core.session import RaySession
from airflow_provider_flyray.jobs_api import JobSubmission
from airflow_provider_flyray.operators.shipping import upload_missing
from airflow_provider_flyray.packaging import local_packages

address, tree = sys.argv[1], sys.argv[2]
log = logging.getLogger("bench")
ref = AddressBackend.ref_for(address)
rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def ship(submission):
    async with RaySession("ray_local", log=log) as session:
        endpoint = await backend_for(ref).dashboard(session, ref)
        return await upload_missing(session, endpoint, submission, log)


tracemalloc.start()
started = time.perf_counter()
env, packages = local_packages({"working_dir": tree}, None)
hashed = time.perf_counter()
done = asyncio.run(ship(JobSubmission("bench", "true", runtime_env=env, packages=packages)))
finished = time.perf_counter()
_, peak = tracemalloc.get_traced_memory()
print(json.dumps({
    "hash_s": hashed - started,
    "check_and_upload_s": finished - hashed,
    "total_s": finished - started,
    "uploaded": done.packages[0].uploads,
    "package_bytes": packages[0].size,
    "tracemalloc_peak_mib": peak / 2**20,
    "rss_growth_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024,
}))
"""


def make_tree(root: Path, mib: int, seed: int) -> Path:
    """``mib`` MiB of random bytes in 1 MiB data files, plus a few source files."""
    root.mkdir(parents=True)
    (root / "main.py").write_text(f"print('run {seed}')\n")
    (root / "pkg").mkdir()
    for i in range(20):
        (root / "pkg" / f"mod{i}.py").write_text(f"VALUE = {i}\n" * 50)
    (root / "data").mkdir()
    for i in range(mib):
        (root / "data" / f"part{i}.bin").write_bytes(os.urandom(2**20))
    return root


def ship_once(address: str, tree: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "AIRFLOW_CONN_RAY_LOCAL": json.dumps({"conn_type": "flyray"})}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, address, str(tree)], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def median_of(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--mib", type=int, default=10)
    args = parser.parse_args()

    from airflow_provider_flyray.backends.local_process import start_local_cluster, stop_local_cluster
    from tests.support.waits import wait_for_dashboard

    head = start_local_cluster("bench-shipping", num_cpus=1, object_store_memory=100_000_000)
    first: list[dict[str, Any]] = []
    second: list[dict[str, Any]] = []
    try:
        assert head.address
        wait_for_dashboard(head.address)
        with tempfile.TemporaryDirectory(prefix="flyray-bench-ship-") as scratch:
            for run in range(args.runs):
                tree = make_tree(Path(scratch) / f"tree{run}", args.mib, run)
                first.append(ship_once(head.address, tree))
                second.append(ship_once(head.address, tree))
                print(f"run {run + 1}: first {first[-1]}\n       second {second[-1]}", flush=True)
    finally:
        stop_local_cluster(head)
    assert all(r["uploaded"] == 1 for r in first) and all(r["uploaded"] == 0 for r in second)
    keys = ("hash_s", "check_and_upload_s", "total_s", "tracemalloc_peak_mib", "rss_growth_mib")
    summary = {
        "first_run": {k: round(median_of(first, k), 3) for k in keys},
        "second_run": {k: round(median_of(second, k), 3) for k in keys},
        "package_mib": round(median_of(first, "package_bytes") / 2**20, 2),
    }
    print(f"\nshipping a {args.mib} MiB working_dir, medians of {args.runs} runs:")
    for name in ("first_run", "second_run"):
        row = summary[name]
        print(
            f"  {name:<10}  total {row['total_s']:.2f}s (hash {row['hash_s']:.2f}s, "
            f"check+upload {row['check_and_upload_s']:.2f}s)  tracemalloc peak {row['tracemalloc_peak_mib']:.1f} MiB  "
            f"peak RSS growth {row['rss_growth_mib']:.1f} MiB"
        )
    write_result(
        f"shipping-{today()}.json",
        {
            "command": f"python -m benchmarks.shipping --runs {args.runs} --mib {args.mib}",
            "machine": machine_facts(),
            "loadavg": loadavg(),
            "summary": summary,
            "first_runs": first,
            "second_runs": second,
        },
    )


if __name__ == "__main__":
    main()
