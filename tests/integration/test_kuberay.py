"""The KubeRay paths on the real control plane (kube-apiserver, controller-manager, KubeRay operator,
pods as processes): transient cluster, proxy access, job failure, existing cluster, reattach, ownership,
fast startup failures, and that nothing is left behind."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid

import pytest

from airflow_provider_flyray.cluster import ClusterRef
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
from tests.support import tenants
from tests.support.airflow_runs import dags_test, home_with_test_dags
from tests.support.leftovers import clusters_in, wait_until_empty
from tests.support.ray_jobs import SMALL_HEAD, create_cluster, first_event, run_trigger

pytestmark = [pytest.mark.kube]


@pytest.fixture
def namespace(kube_control_plane, core, monkeypatch):
    """A fresh namespace and a `ray_kube` connection to it (pod-IP dashboard access)."""
    with tenants.namespace(core, "flyray-it") as name:
        extra = {"kube_config_path": kube_control_plane.kubeconfig, "namespace": name, "dashboard_access": "pod"}
        monkeypatch.setenv("AIRFLOW_CONN_RAY_KUBE", tenants.flyray_conn(**extra))
        monkeypatch.setenv("AIRFLOW_CONN_RAY_KUBE_PROXY", tenants.flyray_conn(**{**extra, "dashboard_access": "proxy"}))
        yield name


def test_transient_cluster_example_dag(core, custom, namespace, airflow_db):
    """example_flyray_kuberay: 1 head + 1 worker, the job sees 2 Ray nodes, the cluster is gone after."""
    conn = json.loads(os.environ["AIRFLOW_CONN_RAY_KUBE"])
    output = dags_test("example_flyray_kuberay", {"AIRFLOW_CONN_RAY_DEFAULT": json.dumps(conn)})
    assert "FLYRAY_RESULT alive nodes: 2" in output, output[-4000:]
    assert "state=success" in output
    assert "Released RayCluster" in output
    wait_until_empty(core, custom, namespace)


def test_proxy_access_through_the_api_server(core, custom, namespace):
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
    wait_until_empty(core, custom, namespace)


def test_failed_job_fails_the_task_and_deletes_the_cluster(core, custom, namespace, tmp_path):
    env = home_with_test_dags(tmp_path / "home", {"AIRFLOW_CONN_RAY_KUBE": os.environ["AIRFLOW_CONN_RAY_KUBE"]})
    output = dags_test("flyray_kube_failing_job", env)
    assert "state=failed" in output
    assert "KUBE FINAL WORDS" in output and "FAILED" in output, output[-4000:]
    wait_until_empty(core, custom, namespace)


def test_existing_cluster_is_used_and_left_alone(core, custom, namespace, airflow_db):
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
        assert [c["metadata"]["name"] for c in clusters_in(custom, namespace)] == [ref.name]
    finally:
        hook.delete_cluster(ref, identity.task_key)
    wait_until_empty(core, custom, namespace)


def test_reattach_and_ownership(core, custom, namespace):
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
    foreign = ClusterRef("raycluster", name=manifest["metadata"]["name"], namespace=namespace, owned=True)
    assert hook.delete_cluster(foreign, "another|task|run|-1") is False  # not ours: untouched
    assert len(clusters_in(custom, namespace)) == 1
    assert hook.delete_cluster(foreign, identity.task_key) is True
    wait_until_empty(core, custom, namespace)


def test_unschedulable_worker_fails_fast_with_the_reason(core, custom, namespace):
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
    wait_until_empty(core, custom, namespace)


def test_crashing_head_fails_within_the_startup_timeout(core, custom, namespace):
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
    wait_until_empty(core, custom, namespace)


def test_cluster_deleted_mid_job_fails_at_once(core, custom, namespace):
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

        task = asyncio.create_task(first_event(trigger))
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
    wait_until_empty(core, custom, namespace)
