"""What the benchmarks share: the control plane session, a namespace with the provider's service account,
a real Airflow stack with the benchmark DAGs, the operator's timings line, summaries and machine facts.

Nothing here stops a control plane it did not start, and everything it creates is removed on exit.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, watch

from airflow_provider_flyray.status import Startup, interpret_startup
from tests.infra.kube.fixtures import ControlPlane
from tests.infra.kube.fixtures import session as control_plane_session
from tests.infra.stack import AirflowStack
from tests.support import REPO, airflow_runs
from tests.support.airflow_runs import E2E_DAGS, example_dags
from tests.support.tenants import Tenant, provider_tenant

RESULTS = REPO / "benchmarks" / "results"
BENCH_DAGS = REPO / "benchmarks" / "dags"


def today() -> str:
    return datetime.date.today().isoformat()


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def summary(values: Iterable[float]) -> dict[str, float | int]:
    """Median, min, max and n of a figure (seconds or counts)."""
    items = sorted(float(v) for v in values)
    if not items:
        return {"n": 0}
    return {"median": statistics.median(items), "min": items[0], "max": items[-1], "n": len(items)}


def summarize_rows(rows: list[dict[str, float]]) -> dict[str, dict[str, float | int]]:
    keys = [k for k in rows[0] if all(isinstance(r.get(k), int | float) for r in rows)] if rows else []
    return {k: summary(r[k] for r in rows) for k in keys}


def fmt(stat: dict[str, Any], unit: str = "s", digits: int = 2) -> str:
    """``0.42 s (0.38-0.51)`` from a summary."""
    if not stat or not stat.get("n"):
        return "-"
    m, lo, hi = (f"{stat[k]:.{digits}f}" for k in ("median", "min", "max"))
    return f"{m} {unit} ({lo}-{hi})" if stat["n"] > 1 else f"{m} {unit}"


def machine_facts() -> dict[str, Any]:
    from importlib.metadata import version

    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError):
        mem_kib = int(Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1])
    versions = {}
    for dist in ("apache-airflow", "ray", "kubernetes", "kubernetes_asyncio", "aiohttp"):
        with contextlib.suppress(Exception):
            versions[dist] = version(dist)
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": versions,
        "kuberay_operator": "v1.5.0 (tests/infra/kube control plane)",
    }


def timings_from_log(log: str) -> dict[str, float]:
    """The operator's ``flyray timings {json}`` line (epoch seconds of each milestone)."""
    for line in reversed(log.splitlines()):
        if "flyray timings " in line:
            return json.loads(line.split("flyray timings ", 1)[1].split("}", 1)[0] + "}")
    raise RuntimeError("no timings line in the task log")


def worker_slot_seconds(t: dict[str, float]) -> float:
    """Seconds the task held a worker slot in the operator: ``execute`` up to the deferral, plus
    ``execute_complete`` (the task process's own start and exit are not included)."""
    return (t["deferred"] - t["execute_started"]) + (t["finished"] - t["resumed"])


def task_process_seconds(log_file: Path) -> float:
    """Seconds the task's processes were at work, from its own log file: each run (the first and the one
    resuming after the deferral) from its first line (``::group::Pre Execute``: start-up, DAG parse) to its
    last (``::endgroup::`` of Post Execute). Process fork and exit are not in it."""
    runs: list[list[float]] = []
    for line in log_file.read_text().splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        at = epoch(entry.get("timestamp"))
        if at is None:
            continue
        if entry.get("event") == "::group::Pre Execute" or not runs:
            runs.append([at, at])
        runs[-1][1] = at
    return sum(end - start for start, end in runs)


def epoch(iso: str | None) -> float | None:
    """Airflow/Kubernetes timestamps to epoch seconds."""
    if not iso:
        return None
    return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# --------------------------------------------------------------------------------------------------
# Control plane, namespace, service account
# --------------------------------------------------------------------------------------------------


