"""The KubeRay paths on the real control plane (kube-apiserver, controller-manager, KubeRay operator,
pods as processes): transient cluster, proxy access, job failure, existing cluster, reattach, ownership,
fast startup failures, and that nothing is left behind."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest
from kubernetes import client

from airflow_provider_flyray.cluster import Backend, ClusterRef
from airflow_provider_flyray.config import HeadNodeConfig, RayJobConfig, WorkerNodeConfig
from airflow_provider_flyray.errors import ClusterNotOwnedError
from airflow_provider_flyray.hooks.ray_cluster import RayClusterHook
from airflow_provider_flyray.jobs_api import JobSubmission
from airflow_provider_flyray.manifest import task_cluster_manifest
from airflow_provider_flyray.naming import (
    TaskIdentity,
    submission_id_for,
)
from airflow_provider_flyray.triggers.ray_job import RayJobTrigger
from tests.conftest import REPO

pytestmark = [pytest.mark.kube]

SMALL_HEAD = HeadNodeConfig(
    requests={"cpu": "1", "memory": "1Gi"}, ray_start_params={"num-cpus": "1", "object-store-memory": "100000000"}
)


@pytest.fixture(scope="module")
def kube(kube_control_plane):
    api = kube_control_plane.api_client()
    return {
        "cp": kube_control_plane,
        "core": client.CoreV1Api(api),
        "custom": client.CustomObjectsApi(api),
    }


@pytest.fixture
def namespace(kube, monkeypatch):
    """A fresh namespace and a `ray_kube` connection to it (pod-IP dashboard access)."""
    name = f"flyray-it-{uuid.uuid4().hex[:6]}"
    kube["core"].create_namespace({"metadata": {"name": name}})
    extra = {"kube_config_path": kube["cp"].kubeconfig, "namespace": name, "dashboard_access": "pod"}
    monkeypatch.setenv("AIRFLOW_CONN_RAY_KUBE", json.dumps({"conn_type": "flyray", "extra": extra}))
    proxy_extra = {**extra, "dashboard_access": "proxy"}
    monkeypatch.setenv("AIRFLOW_CONN_RAY_KUBE_PROXY", json.dumps({"conn_type": "flyray", "extra": proxy_extra}))
    yield name
    kube["core"].delete_namespace(name)


def clusters_in(kube, ns: str) -> list[dict]:
    return kube["custom"].list_namespaced_custom_object("ray.io", "v1", ns, "rayclusters")["items"]


def wait_until_empty(kube, ns: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while True:
        pods = kube["core"].list_namespaced_pod(ns).items
        if not clusters_in(kube, ns) and not pods:
            return
        assert time.time() < deadline, f"left behind: {[p.metadata.name for p in pods]}, {clusters_in(kube, ns)}"
        time.sleep(1)


def create_cluster(hook: RayClusterHook, ns: str, identity: TaskIdentity, config: RayJobConfig) -> ClusterRef:
    manifest = task_cluster_manifest(config, identity, ns)
    hook.create_or_adopt_cluster(manifest, identity.task_key)
    return ClusterRef(Backend.KUBERNETES, name=manifest["metadata"]["name"], namespace=ns, owned=True)


def run_trigger(
    conn_id: str, ref: ClusterRef, identity: TaskIdentity, entrypoint: str, timeout: float = 300, **kw
) -> dict:
    trigger = RayJobTrigger(
        ray_conn_id=conn_id,
        cluster=ref.to_dict(),
        submission=JobSubmission(submission_id_for(identity), entrypoint).to_dict(),
        owner_key=identity.task_key,
        poll_interval=1,
        startup_deadline=time.time() + 240,
        **kw,
    )

    async def first() -> dict:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("no event")

    return asyncio.run(asyncio.wait_for(first(), timeout))


def dags_test(dag_id: str, env: dict[str, str], conf: dict | None = None, timeout: float = 900) -> str:
    command = [sys.executable, "-m", "airflow", "dags", "test", dag_id]
    if conf:
        command += ["-c", json.dumps(conf)]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env}, timeout=timeout)
    return result.stdout + result.stderr


def test_transient_cluster_example_dag(kube, namespace, airflow_db):
    """example_flyray_kuberay: 1 head + 1 worker, the job sees 2 Ray nodes, the cluster is gone after."""
    conn = json.loads(os.environ["AIRFLOW_CONN_RAY_KUBE"])
    output = dags_test("example_flyray_kuberay", {"AIRFLOW_CONN_RAY_DEFAULT": json.dumps(conn)})
    assert "FLYRAY_RESULT alive nodes: 2" in output, output[-4000:]
    assert "state=success" in output
    assert "Released RayCluster" in output
    wait_until_empty(kube, namespace)


def test_proxy_access_through_the_api_server(kube, namespace):
    hook = RayClusterHook("ray_kube_proxy")
    identity = TaskIdentity("proxy", "t", uuid.uuid4().hex)
    ref = create_cluster(hook, namespace, identity, RayJobConfig(head_node_config=SMALL_HEAD))
    try:
        event = run_trigger("ray_kube_proxy", ref, identity, "python -c \"print('via proxy')\"")
        assert event["status"] == "success", event
        assert "via proxy" in event["log_tail"]
        # The proxy URL is not browser-reachable: no link rather than a broken one.
        assert event["dashboard_url"] is None
    finally:
        assert hook.delete_cluster(ref, identity.task_key)
    wait_until_empty(kube, namespace)


def test_failed_job_fails_the_task_and_deletes_the_cluster(kube, namespace, tmp_path):
    home = tmp_path / "home"
    dags = home / "dags"
    shutil.copytree(REPO / "tests" / "dags", dags)
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW_CONN_RAY_KUBE": os.environ["AIRFLOW_CONN_RAY_KUBE"],
    }
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, env={**os.environ, **env}
    )
    output = dags_test("flyray_kube_failing_job", env)
    assert "state=failed" in output
    assert "KUBE FINAL WORDS" in output and "FAILED" in output, output[-4000:]
    wait_until_empty(kube, namespace)


def test_existing_cluster_is_used_and_left_alone(kube, namespace, airflow_db):
    hook = RayClusterHook("ray_kube")
    identity = TaskIdentity("shared", "cluster", uuid.uuid4().hex)
    ref = create_cluster(hook, namespace, identity, RayJobConfig(head_node_config=SMALL_HEAD))
    try:
        conn = os.environ["AIRFLOW_CONN_RAY_KUBE"]
        output = dags_test(
            "example_flyray_existing_cluster",
            {"AIRFLOW_CONN_RAY_DEFAULT": conn},
            conf={"cluster_name": ref.name, "namespace": namespace},
        )
        assert "FLYRAY_RESULT 1.0" in output, output[-4000:]
        assert "state=success" in output
        assert [c["metadata"]["name"] for c in clusters_in(kube, namespace)] == [ref.name]
    finally:
        hook.delete_cluster(ref, identity.task_key)
    wait_until_empty(kube, namespace)


def test_reattach_and_ownership(kube, namespace):
    """Same try twice: the second create adopts the cluster; another task's name clash is refused."""
    hook = RayClusterHook("ray_kube")
    identity = TaskIdentity("owner", "t", uuid.uuid4().hex)
    manifest = task_cluster_manifest(RayJobConfig(head_node_config=SMALL_HEAD), identity, namespace)
    _, created = hook.create_or_adopt_cluster(manifest, identity.task_key)
    assert created
    _, created_again = hook.create_or_adopt_cluster(manifest, identity.task_key)
    assert not created_again
    with pytest.raises(ClusterNotOwnedError):
        hook.create_or_adopt_cluster(manifest, "another|task|run|-1")
    foreign = ClusterRef(Backend.KUBERNETES, name=manifest["metadata"]["name"], namespace=namespace, owned=True)
    assert hook.delete_cluster(foreign, "another|task|run|-1") is False  # not ours: untouched
    assert len(clusters_in(kube, namespace)) == 1
    assert hook.delete_cluster(foreign, identity.task_key) is True
    wait_until_empty(kube, namespace)


