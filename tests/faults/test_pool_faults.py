"""The pool rows of the fault matrix (``reuse=``): concurrency, killed holders, sweeps and outside deletes.

Real kube-apiserver, KubeRay operator and Ray heads; the provider runs as the least-privilege service
account (docker/rbac.yaml + docker/rbac-pools.yaml). Each row drives the operator's acquire and release
steps and the real RayJobTrigger (several in one event loop, as one triggerer runs them; a killed holder
is a separate process, SIGKILLed). Jobs are counted on the cluster itself; a row leaks nothing: no
RayCluster, pod, network namespace or Lease is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client

from airflow_provider_flyray.backends.pool import judge_and_delete
from airflow_provider_flyray.config import RayJobConfig, WorkerNodeConfig
from airflow_provider_flyray.core.leases import PoolClient
from airflow_provider_flyray.errors import ConfigError
from airflow_provider_flyray.hooks.ray_cluster import RayClusterHook
from airflow_provider_flyray.naming import TaskIdentity
from airflow_provider_flyray.pool_leases import LAST_USED_ANNOTATION, micro_time
from airflow_provider_flyray.reuse import ReusePolicy
from tests.support import REPO
from tests.support.airflow_runs import dags_test
from tests.support.fault_matrix import Scenario
from tests.support.job_counter import JobCounter
from tests.support.leftovers import leftovers, managed_clusters
from tests.support.pools import (
    POOL_SELECTOR,
    acquire,
    grant_pool_role,
    leases_in,
    release,
    run_together,
    sweep,
    trigger,
)
from tests.support.ray_jobs import SMALL_HEAD
from tests.support.tenants import Tenant, provider_tenant

pytestmark = [pytest.mark.kube]

CONN = "ray_pool"
CONFIG = RayJobConfig(head_node_config=SMALL_HEAD)
SLEEPER = "python -c \"import time; print('POOL JOB up', flush=True); time.sleep({})\""


@pytest.fixture(scope="module")
def tenant(kube_control_plane, tmp_path_factory) -> Iterator[Tenant]:
    with provider_tenant(kube_control_plane, tmp_path_factory.mktemp("pools-sa"), "flyray-pools") as tenant:
        grant_pool_role(tenant.admin, tenant.namespace)
        yield tenant


@pytest.fixture
def pool(tenant, core, custom, monkeypatch) -> Iterator[tuple[str, JobCounter]]:
    """A fresh pool key and the job counter of the namespace's pool clusters; the connection as the SA."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", tenant.conn("pod"))
    counter = JobCounter(core, custom, tenant.namespace, POOL_SELECTOR)
    counter.start()
    yield f"row-{uuid.uuid4().hex[:8]}", counter
    counter.stop()


def holder(n: int) -> TaskIdentity:
    return TaskIdentity("pool_dag", f"task_{n}", f"run_{uuid.uuid4().hex[:8]}")


def finish(scenario: Scenario, tenant: Tenant, core, custom, counter: JobCounter, observed: str) -> None:
    counter.stop()
    scenario.observe(observed)
    scenario.jobs = len(counter.jobs_for("pool_dag|"))
    scenario.leaks = leftovers(core, custom, tenant.namespace, POOL_SELECTOR, counter.pod_uids)
    scenario.leaks += [f"Lease {name}" for name in leases_in(tenant.admin, tenant.namespace)]
    assert scenario.leaks == [], scenario.leaks