@dataclass
class KubeBench:
    """The control plane (started only if it was down, stopped only then) and one namespace of ours with
    docker/rbac.yaml applied, so the provider runs as its least-privilege service account."""

    plane: ControlPlane
    tenant: Tenant
    workdir: Path
    _cleanups: list[Any] = field(default_factory=list)

    @property
    def namespace(self) -> str:
        return self.tenant.namespace

    @property
    def admin(self) -> client.ApiClient:
        return self.tenant.admin

    @property
    def core(self) -> client.CoreV1Api:
        return self.tenant.core

    @property
    def custom(self) -> client.CustomObjectsApi:
        return self.tenant.custom

    def sa_kubeconfig(self, server: str, name: str) -> str:
        """A kubeconfig holding only the service account's token, for ``server`` (the API server or a proxy)."""
        return self.tenant.write_kubeconfig(self.workdir / name, server, self.plane.ca_file)

    def conn(self, kubeconfig: str, dashboard_access: str, **extra: str) -> str:
        return self.tenant.conn(dashboard_access, kubeconfig=kubeconfig, **extra)

    def on_exit(self, cleanup: Any) -> None:
        self._cleanups.append(cleanup)


@contextlib.contextmanager
def kube_bench(prefix: str = "bench") -> Iterator[KubeBench]:
    workdir = Path(tempfile.mkdtemp(prefix=f"flyray-{prefix}-"))
    try:
        with (
            control_plane_session() as plane,
            provider_tenant(plane, workdir, prefix, token_seconds=7200, wait_deleted=120) as tenant,
        ):
            bench = KubeBench(plane, tenant, workdir)
            try:
                yield bench
            finally:
                for cleanup in reversed(bench._cleanups):
                    with contextlib.suppress(Exception):
                        cleanup()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


class ReadyWatch(threading.Thread):
    """An independent watch on every RayCluster of a namespace: when each became ready (by the same rule
    as the provider: state ``ready`` or HeadPodReady + RayClusterProvisioned), as seen at the API server
    with sub-second resolution, plus the conditions' own ``lastTransitionTime`` (whole seconds)."""

    def __init__(self, admin: client.ApiClient, namespace: str) -> None:
        super().__init__(daemon=True, name=f"ready-watch-{namespace}")
        self.custom = client.CustomObjectsApi(admin)
        self.namespace = namespace
        self.ready_seen: dict[str, float] = {}
        self.condition_time: dict[str, float] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            with contextlib.suppress(Exception):
                for event in watch.Watch().stream(
                    self.custom.list_namespaced_custom_object,
                    "ray.io",
                    "v1",
                    self.namespace,
                    "rayclusters",
                    timeout_seconds=5,
                ):
                    seen = time.time()
                    obj = event["object"]
                    name = obj["metadata"]["name"]
                    if name not in self.ready_seen and interpret_startup(obj, []).state is Startup.READY:
                        self.ready_seen[name] = seen
                        conds = {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}
                        times = [epoch(conds[k].get("lastTransitionTime")) for k in ("HeadPodReady",) if k in conds]
                        if times and times[0]:
                            self.condition_time[name] = times[0]
                    if self._halt.is_set():
                        return

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


# --------------------------------------------------------------------------------------------------
# Airflow
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def airflow_stack(
    connections: dict[str, str], extra_env: dict[str, str] | None = None, dag_files: Iterable[Path] | None = None
) -> Iterator[AirflowStack]:
    """A real Airflow stack with the example, e2e and benchmark DAGs (or ``dag_files``) and the given
    connections (``{"ray_bench": json}`` becomes ``AIRFLOW_CONN_RAY_BENCH``); stopped and removed on exit."""
    home = Path(tempfile.mkdtemp(prefix="flyray-bench-airflow-"))
    if dag_files is None:
        dag_files = [*example_dags(), E2E_DAGS, *sorted(BENCH_DAGS.glob("*.py"))]
    env = {f"AIRFLOW_CONN_{conn_id.upper()}": value for conn_id, value in connections.items()}
    env.update(extra_env or {})
    try:
        with airflow_runs.airflow_stack(home, dag_files, env) as stack:
            yield stack
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run_dag(stack: AirflowStack, dag_id: str, conf: dict[str, Any] | None = None, timeout: float = 900) -> str:
    run_id = stack.trigger(dag_id, conf)
    state = stack.wait_for_run(dag_id, run_id, timeout=timeout, poll=0.5)
    if state != "success":
        raise RuntimeError(f"{dag_id} {run_id} {state}; logs under {stack.home}/logs")
    return run_id


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path
