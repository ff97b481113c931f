"""API economy: Kubernetes API and Ray dashboard requests per job-minute, ours vs a fixed 5 s poll.

    python -m benchmarks.api_economy [--job-seconds 60]

Counted server-side: the provider's connection (``ray_econ``, the docker/rbac.yaml service account) has a
kubeconfig whose ``server:`` is a counting loopback proxy in front of the kube-apiserver
(tests/infra/kube/api_proxy.py) and ``dashboard_access: proxy``, so the Ray Jobs API calls go through the API
server's service proxy and are counted too. Kinds: ``kube`` (plain requests), ``watch`` (a watch counts
once however long it stays open), ``dashboard`` (service-proxy requests; the WebSocket log tail counts once).

Ours: one Airflow task (``bench_econ``) on a transient RayCluster, whole task (create, wait, submit, wait,
delete) and the job's running phase (Ray ``start_time`` -> ``end_time``), for a silent 60 s job and for a
job printing a line a second. Baseline: benchmarks/fixed_poll.py, same cluster, job and proxy.
"""

from __future__ import annotations

import argparse
import logging
import re
import time
from collections import Counter
from typing import Any

from airflow_provider_flyray.config import RayJobConfig
from benchmarks.common import (
    KubeBench,
    airflow_stack,
    kube_bench,
    loadavg,
    run_dag,
    timings_from_log,
    today,
    write_result,
)
from benchmarks.fixed_poll import run_fixed_poll
from tests.infra.kube.api_proxy import ApiProxy, Record
from tests.infra.stack import AirflowStack
from tests.support.ray_jobs import SMALL_HEAD

SILENT = "python -c \"import time; time.sleep({seconds}); print('done')\""
CHATTY = "bash -c 'for i in $(seq {seconds}); do echo tick $i; sleep 1; done'"
HEAD = RayJobConfig(head_node_config=SMALL_HEAD)
KINDS = ("kube", "watch", "dashboard")


def what(record: Record) -> str:
    """``GET rayclusters/{name}``, ``WATCH pods``, ``GET jobs/{id}``...: the request without names."""
    path = record.path.split("?", 1)[0]
    if record.kind == "dashboard":
        tail = path.split("/proxy", 1)[1] or "/"
        tail = re.sub(r"/api/jobs/[^/]+", "/api/jobs/{id}", tail)
        return f"{record.method} {tail}"
    parts = path.strip("/").split("/")
    resource = parts[-1]
    if "namespaces" in parts:
        after = parts[parts.index("namespaces") + 2 :]
        resource = after[0] + ("/{name}" if len(after) > 1 else "") + ("/" + after[2] if len(after) > 2 else "")
    method = "WATCH" if record.kind == "watch" else record.method
    return f"{method} {resource}"


class Window:
    """Proxy records between two instants; epoch times (Ray's, the trigger's) are mapped onto the proxy's
    monotonic clock (the proxy runs in this process)."""

    def __init__(self, proxy: ApiProxy) -> None:
        self.proxy = proxy
        self.offset = time.time() - time.monotonic()

    def records(self, start_epoch: float, end_epoch: float) -> list[Record]:
        lo, hi = start_epoch - self.offset, end_epoch - self.offset
        return [r for r in list(self.proxy.records) if lo <= r.at <= hi]


def counts(records: list[Record], minutes: float) -> dict[str, Any]:
    by_kind = Counter(r.kind for r in records)
    return {
        "requests": {k: by_kind.get(k, 0) for k in KINDS} | {"total": len(records)},
        "per_job_minute": {k: by_kind.get(k, 0) / minutes for k in KINDS} | {"total": len(records) / minutes},
        "by_request": dict(Counter(what(r) for r in records).most_common()),
        "errors": sum(1 for r in records if r.status >= 400 or r.status == 0),
    }


def phases(window: Window, started: float, ended: float, job_start: float, job_end: float) -> dict[str, Any]:
    job_minutes = (job_end - job_start) / 60
    return {
        "task_seconds": ended - started,
        "job_seconds": job_end - job_start,
        "whole_task": counts(window.records(started, ended), job_minutes),
        "running_phase": counts(window.records(job_start, job_end), job_minutes),
    }