@pytest.mark.scenario("P1", "two DAG runs acquire one pool at the same moment")
def test_two_acquirers_at_once_share_one_cluster_and_run_together(scenario, tenant, core, custom, pool):
    key, counter = pool
    scenario.expect("one RayCluster, both jobs on it at the same time, deleted after the last release (idle_ttl=0)")
    policy = ReusePolicy(idle_ttl=0, scope="global", key=key, lease_seconds=10)
    holders, refs, start = [holder(1), holder(2)], {}, threading.Barrier(2)

    def take(identity: TaskIdentity) -> None:
        start.wait()
        refs[identity] = acquire(CONN, identity, policy, CONFIG)

    threads = [threading.Thread(target=take, args=(h,)) for h in holders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(refs) == 2 and len({r.name for r in refs.values()}) == 1
    assert len(managed_clusters(custom, tenant.namespace, POOL_SELECTOR)) == 1
    assert len(leases_in(tenant.admin, tenant.namespace)) == 2
    events = run_together(*(trigger(CONN, refs[h], h, SLEEPER.format(4)) for h in holders))
    assert [e["status"] for e in events] == ["success", "success"], events
    starts, ends = [e["start_time"] for e in events], [e["end_time"] for e in events]
    assert max(starts) < min(ends), "the two jobs ran at the same time"
    assert not release(CONN, refs[holders[0]], holders[0]), "the other holder still holds it"
    assert len(managed_clusters(custom, tenant.namespace, POOL_SELECTOR)) == 1
    assert release(CONN, refs[holders[1]], holders[1]), "the last release of an idle_ttl=0 pool deletes it"
    assert len(counter.clusters) == 1 and all(len(uids) == 1 for uids in counter.clusters.values())
    finish(scenario, tenant, core, custom, counter, "1 cluster for 2 acquirers; 2 jobs overlapped; deleted")


@pytest.mark.scenario("P2", "a pool holder SIGKILLed mid-job")
def test_a_killed_holder_loses_its_lease_and_the_cluster_stays_for_the_other(scenario, tenant, core, custom, pool):
    key, counter = pool
    scenario.expect("its Lease expires; the cluster stays while the other holds it; the other succeeds")
    policy = ReusePolicy(idle_ttl=0, scope="global", key=key, lease_seconds=5)
    killed, other = holder(1), holder(2)
    killed_ref, other_ref = acquire(CONN, killed, policy, CONFIG), acquire(CONN, other, policy, CONFIG)
    args = [killed.dag_id, killed.task_id, killed.run_id, SLEEPER.format(300)]
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.pools", "hold", CONN, json.dumps(killed_ref.to_dict()), *args],
        cwd=REPO,
        env=os.environ.copy(),
    )
    outcome: list[dict] = []
    runner = threading.Thread(
        target=lambda: outcome.extend(run_together(trigger(CONN, other_ref, other, SLEEPER.format(45))))
    )
    try:
        counter.wait_for_job(killed.run_id)
        runner.start()
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        killed_at = time.monotonic()
        lease = str(killed_ref.extra["lease"])
        while lease in leases_in(tenant.admin, tenant.namespace):
            assert sweep(CONN) == [], "never deleted while the other holder's lease is live"
            assert time.monotonic() - killed_at < 40, "the killed holder's lease never expired"
            time.sleep(2)
        expired_after = time.monotonic() - killed_at
        assert len(managed_clusters(custom, tenant.namespace, POOL_SELECTOR)) == 1
        runner.join(240)
        assert [e["status"] for e in outcome] == ["success"], outcome
        assert release(CONN, other_ref, other)
    finally:
        if process.poll() is None:
            process.kill()
    observed = f"killed holder's lease gone {expired_after:.0f}s after SIGKILL; cluster kept; other job succeeded"
    finish(scenario, tenant, core, custom, counter, observed)


