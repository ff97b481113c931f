"""The triggerer's memory against what a job prints: peak RSS of a process running one RayJobTrigger.

    .venv/bin/python -m benchmarks.trigger_memory [--sizes-mb 1 200] [--out FILE]

Against a real local Ray head (``start_local_cluster``, loopback ports): for each size, a fresh child
process (``--child``) imports Airflow and the provider, notes its RSS, runs one RayJobTrigger to its event
against a job printing that many MiB in 100-byte numbered lines, and reports its peak RSS
(``ru_maxrss``), the lines delivered to the task log (counted by a handler on the trigger's logger; every
line must arrive, each once) and the seconds taken. The figure that matters is the growth of the peak
between the smallest and the largest size (goal: < 20 MB between 1 and 200 MiB). A benchmark, not a
timed test: a shared machine makes the seconds noisy; the RSS figures are not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import subprocess
import sys
import time
import uuid
from typing import Any

LINE_BYTES = 100  # "%09d " + 89 "x" + "\n"
JOB = "python -c \"import sys; w = sys.stdout.write; x = 'x' * 89\nfor i in range({count}): w('%09d %s\\n' % (i, x))\""


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Counter(logging.Handler):
    """Counts the job's lines the trigger shows, and checks they come in order, each once."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines = 0
        self.next_number = 0
        self.out_of_order = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg != "%s%s" or not record.args or record.args[0] != "[ray] ":  # type: ignore[index]
            return
        self.lines += 1
        line = str(record.args[1])  # type: ignore[index]
        head = line[:9]
        if head.isdigit():
            if int(head) != self.next_number:
                self.out_of_order += 1
            self.next_number = int(head) + 1


def child(address: str, megabytes: float) -> dict[str, Any]:
    from airflow_provider_flyray.backends.address import AddressBackend
    from airflow_provider_flyray.jobs_api import JobSubmission
    from airflow_provider_flyray.triggers.ray_job import RayJobTrigger

    count = int(megabytes * 1024 * 1024 / LINE_BYTES)
    trigger = RayJobTrigger(
        ray_conn_id=None,
        cluster=AddressBackend.ref_for(address).to_dict(),
        submission=JobSubmission(f"memory-{uuid.uuid4().hex[:8]}", JOB.format(count=count)).to_dict(),
        owner_key="bench/memory",
        poll_interval=5.0,
    )
    logger = logging.getLogger("flyray.bench.memory")
    logger.propagate, logger.level = False, logging.INFO
    counter = Counter()
    logger.addHandler(counter)
    trigger._log = logger  # the task log, counted instead of written

    async def first_event() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("no event")

    before = rss_mb()
    started = time.monotonic()
    event = asyncio.run(first_event())
    return {
        "megabytes": megabytes,
        "job_lines": count,
        "status": event["status"],
        "lines_shown": counter.lines,
        "job_lines_shown": counter.next_number,
        "out_of_order": counter.out_of_order,
        "log_tail_last": (event.get("log_tail") or [""])[-1][:20],
        "rss_before_mb": round(before, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "seconds": round(time.monotonic() - started, 1),
    }


def measure(sizes: list[float]) -> dict[str, Any]:
    from airflow_provider_flyray.backends.local_process import start_local_cluster, stop_local_cluster
    from tests.support.waits import wait_for_dashboard

    ref = start_local_cluster("bench-memory", num_cpus=1, object_store_memory=100_000_000)
    runs = []
    try:
        wait_for_dashboard(ref.address)
        for size in sizes:
            command = [sys.executable, "-m", "benchmarks.trigger_memory", "--child", ref.address, str(size)]
            done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(command)} failed: {done.stderr[-2000:]}")
            run = json.loads(done.stdout.strip().splitlines()[-1])
            print(json.dumps(run), flush=True)
            runs.append(run)
    finally:
        stop_local_cluster(ref)
    growth = runs[-1]["peak_rss_mb"] - runs[0]["peak_rss_mb"]
    return {
        "against": "a real local Ray head (Ray 2.60, loopback)",
        "runs": runs,
        "peak_rss_growth_mb": round(growth, 1),
        "every_line_delivered": all(
            r["job_lines_shown"] == r["job_lines"] and r["out_of_order"] == 0 and r["status"] == "success" for r in runs
        ),
        "command": "python -m benchmarks.trigger_memory --sizes-mb " + " ".join(f"{s:g}" for s in sizes),
    }


def table(data: dict[str, Any]) -> str:
    rows = [
        "| job output | job lines | shown (in order, once) | RSS before | peak RSS | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for run in data["runs"]:
        ok = "ok" if run["job_lines_shown"] == run["job_lines"] and run["out_of_order"] == 0 else "MISSING"
        rows.append(
            f"| {run['megabytes']:g} MiB | {run['job_lines']} | {run['job_lines_shown']} {ok}"
            f" | {run['rss_before_mb']} MB | {run['peak_rss_mb']} MB | {run['seconds']} |"
        )
    rows.append("")
    rows.append(
        f"Peak RSS growth from the smallest to the largest: **{data['peak_rss_growth_mb']} MB** "
        f"(goal < 20 MB); against {data['against']}; command `{data['command']}`."
    )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[1, 200])
    parser.add_argument("--child", nargs=2, metavar=("ADDRESS", "MB"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help="write the JSON here too")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], float(args.child[1]))), flush=True)
        return
    data = measure(args.sizes_mb)
    if args.out:
        with open(args.out, "w") as out:
            json.dump(data, out, indent=2)
    print(table(data))


if __name__ == "__main__":
    main()
