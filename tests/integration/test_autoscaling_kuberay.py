"""KubeRay's own in-tree autoscaler on the control plane (issue 12, item 4): a RayCluster made by the
provider from ``RayJobConfig(enable_autoscaling=True)`` with a worker group of min 0 and max 2 starts
with no worker; a job whose tasks need CPUs the head does not advertise makes the real autoscaler
(``ray kuberay-autoscaler``, the sidecar KubeRay puts in the head pod, talking to the API server with
the pod's service-account token) add workers, at most 2; once they are idle it removes them again; and
deleting the cluster leaves nothing behind (pods, netns, KubeRay's RBAC objects for the autoscaler).
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes import client

from airflow_provider_flyray.config import HeadNodeConfig, RayJobConfig, WorkerNodeConfig
from airflow_provider_flyray.hooks.ray_cluster import RayClusterHook
from airflow_provider_flyray.naming import TaskIdentity
from tests.infra.kube import paths
from tests.infra.kube.fixtures import ControlPlane
from tests.support import tenants
from tests.support.leftovers import head_pod, leftovers
from tests.support.ray_jobs import create_cluster, run_trigger

pytestmark = [pytest.mark.kube]

GROUP = "scale"
MAX_WORKERS = 2
IDLE_SECONDS = 10
# num-cpus 0: the head runs the job's driver but no task, so every task that asks for a CPU needs a
# worker, and only the autoscaler can make one (the group starts at 0 replicas).
HEAD = HeadNodeConfig(
    requests={"cpu": "1", "memory": "1Gi"}, ray_start_params={"num-cpus": "0", "object-store-memory": "100000000"}
)
WORKERS = WorkerNodeConfig(
    group_name=GROUP,
    replicas=0,
    min_replicas=0,
    max_replicas=MAX_WORKERS,
    requests={"cpu": "1", "memory": "1Gi"},
    ray_start_params={"num-cpus": "1", "object-store-memory": "100000000"},
)
CONFIG = RayJobConfig(
    head_node_config=HEAD,
    worker_node_config=[WORKERS],
    enable_autoscaling=True,
    autoscaler_options={"idleTimeoutSeconds": IDLE_SECONDS},
)
# Three 1-CPU tasks at once: a demand of 3 workers, of which the group allows 2. Each task holds its
# CPU a few seconds so the demand is still there when the autoscaler looks (every 5 s).
DRIVER = (
    "import ray, socket, time; ray.init(); "
    "f = ray.remote(num_cpus=1)(lambda: (time.sleep(5), socket.gethostname())[1]); "
    "print('RAN ON', ' '.join(sorted(set(ray.get([f.remote() for _ in range(3)])))))"
)
ENTRYPOINT = f'python -c "{DRIVER}"'


@pytest.fixture
def namespace(kube_control_plane, core, monkeypatch):
    """A fresh namespace and a `ray_kube` connection to it (pod-IP dashboard access)."""
    with tenants.namespace(core, "flyray-scale") as name:
        extra = {"kube_config_path": kube_control_plane.kubeconfig, "namespace": name, "dashboard_access": "pod"}
        monkeypatch.setenv("AIRFLOW_CONN_RAY_KUBE", tenants.flyray_conn(**extra))
        yield name


@dataclass
class ScaleWatch:
    """The cluster's worker pods and its worker group's ``replicas``, sampled every half second in a
    thread (only the autoscaler changes ``replicas``: the provider created the group with 0)."""

    plane: ControlPlane
    namespace: str
    cluster: str
    pod_uids: set[str] = field(default_factory=set)
    workers: dict[str, bool] = field(default_factory=dict)  # pod name -> ready, now
    replicas: int = 0
    peak_pods: int = 0
    peak_replicas: int = 0
    first_worker: float | None = None  # monotonic: first worker pod seen
    first_ready: float | None = None  # monotonic: first worker pod Ready
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> ScaleWatch:
        self._thread = threading.Thread(target=self._run, daemon=True, name="scale-watch")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        api = self.plane.api_client()  # its own client: the fixtures' clients belong to the test thread
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        while not self._stop.is_set():
            pods = core.list_namespaced_pod(self.namespace, label_selector=f"ray.io/cluster={self.cluster}").items
            self.pod_uids.update(p.metadata.uid for p in pods)
            workers = {
                p.metadata.name: _ready(p) for p in pods if p.metadata.labels.get("ray.io/node-type") == "worker"
            }
            spec = custom.get_namespaced_custom_object("ray.io", "v1", self.namespace, "rayclusters", self.cluster)
            self.replicas = int(spec["spec"]["workerGroupSpecs"][0].get("replicas") or 0)
            self.workers = workers
            self.peak_pods = max(self.peak_pods, len(workers))
            self.peak_replicas = max(self.peak_replicas, self.replicas)
            now = time.monotonic()
            if workers and self.first_worker is None:
                self.first_worker = now
            if any(workers.values()) and self.first_ready is None:
                self.first_ready = now
            self._stop.wait(0.5)

    def wait(self, what: str, cond: Any, timeout: float) -> float:
        """Until ``cond()``; the seconds it took."""
        started = time.monotonic()
        while not cond():
            assert time.monotonic() - started < timeout, f"{what} not within {timeout:.0f}s: {self.state()}"
            time.sleep(0.5)
        return time.monotonic() - started

    def state(self) -> str:
        return f"worker pods {self.workers}, replicas {self.replicas}"


def _ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def autoscaler_log(pod: client.V1Pod) -> str:
    """The autoscaler container's output, from the node agent's log of it (there is no kubelet API)."""
    log_file = paths.state("pods", paths.pod_id(pod.metadata.uid), "logs", "autoscaler.log")
    return log_file.read_text(errors="replace") if log_file.exists() else ""


def rbac_left(admin: client.ApiClient, namespace: str, account: str, role: str) -> list[str]:
    """KubeRay's ServiceAccount, Role and RoleBinding for the cluster's autoscaler that still exist."""
    core, rbac = client.CoreV1Api(admin), client.RbacAuthorizationV1Api(admin)
    reads = [
        ("ServiceAccount", account, core.read_namespaced_service_account),
        ("Role", role, rbac.read_namespaced_role),
        ("RoleBinding", role, rbac.read_namespaced_role_binding),
    ]
    left = []
    for kind, name, read in reads:
        try:
            read(name, namespace)
            left.append(f"{kind} {name}")
        except client.ApiException as e:
            if e.status != 404:
                raise
    return left


def test_the_autoscaler_adds_workers_for_a_job_and_removes_them_when_idle(kube_control_plane, core, custom, namespace):
    hook = RayClusterHook("ray_kube")
    identity = TaskIdentity("autoscale", "t", uuid.uuid4().hex)
    ref = create_cluster(hook, namespace, identity, CONFIG)
    admin = kube_control_plane.api_client()
    watch = ScaleWatch(kube_control_plane, namespace, ref.name)
    account = ""
    try:
        with watch:
            # The head is up and its autoscaler is in its loop, reading pods with its own token...
            deadline = time.monotonic() + 240
            while (head := head_pod(core, namespace, ref.name)) is None or autoscaler_log(head).count(
                "Fetched pod data"
            ) < 2:
                assert time.monotonic() < deadline, "the autoscaler never started its loop"
                time.sleep(1)
            assert {c.name for c in head.spec.containers} == {"ray-head", "autoscaler"}
            account = head.spec.service_account_name  # KubeRay's account for the autoscaler, with its Role
            assert account not in (None, "default"), account
            # ...and, with nothing to do, leaves the group at 0.
            time.sleep(6)
            assert watch.workers == {} and watch.peak_replicas == 0, watch.state()

            submitted = time.monotonic()
            event = run_trigger("ray_kube", ref, identity, ENTRYPOINT, timeout=420)
            finished = time.monotonic()
            assert event["status"] == "success", event
            log_tail = "\n".join(event["log_tail"])
            ran_on = next(line for line in log_tail.splitlines() if line.startswith("RAN ON")).split()[2:]
            worker_prefix = f"{ref.name}-{GROUP}-worker-"
            assert ran_on and all(h.startswith(worker_prefix) for h in ran_on), ran_on
            # It is the autoscaler that added them: its own log says so. (Not the job's log, where the
            # driver relays the same event: a crashing extra worker's traces can push it out of the tail.)
            scaled_up = re.search(rf"Adding \d node\(s\) of type {GROUP}", autoscaler_log(head))
            assert scaled_up, autoscaler_log(head)[-4000:]
            # Demand for 3 CPUs, a group of at most 2: exactly 2 workers, never more.
            assert watch.peak_replicas == MAX_WORKERS and watch.peak_pods == MAX_WORKERS, watch.state()
            assert watch.first_worker is not None and watch.first_ready is not None

            # Idle workers go after idleTimeoutSeconds (plus the autoscaler's 5 s loop and pod deletion).
            idle = watch.wait(
                "scale-down to 0", lambda: watch.workers == {} and watch.replicas == 0, IDLE_SECONDS + 120
            )
            print(
                f"\nautoscaling: submit -> first worker pod {watch.first_worker - submitted:.1f}s, "
                f"-> first worker Ready {watch.first_ready - submitted:.1f}s; job done {finished - submitted:.1f}s "
                f"after submit; job done -> 0 workers {idle:.1f}s (idleTimeoutSeconds {IDLE_SECONDS})"
            )
            time.sleep(6)  # and it stays at 0: nothing asks for a worker any more
            assert watch.workers == {} and watch.replicas == 0, watch.state()
    finally:
        hook.delete_cluster(ref, identity.task_key)
    assert leftovers(core, custom, namespace, "", watch.pod_uids) == []
    deadline = time.monotonic() + 30  # the garbage collector deletes KubeRay's RBAC objects (owner refs)
    while left := rbac_left(admin, namespace, account, ref.name):
        assert time.monotonic() < deadline, f"left behind: {left}"
        time.sleep(0.5)