@pytest.mark.scenario("P3", "a sweep races an acquirer; a lease is live")
def test_a_cluster_is_never_deleted_while_a_lease_is_live(scenario, tenant, core, custom, pool):
    key, counter = pool
    scenario.expect("the sweep keeps a held cluster, and its delete fails once an acquirer touched the cluster")
    policy = ReusePolicy(idle_ttl=0, scope="global", key=key, lease_seconds=30)
    first = holder(1)
    ref = acquire(CONN, first, policy, CONFIG)
    assert sweep(CONN) == [], "held: kept"
    judged = custom.get_namespaced_custom_object("ray.io", "v1", tenant.namespace, "rayclusters", ref.name)
    # An acquirer touches the cluster between the sweep's read and its delete (what acquire does):
    custom.patch_namespaced_custom_object(
        "ray.io",
        "v1",
        tenant.namespace,
        "rayclusters",
        ref.name,
        {"metadata": {"annotations": {LAST_USED_ANNOTATION: micro_time(time.time())}}},
    )

    async def stale_delete(session) -> bool:
        pools = PoolClient(await session.kube(), session.log)
        return await pools.delete_cluster_unchanged(tenant.namespace, ref.name, judged["metadata"]["resourceVersion"])

    assert RayClusterHook(CONN).run(stale_delete) is False, "a delete judged on a stale version must fail"
    assert len(managed_clusters(custom, tenant.namespace, POOL_SELECTOR)) == 1

    # Now idle; KubeRay writes the cluster's status between the sweep's read and its delete (it does so
    # while the cluster starts): the failed precondition is judged again, and the idle cluster goes.
    async def drop_lease(session) -> None:
        await PoolClient(await session.kube(), session.log).release(tenant.namespace, ref.extra["lease"])

    RayClusterHook(CONN).run(drop_lease)
    read = custom.get_namespaced_custom_object("ray.io", "v1", tenant.namespace, "rayclusters", ref.name)
    written = custom.patch_namespaced_custom_object_status(
        "ray.io",
        "v1",
        tenant.namespace,
        "rayclusters",
        ref.name,
        {"status": {"lastUpdateTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))}},
    )
    assert written["metadata"]["resourceVersion"] != read["metadata"]["resourceVersion"]

    async def judge_the_old_read(session) -> bool:
        kube = await session.kube()
        verdict, _, _ = await judge_and_delete(
            kube, PoolClient(kube, session.log), tenant.namespace, read, [], time.time()
        )
        return verdict.delete

    assert RayClusterHook(CONN).run(judge_the_old_read), "a status write must not keep an idle cluster"
    assert release(CONN, ref, first) is False, "already deleted"
    finish(
        scenario,
        tenant,
        core,
        custom,
        counter,
        "kept while held; stale delete refused (409); deleted once idle despite a status write in between",
    )


@pytest.mark.scenario("P4", "a pool teardown killed mid-way")
def test_a_teardown_killed_mid_way_is_finished_by_the_maintenance_dag(scenario, tenant, core, custom, pool, airflow_db):
    key, counter = pool
    scenario.expect("the shipped maintenance DAG deletes the idle cluster and the lease left without one")
    policy = ReusePolicy(idle_ttl=0, scope="global", key=key, lease_seconds=5)
    first = holder(1)
    ref = acquire(CONN, first, policy, CONFIG)
    events = run_together(trigger(CONN, ref, first, SLEEPER.format(1)))
    assert events[0]["status"] == "success", events
    # The worker died after its lease expired and before its release ran: only the sweep is left.
    time.sleep(11)
    # And a lease left by a sweep killed between deleting a cluster and its Leases:
    orphan = holder(2)
    client.CoordinationV1Api(tenant.admin).create_namespaced_lease(
        tenant.namespace,
        {
            "metadata": {
                "name": f"flyray-pool-gone-{key}",
                "labels": {"flyray.airflow.apache.org/pool": "flyray-pool-gone"},
            },
            "spec": {
                "holderIdentity": orphan.task_key,
                "leaseDurationSeconds": 5,
                "renewTime": micro_time(time.time() - 60),
            },
        },
    )
    env = {"AIRFLOW_CONN_RAY_DEFAULT": os.environ[f"AIRFLOW_CONN_{CONN.upper()}"]}
    output = dags_test("example_flyray_pool_maintenance", env)
    assert "state=success" in output, output[-4000:]
    assert f"Deleted pool RayCluster {tenant.namespace}/{ref.name}" in output, output[-4000:]
    finish(scenario, tenant, core, custom, counter, "maintenance DAG: idle cluster and stray lease deleted")


@pytest.mark.scenario("P5", "a pool cluster deleted by someone else")
def test_a_pool_cluster_deleted_under_its_holders_fails_them_all_at_once(scenario, tenant, core, custom, pool):
    key, counter = pool
    scenario.expect("every holder fails within seconds, naming the deletion")
    policy = ReusePolicy(idle_ttl=600, scope="global", key=key, lease_seconds=10)
    holders = [holder(1), holder(2)]
    refs = [acquire(CONN, h, policy, CONFIG) for h in holders]
    outcome: list[dict] = []
    runner = threading.Thread(
        target=lambda: outcome.extend(
            run_together(*(trigger(CONN, r, h, SLEEPER.format(300)) for r, h in zip(refs, holders, strict=True)))
        )
    )
    runner.start()
    for h in holders:
        counter.wait_for_job(h.run_id)
    deleted_at = time.monotonic()
    custom.delete_namespaced_custom_object("ray.io", "v1", tenant.namespace, "rayclusters", refs[0].name)
    runner.join(120)
    took = time.monotonic() - deleted_at
    assert [e["status"] for e in outcome] == ["error", "error"], outcome
    assert all("was deleted while the Ray job was running" in (e["reason"] or "") for e in outcome), outcome
    for r, h in zip(refs, holders, strict=True):
        release(CONN, r, h)
    finish(scenario, tenant, core, custom, counter, f"both holders failed {took:.1f}s after the delete, naming it")


@pytest.mark.scenario("P6", "another cluster config under the same pool key")
def test_a_config_change_under_the_same_key_is_refused_before_anything_runs(scenario, tenant, core, custom, pool):
    key, counter = pool
    scenario.expect("refused naming reuse.key and the differing field; no second cluster, no job, no lease")
    policy = ReusePolicy(idle_ttl=0, scope="global", key=key, lease_seconds=10)
    first, second = holder(1), holder(2)
    ref = acquire(CONN, first, policy, CONFIG)
    before = custom.get_namespaced_custom_object("ray.io", "v1", tenant.namespace, "rayclusters", ref.name)
    bigger = RayJobConfig(
        head_node_config=SMALL_HEAD, worker_node_config=[WorkerNodeConfig(group_name="w", replicas=1)]
    )
    with pytest.raises(ConfigError) as err:
        acquire(CONN, second, policy, bigger)
    assert err.value.field == "reuse.key" and "workerGroupSpecs" in str(err.value), err.value
    after = custom.get_namespaced_custom_object("ray.io", "v1", tenant.namespace, "rayclusters", ref.name)
    assert after["spec"] == before["spec"] and after["metadata"]["uid"] == before["metadata"]["uid"]
    assert len(managed_clusters(custom, tenant.namespace, POOL_SELECTOR)) == 1
    assert len(leases_in(tenant.admin, tenant.namespace)) == 1, "the refused task's lease is gone"
    assert release(CONN, ref, first)
    finish(scenario, tenant, core, custom, counter, f"refused: {str(err.value)[:160]}")
