"""The local backend's processes: a transient Ray head on this machine, on loopback, in a cgroup of its own.

It is the equivalent of Flyte's local execution: the same Jobs REST API path as a KubeRay cluster, with
no Kubernetes at all. Every port is chosen free on 127.0.0.1 so several local clusters (mapped tasks)
can run side by side. The head runs in a cgroup of its own (:mod:`.local_cgroup`): stopping kills the
cgroup, so no process a job started outlives the task, whatever session or environment it gave itself.
Where no cgroup can be made, the process group and an environment marker are what stopping finds. The
head's temp dir (Ray's files and ``TMPDIR`` of every process in it) is removed at stop.
Needs the ``ray`` wheel (``pip install 'airflow-provider-flyray[local]'``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from airflow_provider_flyray.backends import local_cgroup
from airflow_provider_flyray.cluster import ClusterRef
from airflow_provider_flyray.errors import ClusterStartupError, ConfigError

# Ray's own fixed-default ports that would collide between two local heads.
_PORT_FLAGS = (
    "port",
    "dashboard-port",
    "ray-client-server-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "runtime-env-agent-port",
    "metrics-export-port",
    "node-manager-port",
    "object-manager-port",
)
# `ray start --block` takes ~30 s to wind down on SIGTERM; a transient head has nothing worth saving.
STOP_GRACE_SECONDS = 2.0
CLUSTER_MARKER_ENV = "FLYRAY_LOCAL_CLUSTER"
BACKEND_NAME = "local"
LOCAL_DIR_PREFIX = "flyray-local-"


def ray_executable() -> str:
    candidate = Path(sys.executable).with_name("ray")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("ray")
    if not found:
        raise ConfigError(
            "connection.extra.backend",
            "the local backend needs Ray on the Airflow worker: pip install 'airflow-provider-flyray[local]'",
        )
    return found


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def start_local_cluster(
    name: str, *, num_cpus: float | None = None, num_gpus: float | None = None, object_store_memory: int | None = None
) -> ClusterRef:
    """Start ``ray start --head --block`` in a new session; return at once (the trigger waits for it)."""
    ports = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS)), strict=True))
    # Ray puts unix sockets under the temp dir: keep its path short.
    temp_dir = tempfile.mkdtemp(prefix=LOCAL_DIR_PREFIX, dir="/tmp")
    args = [
        ray_executable(),
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        "--include-dashboard=true",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
        *(f"--{flag}={port}" for flag, port in ports.items()),
    ]
    if num_cpus is not None:
        args.append(f"--num-cpus={num_cpus:g}")
    if num_gpus is not None:
        args.append(f"--num-gpus={num_gpus:g}")
    if object_store_memory is not None:
        args.append(f"--object-store-memory={object_store_memory}")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # Jobs run `python ...` through a shell: make that the Python (and Ray) of this Airflow environment.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    # Every Ray process inherits this marker, including job drivers that Ray starts in a session of
    # their own: stopping the cluster finds them by it, not only by process group.
    env[CLUSTER_MARKER_ENV] = temp_dir
    # Python's multiprocessing (and anything else using the default temp dir) in Ray's processes writes
    # into the cluster's own temp dir, which stopping removes, instead of leaving /tmp/pymp-* behind.
    env["TMPDIR"] = temp_dir
    cgroup, containment = local_cgroup.create_cluster_cgroup(name)
    if cgroup is not None:
        args = local_cgroup.join_command(cgroup.procs_file, args)
    log_path = Path(temp_dir) / "ray-start.log"
    try:
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                args,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
    except BaseException:
        if cgroup is not None:
            cgroup.kill_and_remove()
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    return ClusterRef(
        backend=BACKEND_NAME,
        name=name,
        owned=True,
        address=f"http://127.0.0.1:{ports['dashboard-port']}",
        local_pgid=process.pid,
        local_temp_dir=temp_dir,
        local_cgroup=cgroup.path if cgroup is not None else None,
        extra={"containment": containment},
    )


def _marked_pids(marker: str) -> list[int]:
    """Processes whose environment carries this cluster's marker."""
    needle = f"{CLUSTER_MARKER_ENV}={marker}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                pids.append(int(entry))
    return pids


def local_cluster_pids(ref: ClusterRef) -> list[int]:
    """The cluster's processes: its cgroup's members and those carrying its environment marker."""
    pids = set(_marked_pids(ref.local_temp_dir)) if ref.local_temp_dir else set()
    if (cgroup := local_cgroup.cluster_cgroup(ref.local_cgroup)) is not None:
        pids.update(cgroup.members())
    return sorted(pids)


def local_cluster_alive(ref: ClusterRef) -> bool:
    if not ref.local_pgid:
        return False
    # When this process started the head (non-deferrable path) a dead head is our zombie: reap it.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(ref.local_pgid, os.WNOHANG)
    try:
        os.killpg(ref.local_pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def local_startup_output(ref: ClusterRef, lines: int = 30) -> str:
    if not ref.local_temp_dir:
        return ""
    path = Path(ref.local_temp_dir) / "ray-start.log"
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def stop_local_cluster(ref: ClusterRef, grace_seconds: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM the head's processes, SIGKILL what is left after the grace period (the whole cgroup, then
    the process group and the marked processes), remove the cgroup and the cluster's files."""
    if ref.backend != BACKEND_NAME or not ref.local_pgid:
        raise ClusterStartupError(f"{ref.describe()} is not a local cluster")
    pgid = ref.local_pgid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    for pid in local_cluster_pids(ref):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and (local_cluster_alive(ref) or local_cluster_pids(ref)):
        time.sleep(0.1)
    cgroup = local_cgroup.cluster_cgroup(ref.local_cgroup)
    if cgroup is not None:
        with contextlib.suppress(OSError):
            cgroup.kill()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    for pid in local_cluster_pids(ref):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # Reap the `ray start` process if it is our child (non-deferrable path); harmless otherwise.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pgid, os.WNOHANG)
    if cgroup is not None and not cgroup.kill_and_remove():
        raise ClusterStartupError(f"{ref.describe()}: processes of {cgroup.path} did not end: {cgroup.members()}")
    if ref.local_temp_dir and ref.local_temp_dir.startswith(f"/tmp/{LOCAL_DIR_PREFIX}"):
        shutil.rmtree(ref.local_temp_dir, ignore_errors=True)