def ours(stack: AirflowStack, window: Window, entrypoint: str) -> dict[str, Any]:
    started = time.time()
    run_id = run_dag(stack, "bench_econ", {"entrypoint": entrypoint})
    ended = time.time()
    t = timings_from_log(stack.task_log("bench_econ", run_id, "job"))
    return phases(window, started, ended, t["job_start_time"], t["job_end_time"]) | {
        "job_end_to_event": t["event"] - t["job_end_time"]
    }


def baseline(bench: KubeBench, kubeconfig: str, window: Window, entrypoint: str) -> dict[str, Any]:
    started = time.time()
    job = run_fixed_poll(kubeconfig, bench.namespace, HEAD, entrypoint, interval=5.0)
    ended = time.time()
    if job["status"] != "SUCCEEDED":
        raise RuntimeError(f"fixed-poll job {job['status']}")
    return phases(window, started, ended, job["job_start_time"], job["job_end_time"])


def start_proxy(bench: KubeBench) -> tuple[ApiProxy, str]:
    """The counting proxy (passes the service account's token through) and a kubeconfig pointing at it."""
    # A watch the provider cancels (as it should) makes the proxy log a reset connection: not a finding.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    proxy = ApiProxy(bench.plane.server, bench.plane.ca_file).start()
    bench.on_exit(proxy.stop)
    return proxy, bench.sa_kubeconfig(proxy.url, "counted.kubeconfig")


def measure(
    bench: KubeBench, stack: AirflowStack, proxy: ApiProxy, kubeconfig: str, job_seconds: int
) -> dict[str, Any]:
    window = Window(proxy)
    result: dict[str, Any] = {"job_seconds": job_seconds, "poll_interval": 5.0}
    for name, entrypoint in (("silent", SILENT), ("chatty", CHATTY)):
        result[f"ours_{name}"] = ours(stack, window, entrypoint.format(seconds=job_seconds)) | {"loadavg": loadavg()}
        print(f"ours, {name} job: {brief(result[f'ours_{name}'])}", flush=True)
    result["fixed_poll"] = baseline(bench, kubeconfig, window, SILENT.format(seconds=job_seconds)) | {
        "loadavg": loadavg()
    }
    print(f"fixed 5 s poll: {brief(result['fixed_poll'])}", flush=True)
    return result


def brief(row: dict[str, Any]) -> str:
    whole, running = row["whole_task"], row["running_phase"]
    return (
        f"task {row['task_seconds']:.1f}s, job {row['job_seconds']:.1f}s; whole task {whole['requests']} "
        f"({whole['per_job_minute']['total']:.1f}/job-min); running {running['requests']} "
        f"({running['per_job_minute']['total']:.1f}/job-min)"
    )


def table(result: dict[str, Any]) -> str:
    cols = [("ours_silent", "ours, silent job"), ("ours_chatty", "ours, 1 line/s"), ("fixed_poll", "fixed 5 s poll")]
    cols = [(k, label) for k, label in cols if k in result]
    lines = [
        "| requests per job-minute (count) | " + " | ".join(label for _, label in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for phase, phase_label in (("whole_task", "whole task"), ("running_phase", "running phase")):
        for kind in (*KINDS, "total"):
            cells = []
            for key, _ in cols:
                c = result[key][phase]
                cells.append(f"{c['per_job_minute'][kind]:.1f} ({c['requests'][kind]})")
            lines.append(f"| {phase_label}: {kind} | " + " | ".join(cells) + " |")
    lines.append(
        "| task / job seconds | "
        + " | ".join(f"{result[k]['task_seconds']:.0f} / {result[k]['job_seconds']:.0f}" for k, _ in cols)
        + " |"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--job-seconds", type=int, default=60)
    args = parser.parse_args()
    with kube_bench("bench-econ") as bench:
        proxy, kubeconfig = start_proxy(bench)
        conn = {"ray_econ": bench.conn(kubeconfig, "proxy")}
        with airflow_stack(conn) as stack:
            result = measure(bench, stack, proxy, kubeconfig, args.job_seconds)
    result["date"] = today()
    path = write_result(f"api-economy-{result['date']}.json", result)
    print(
        f"\n{table(result)}\n\n(python -m benchmarks.api_economy --job-seconds {args.job_seconds}; written to {path})"
    )


if __name__ == "__main__":
    main()