def test_unschedulable_worker_fails_fast_with_the_reason(kube, namespace):
    hook = RayClusterHook("ray_kube")
    identity = TaskIdentity("unsched", "t", uuid.uuid4().hex)
    config = RayJobConfig(
        head_node_config=SMALL_HEAD,
        worker_node_config=[WorkerNodeConfig(group_name="huge", replicas=1, requests={"cpu": "64"})],
    )
    ref = create_cluster(hook, namespace, identity, config)
    started = time.time()
    try:
        event = run_trigger("ray_kube", ref, identity, "echo never")
    finally:
        hook.delete_cluster(ref, identity.task_key)
    assert event["status"] == "failed" and event["phase"] == "startup"
    assert "Unschedulable" in event["reason"] and "cpu=64" in event["reason"], event["reason"]
    assert time.time() - started < 60
    wait_until_empty(kube, namespace)


def test_crashing_head_fails_within_the_startup_timeout(kube, namespace):
    hook = RayClusterHook("ray_kube")
    identity = TaskIdentity("crash", "t", uuid.uuid4().hex)
    bad_head = HeadNodeConfig(requests={"cpu": "1", "memory": "1Gi"}, ray_start_params={"num-cpus": "-1"})
    ref = create_cluster(hook, namespace, identity, RayJobConfig(head_node_config=bad_head))
    try:
        event = run_trigger("ray_kube", ref, identity, "echo never")
    finally:
        hook.delete_cluster(ref, identity.task_key)
    assert event["status"] == "failed", event
    assert "crash" in event["reason"].lower() or "CrashLoopBackOff" in event["reason"], event["reason"]
    wait_until_empty(kube, namespace)


def test_cluster_deleted_mid_job_fails_at_once(kube, namespace):
    hook = RayClusterHook("ray_kube")
    identity = TaskIdentity("deleted", "t", uuid.uuid4().hex)
    ref = create_cluster(hook, namespace, identity, RayJobConfig(head_node_config=SMALL_HEAD))

    async def scenario() -> tuple[dict, float]:
        trigger = RayJobTrigger(
            ray_conn_id="ray_kube",
            cluster=ref.to_dict(),
            submission=JobSubmission(submission_id_for(identity), "sleep 300").to_dict(),
            owner_key=identity.task_key,
            poll_interval=2,
            startup_deadline=time.time() + 240,
        )

        async def first() -> dict:
            async for event in trigger.run():
                return dict(event.payload)
            raise AssertionError

        task = asyncio.create_task(first())
        while trigger._active_submission_id is None:
            assert not task.done(), task.result()
            await asyncio.sleep(0.5)
        await asyncio.sleep(2)
        await asyncio.to_thread(hook.delete_cluster, ref, identity.task_key)
        deleted_at = time.time()
        event = await asyncio.wait_for(task, 120)
        return event, time.time() - deleted_at

    event, seconds = asyncio.run(scenario())
    assert event["status"] in ("error", "failed") and "was deleted" in event["reason"], event
    assert seconds < 30
    wait_until_empty(kube, namespace)
