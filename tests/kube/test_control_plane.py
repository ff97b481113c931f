"""Acceptance tests of the local control plane (tests/infra/kube: real kube-apiserver,
kube-controller-manager, KubeRay operator; pods run as processes by the node agent)."""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import subprocess
import time
import urllib.request
import uuid

import pytest
from kubernetes import client

from tests.infra.kube import paths

pytestmark = pytest.mark.kube

RAY_IMAGE = "rayproject/ray:2.60.0"  # ignored by the node agent
START_PARAMS = {"num-cpus": "1", "object-store-memory": "100000000", "include-dashboard": "true"}


def log(msg: str) -> None:
    print(f"[kube-test {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------- helpers


def ray_container(name: str, cpu: str = "1", memory: str = "1Gi", **extra) -> dict:
    c = {
        "name": name,
        "image": RAY_IMAGE,
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": "2Gi"}},
    }
    c.update(extra)
    return c


def raycluster_spec(worker_replicas: int = 1, worker_cpu: str = "1", head_template: dict | None = None) -> dict:
    spec = {
        "rayVersion": "2.60.0",
        "headGroupSpec": {
            "rayStartParams": dict(START_PARAMS),
            "template": head_template
            or {"spec": {"containers": [ray_container("ray-head")]}},  # default grace period (30 s)
        },
    }
    if worker_replicas is not None:
        spec["workerGroupSpecs"] = [
            {
                "groupName": "wg",
                "replicas": worker_replicas,
                "minReplicas": 0,
                "maxReplicas": max(worker_replicas, 1),
                "rayStartParams": {"num-cpus": "1", "object-store-memory": "100000000"},
                "template": {
                    "spec": {
                        "containers": [ray_container("ray-worker", cpu=worker_cpu)],
                    }
                },
            }
        ]
    return spec


def raycluster(name: str, **kw) -> dict:
    return {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": name}, "spec": raycluster_spec(**kw)}


def wait_for(what: str, fn, timeout: float, interval: float = 0.5):
    t0 = time.monotonic()
    last = None
    while time.monotonic() - t0 < timeout:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class K:
    def __init__(self, cp):
        self.cp = cp
        self.api_client = cp.api_client()
        self.core = client.CoreV1Api(self.api_client)
        self.co = client.CustomObjectsApi(self.api_client)
        self.batch = client.BatchV1Api(self.api_client)

    def get_rc(self, ns, name):
        return self.co.get_namespaced_custom_object("ray.io", "v1", ns, "rayclusters", name)

    def create_rc(self, ns, body):
        return self.co.create_namespaced_custom_object("ray.io", "v1", ns, "rayclusters", body)

    def delete_rc(self, ns, name):
        try:
            self.co.delete_namespaced_custom_object("ray.io", "v1", ns, "rayclusters", name)
        except client.ApiException as e:
            if e.status != 404:
                raise

    def pods(self, ns, selector=""):
        return self.core.list_namespaced_pod(ns, label_selector=selector).items


@pytest.fixture(scope="module")
def k(kube_control_plane):
    return K(kube_control_plane)


@pytest.fixture()
def ns(k):
    name = "kt-" + uuid.uuid4().hex[:6]
    k.core.create_namespace({"metadata": {"name": name}})
    wait_for("default SA", lambda: _sa_exists(k, name), 30)
    yield name
    with contextlib.suppress(client.ApiException):
        k.core.delete_namespace(name)


def _sa_exists(k, ns):
    try:
        k.core.read_namespaced_service_account("default", ns)
        return True
    except client.ApiException:
        return False


def http_json(url: str, data: dict | None = None, ctx: ssl.SSLContext | None = None, timeout: float = 10):
    req = urllib.request.Request(
        url,
        data=json.dumps(data).encode() if data is not None else None,
        headers={"Content-Type": "application/json"},
        method="POST" if data is not None else "GET",
    )
    with urllib.request.urlopen(req, context=ctx, timeout=timeout) as r:
        return json.loads(r.read().decode())


def admin_ssl(cp) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cp.ca_file)
    ctx.load_cert_chain(*cp.client_cert)
    return ctx


def run_job(base: str, entrypoint: str, ctx=None, timeout: float = 180) -> tuple[dict, str]:
    sid = "kt-" + uuid.uuid4().hex[:8]
    resp = http_json(base + "/api/jobs/", {"entrypoint": entrypoint, "submission_id": sid}, ctx)
    assert resp.get("submission_id") == sid, resp

    def done():
        st = http_json(f"{base}/api/jobs/{sid}", ctx=ctx)
        return st if st["status"] in ("SUCCEEDED", "FAILED", "STOPPED") else None

    st = wait_for(f"ray job {sid}", done, timeout, 1)
    logs = http_json(f"{base}/api/jobs/{sid}/logs", ctx=ctx)["logs"]
    return st, logs


def netns_of_pods(pods) -> list[str]:
    ids = {paths.NETNS_PREFIX + paths.pod_id(p.metadata.uid) for p in pods}
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    names = [line.split()[0] for line in out.splitlines() if line.split()]
    return [n for n in names if n in ids]


def processes_of_pods(pods) -> list[int]:
    """PIDs whose environment or cwd points into the pods' work dirs."""
    dirs = [str(paths.state("pods", paths.pod_id(p.metadata.uid))) for p in pods]
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if any(cwd.startswith(d) for d in dirs):
            found.append(int(pid))
    return found


# ----------------------------------------------------------------------------- RayCluster lifecycle


@pytest.fixture(scope="module")
def cluster_ns(k):
    name = "kt-rc-" + uuid.uuid4().hex[:6]
    k.core.create_namespace({"metadata": {"name": name}})
    wait_for("default SA", lambda: _sa_exists(k, name), 30)
    yield name
    with contextlib.suppress(client.ApiException):
        k.core.delete_namespace(name)


@pytest.fixture(scope="module")
def ready_cluster(k, cluster_ns):
    name = "rc1"
    t0 = time.monotonic()
    k.create_rc(cluster_ns, raycluster(name))

    def ready():
        rc = k.get_rc(cluster_ns, name)
        return rc if rc.get("status", {}).get("state") == "ready" else None

    rc = wait_for("RayCluster ready", ready, 180, 0.5)
    log(f"RayCluster {cluster_ns}/{name} ready after {time.monotonic() - t0:.1f}s")
    yield name, rc
    k.delete_rc(cluster_ns, name)


def test_raycluster_ready_with_two_alive_nodes(k, cluster_ns, ready_cluster):
    name, rc = ready_cluster
    conds = {c["type"]: c for c in rc["status"].get("conditions", [])}
    assert conds["HeadPodReady"]["status"] == "True", conds
    head = k.pods(cluster_ns, f"ray.io/cluster={name},ray.io/node-type=head")
    workers = k.pods(cluster_ns, f"ray.io/cluster={name},ray.io/node-type=worker")
    assert len(head) == 1 and len(workers) == 1
    assert all(p.status.phase == "Running" for p in head + workers)
    ip = head[0].status.pod_ip
    assert ip and ip.startswith("10.244.0.")

    # ask Ray itself how many nodes are alive (the worker may register a moment after "ready")
    def two_alive():
        st, logs = run_job(
            f"http://{ip}:8265",
            "python -c \"import ray; ray.init(); print('ALIVE', len([n for n in ray.nodes() if n['Alive']]))\"",
        )
        assert st["status"] == "SUCCEEDED", (st, logs)
        return "ALIVE 2" in logs

    wait_for("2 alive ray nodes", two_alive, 60, 2)


def test_job_via_pod_ip_and_service_proxy(k, kube_control_plane, cluster_ns, ready_cluster):
    name, _ = ready_cluster
    head = k.pods(cluster_ns, f"ray.io/cluster={name},ray.io/node-type=head")[0]
    entry = "python -c \"import ray; ray.init(); print('SUM', ray.get(ray.remote(lambda x: x + 1).remote(41)))\""
    st, logs = run_job(f"http://{head.status.pod_ip}:8265", entry)
    assert st["status"] == "SUCCEEDED", (st, logs)
    assert "SUM 42" in logs

    proxy = f"{kube_control_plane.server}/api/v1/namespaces/{cluster_ns}/services/{name}-head-svc:dashboard/proxy"
    st, logs = run_job(proxy, entry, ctx=admin_ssl(kube_control_plane))
    assert st["status"] == "SUCCEEDED", (st, logs)
    assert "SUM 42" in logs


def test_delete_raycluster_cleans_everything(k, cluster_ns, ready_cluster):
    name, _ = ready_cluster
    pods = k.pods(cluster_ns, f"ray.io/cluster={name}")
    assert pods
    assert netns_of_pods(pods), "pods should have network namespaces"
    assert processes_of_pods(pods), "pods should have processes"
    t0 = time.monotonic()
    k.delete_rc(cluster_ns, name)

    def gone():
        left_pods = k.pods(cluster_ns, f"ray.io/cluster={name}")
        svcs = [s for s in k.core.list_namespaced_service(cluster_ns).items if s.metadata.name.startswith(name)]
        return not left_pods and not svcs and not netns_of_pods(pods) and not processes_of_pods(pods)

    wait_for("RayCluster pods/services/processes/netns gone", gone, 30, 0.5)
    log(f"RayCluster cleanup took {time.monotonic() - t0:.1f}s")


# ----------------------------------------------------------------------------- RayJob


def test_rayjob_completes_and_cluster_is_deleted(k, ns):
    name = "rj1"
    spec = raycluster_spec(worker_replicas=None)
    body = {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": name},
        "spec": {
            "entrypoint": "python -c \"import ray; ray.init(); print('RAYJOB', ray.cluster_resources()['CPU'])\"",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 0,
            "rayClusterSpec": spec,
        },
    }
    k.co.create_namespaced_custom_object("ray.io", "v1", ns, "rayjobs", body)
    t0 = time.monotonic()

    def finished():
        rj = k.co.get_namespaced_custom_object("ray.io", "v1", ns, "rayjobs", name)
        st = rj.get("status", {})
        return rj if st.get("jobDeploymentStatus") in ("Complete", "Failed") else None

    rj = wait_for("RayJob finished", finished, 300, 1)
    log(f"RayJob finished after {time.monotonic() - t0:.1f}s: {rj['status'].get('jobDeploymentStatus')}")
    assert rj["status"]["jobDeploymentStatus"] == "Complete", rj["status"]
    assert rj["status"]["jobStatus"] == "SUCCEEDED", rj["status"]
    rc_name = rj["status"]["rayClusterName"]

    def cluster_gone():
        try:
            k.get_rc(ns, rc_name)
            return False
        except client.ApiException as e:
            return e.status == 404

    wait_for("RayJob's RayCluster deleted", cluster_gone, 60, 1)
    wait_for("RayJob's ray pods deleted", lambda: not k.pods(ns, f"ray.io/cluster={rc_name}"), 60, 1)
    k.co.delete_namespaced_custom_object("ray.io", "v1", ns, "rayjobs", name)


# ----------------------------------------------------------------------------- failures


def test_crashing_head_is_reported_and_cluster_not_ready(k, ns):
    name = "rcbad"
    head_template = {
        "metadata": {"annotations": {"ray.io/overwrite-container-cmd": "true"}},
        "spec": {
            "terminationGracePeriodSeconds": 5,
            "containers": [ray_container("ray-head", command=["/bin/bash", "-c", "echo head is broken >&2; exit 3"])],
        },
    }
    k.create_rc(ns, raycluster(name, worker_replicas=0, head_template=head_template))

    def crashing():
        pods = k.pods(ns, f"ray.io/cluster={name},ray.io/node-type=head")
        if not pods or not pods[0].status.container_statuses:
            return None
        cs = pods[0].status.container_statuses[0]
        term = cs.last_state.terminated if cs.last_state else None
        if cs.restart_count > 0 and term and term.exit_code == 3:
            return pods[0]
        return None

    pod = wait_for("head pod crash-looping", crashing, 90, 1)
    cs = pod.status.container_statuses[0]
    assert cs.ready is False
    state = cs.state
    assert (
        (state.waiting and state.waiting.reason == "CrashLoopBackOff")
        or (state.terminated and state.terminated.exit_code == 3)
        or state.running
    ), state
    assert cs.last_state.terminated.reason == "Error"
    rc = k.get_rc(ns, name)
    assert rc.get("status", {}).get("state") != "ready", rc.get("status")
    conds = {c["type"]: c for c in rc.get("status", {}).get("conditions", [])}
    assert conds.get("HeadPodReady", {}).get("status") != "True"
    k.delete_rc(ns, name)


def test_worker_too_big_is_unschedulable(k, ns):
    name = "rcbig"
    node = k.core.read_node(paths.NODE_NAME)
    too_much = str(int(node.status.allocatable["cpu"]) + 1)
    k.create_rc(ns, raycluster(name, worker_replicas=1, worker_cpu=too_much))

    def pending_unschedulable():
        pods = k.pods(ns, f"ray.io/cluster={name},ray.io/node-type=worker")
        if not pods:
            return None
        p = pods[0]
        conds = {c.type: c for c in p.status.conditions or []}
        c = conds.get("PodScheduled")
        if c and c.status == "False" and c.reason == "Unschedulable":
            return p
        return None

    p = wait_for("worker pod Unschedulable", pending_unschedulable, 60, 1)
    assert p.status.phase == "Pending"
    assert not p.spec.node_name
    msg = {c.type: c for c in p.status.conditions}["PodScheduled"].message
    assert msg == "0/1 nodes are available: 1 Insufficient cpu.", msg
    k.delete_rc(ns, name)


# ----------------------------------------------------------------------------- plain pods


def test_plain_pods_env_clusterip_and_phases(k, ns):
    """Node-agent basics: env valueFrom, ClusterIP + DNS names via /etc/hosts, Succeeded/Failed."""
    k.core.create_namespaced_config_map(ns, {"metadata": {"name": "cfg"}, "data": {"greeting": "hello"}})
    server = {
        "metadata": {"name": "echo-server", "labels": {"app": "echo"}},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {
                    "name": "srv",
                    "image": "python:3",
                    "command": [
                        "/bin/sh",
                        "-c",
                        "echo POD=$MY_POD NS=$MY_NS IP=$MY_IP CPU=$MY_CPU G=$(GREETING) > index.html; "
                        "exec python -m http.server 8080",
                    ],
                    "env": [
                        {"name": "MY_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "MY_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                        {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {"name": "MY_CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                        {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}},
                    ],
                    "resources": {"limits": {"cpu": "1", "memory": "256Mi"}},
                    "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
                }
            ],
        },
    }
    k.core.create_namespaced_pod(ns, server)
    k.core.create_namespaced_service(
        ns,
        {
            "metadata": {"name": "echo"},
            "spec": {"selector": {"app": "echo"}, "ports": [{"port": 8080, "targetPort": 8080}]},
        },
    )

    def ready():
        p = k.core.read_namespaced_pod("echo-server", ns)
        return p if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or []) else None

    srv = wait_for("echo-server Ready", ready, 60)
    cip = k.core.read_namespaced_service("echo", ns).spec.cluster_ip
    assert cip.startswith("10.96.")
    expected = f"POD=echo-server NS={ns} IP={srv.status.pod_ip} CPU=1 G=hello"
    url = f"http://echo.{ns}.svc.cluster.local:8080/"
    client_pod = {
        "metadata": {"name": "echo-client"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "cli",
                    "image": "busybox",
                    "command": [
                        "/bin/sh",
                        "-c",
                        # isolation: no default route, no working resolver (names only via /etc/hosts)
                        "if ip route | grep -q default; then echo 'has default route'; exit 2; fi; "
                        "if getent ahosts example.com; then echo 'external name resolved'; exit 3; fi; "
                        f"for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -T 2 -O- {url} && wget -q -T 2 -O- http://echo:8080/ "
                        f"&& exit 0; sleep 1; done; exit 1",
                    ],
                }
            ],
        },
    }
    k.core.create_namespaced_pod(ns, client_pod)
    failing = {
        "metadata": {"name": "failing"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "f", "image": "busybox", "command": ["/bin/sh", "-c", "exit 4"]}],
        },
    }
    k.core.create_namespaced_pod(ns, failing)

    def phase(name):
        p = k.core.read_namespaced_pod(name, ns)
        return p if p.status.phase in ("Succeeded", "Failed") else None

    cli = wait_for("echo-client finished", lambda: phase("echo-client"), 60)
    logf = paths.state("pods", paths.pod_id(cli.metadata.uid), "logs", "cli.log")
    assert cli.status.phase == "Succeeded", (cli.status, logf.read_text() if logf.exists() else "")
    assert cli.status.container_statuses[0].state.terminated.reason == "Completed"
    f = wait_for("failing pod finished", lambda: phase("failing"), 60)
    assert f.status.phase == "Failed"
    term = f.status.container_statuses[0].state.terminated
    assert term.exit_code == 4 and term.reason == "Error"
    # the page served through the ClusterIP carried the env values
    body = urllib.request.urlopen(f"http://{cip}:8080/", timeout=5).read().decode()
    assert expected in body, body
