"""Pools without a cluster: the policy's checks, the pool's key and name, the spec comparison, the Lease
and idle rules, and the operator's refusals (tests/integration/test_pools_kuberay.py runs them on the
control plane)."""

from __future__ import annotations

import logging
from datetime import timedelta
from types import SimpleNamespace

import pytest

from airflow_provider_flyray import backends
from airflow_provider_flyray.backends import ClusterRequest
from airflow_provider_flyray.config import OnFinishAction, RayJobConfig, WorkerNodeConfig
from airflow_provider_flyray.connection import ConnectionSettings
from airflow_provider_flyray.errors import ConfigError
from airflow_provider_flyray.naming import TaskIdentity, is_valid_cluster_name
from airflow_provider_flyray.operators.arguments import pool_request
from airflow_provider_flyray.owners import TaskInstanceOwner
from airflow_provider_flyray.pool_leases import (
    IDLE_TTL_ANNOTATION,
    LAST_USED_ANNOTATION,
    epoch_of,
    is_live,
    lease_manifest,
    lease_name,
    micro_time,
    pool_verdict,
    stale_leases,
)
from airflow_provider_flyray.reuse import (
    PoolOwner,
    ReusePolicy,
    pool_spec,
    reuse_policy_from,
    spec_differences,
    spec_fingerprint,
)

NOW = 1_800_000_000.0
SMALL = RayJobConfig(worker_node_config=[WorkerNodeConfig(group_name="w", replicas=1)])
BIGGER = RayJobConfig(worker_node_config=[WorkerNodeConfig(group_name="w", replicas=2)])


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"idle_ttl": -1}, "reuse.idle_ttl"),
        ({"idle_ttl": "600"}, "reuse.idle_ttl"),
        ({"idle_ttl": True}, "reuse.idle_ttl"),
        ({"scope": "run"}, "reuse.scope"),
        ({"key": ""}, "reuse.key"),
        ({"key": "x" * 201}, "reuse.key"),
        ({"lease_seconds": 1}, "reuse.lease_seconds"),
        ({"lease_seconds": 30.5}, "reuse.lease_seconds"),
    ],
)
def test_a_bad_policy_names_its_field(fields, field):
    with pytest.raises(ConfigError) as err:
        ReusePolicy(**fields)
    assert err.value.field == field


def test_a_policy_from_a_dict_or_a_timedelta():
    assert reuse_policy_from({"idle_ttl": timedelta(minutes=2), "scope": "global"}) == ReusePolicy(120.0, "global")
    assert reuse_policy_from(None) is None
    with pytest.raises(ConfigError, match=r"unknown fields \['ttl'\]"):
        reuse_policy_from({"ttl": 5})
    with pytest.raises(ConfigError, match="expected a ReusePolicy"):
        reuse_policy_from("600")


def test_the_same_config_is_the_same_pool_and_another_config_another_pool():
    a = PoolOwner.of(ReusePolicy(scope="global"), SMALL, "dag_a", "run_1")
    b = PoolOwner.of(ReusePolicy(scope="global"), SMALL, "dag_b", "run_2")
    c = PoolOwner.of(ReusePolicy(scope="global"), BIGGER, "dag_a", "run_1")
    assert a.key == b.key and a.cluster_name() == b.cluster_name()
    assert c.key != a.key and c.cluster_name() != a.cluster_name()
    assert is_valid_cluster_name(a.cluster_name()) and a.cluster_name().startswith("flyray-pool-")


def test_a_dag_run_pool_is_one_per_run_and_a_named_pool_reads_in_its_name():
    policy = ReusePolicy(scope="dag_run", key="Feature Store!")
    one = PoolOwner.of(policy, SMALL, "etl", "manual__1")
    two = PoolOwner.of(policy, SMALL, "etl", "manual__2")
    assert one.key == "pool|dag_run|etl|manual__1|Feature Store!"
    assert one.cluster_name() != two.cluster_name()
    assert one.cluster_name().startswith("flyray-pool-feature-store-")
    long = PoolOwner.of(ReusePolicy(key="k" * 200), SMALL, "d", "r")
    assert len(long.cluster_name()) <= 53 and is_valid_cluster_name(long.cluster_name())


def test_the_spec_fingerprint_ignores_names_and_the_differences_are_named():
    assert spec_fingerprint(pool_spec(SMALL)) == spec_fingerprint(pool_spec(RayJobConfig(**SMALL.__dict__)))
    assert spec_fingerprint(pool_spec(SMALL)) != spec_fingerprint(pool_spec(BIGGER))
    differences = spec_differences(pool_spec(BIGGER), pool_spec(SMALL))
    assert differences and all("replicas" in d.lower() for d in differences), differences
    assert "spec.workerGroupSpecs[0]" in differences[0]
    assert spec_differences(pool_spec(SMALL), pool_spec(SMALL)) == []


def cluster(*, created: float, last_used: float | None = None, ttl: float | None = 60.0, deleting: bool = False):
    annotations = {}
    if ttl is not None:
        annotations[IDLE_TTL_ANNOTATION] = f"{ttl:g}"
    if last_used is not None:
        annotations[LAST_USED_ANNOTATION] = micro_time(last_used)
    meta = {"name": "p", "creationTimestamp": micro_time(created), "annotations": annotations, "resourceVersion": "1"}
    if deleting:
        meta["deletionTimestamp"] = micro_time(created)
    return {"metadata": meta}


def lease(holder: str, renewed: float, seconds: int = 30):
    return lease_manifest(cluster_name="p", namespace="ns", holder_key=holder, lease_seconds=seconds, now=renewed)


def test_time_round_trips_and_lease_names_are_per_holder():
    assert epoch_of(micro_time(NOW + 0.25)) == pytest.approx(NOW + 0.25)
    assert epoch_of("not a time") is None and epoch_of(None) is None
    assert lease_name("p", "a|t|r|-1") != lease_name("p", "a|t|r|0")
    assert lease("a", NOW)["metadata"]["name"] == lease_name("p", "a")


def test_a_live_lease_keeps_the_cluster_whatever_its_idle_time():
    verdict = pool_verdict(cluster(created=NOW - 3600, ttl=0), [lease("a", NOW - 10)], NOW)
    assert not verdict.delete and verdict.live_holders == ("a",)


def test_an_expired_lease_counts_from_its_end_and_then_the_cluster_goes():
    expired = lease("killed", NOW - 100, seconds=30)  # ended at NOW - 70 (+5 s skew allowed)
    assert not is_live(expired, NOW)
    keep = pool_verdict(cluster(created=NOW - 3600, ttl=120), [expired], NOW)
    assert not keep.delete and "idle for 70s of its idle_ttl 120s" in keep.reason
    gone = pool_verdict(cluster(created=NOW - 3600, ttl=60), [expired], NOW)
    assert gone.delete and "idle for 70s" in gone.reason
    assert stale_leases([expired, lease("a", NOW)], NOW) == [expired["metadata"]["name"]]


def test_the_idle_clock_starts_at_the_last_use():
    assert not pool_verdict(cluster(created=NOW - 3600, last_used=NOW - 30, ttl=60), [], NOW).delete
    assert pool_verdict(cluster(created=NOW - 3600, last_used=NOW - 61, ttl=60), [], NOW).delete
    assert not pool_verdict(cluster(created=NOW - 10, ttl=60), [], NOW).delete
    assert pool_verdict(cluster(created=NOW - 1, ttl=0), [], NOW).delete


def test_a_cluster_without_a_ttl_or_already_going_is_left_alone():
    assert "delete it by hand" in pool_verdict(cluster(created=NOW - 3600, ttl=None), [], NOW).reason
    assert not pool_verdict(cluster(created=NOW - 3600, ttl=0, deleting=True), [], NOW).delete


def request_for(settings: ConnectionSettings, reuse: ReusePolicy | None) -> ClusterRequest:
    owner = TaskInstanceOwner(TaskIdentity("d", "t", "r"))
    return ClusterRequest(owner, settings, "ns", SMALL, OnFinishAction.DELETE_CLUSTER, reuse=reuse)


def test_a_pool_request_goes_to_the_pool_backend_on_kubernetes_only():
    assert backends.select(request_for(ConnectionSettings(), ReusePolicy())).name == "pool"
    assert backends.select(request_for(ConnectionSettings(), None)).name == "raycluster"
    local = ConnectionSettings(backend="local")
    assert backends.select(request_for(local, ReusePolicy())).name == "local"


def operator(**fields):
    defaults = {"cluster_name": None, "wait_for_completion": True, "log": logging.getLogger("test")}
    return SimpleNamespace(**{**defaults, **fields})


def test_the_operator_refuses_what_contradicts_a_pool():
    k8s, policy = ConnectionSettings(), ReusePolicy()
    assert pool_request(policy, k8s, operator(), shared=None, address=None) is policy
    with pytest.raises(ConfigError, match="remove reuse or address") as err:
        pool_request(policy, k8s, operator(), shared=None, address="http://127.0.0.1:8265")
    assert err.value.field == "reuse"
    with pytest.raises(ConfigError, match="remove reuse or cluster_name"):
        pool_request(policy, k8s, operator(cluster_name="mine"), shared=None, address=None)
    with pytest.raises(ConfigError) as err:
        pool_request(policy, k8s, operator(wait_for_completion=False), shared=None, address=None)
    assert err.value.field == "wait_for_completion"


def test_the_local_backend_runs_a_pool_task_on_its_own_head_and_says_so(caplog):
    with caplog.at_level(logging.WARNING):
        assert (
            pool_request(ReusePolicy(), ConnectionSettings(backend="local"), operator(), shared=None, address=None)
            is None
        )
    assert "reuse= is for the Kubernetes backend" in caplog.text


def test_the_operator_takes_reuse_and_refuses_another_lifecycle_with_it():
    from airflow_provider_flyray import FlyteRayOperator

    op = FlyteRayOperator(task_id="pooled", entrypoint="echo", reuse={"idle_ttl": 60, "scope": "global"})
    assert op.reuse == ReusePolicy(60.0, "global")
    with pytest.raises(ConfigError) as err:
        FlyteRayOperator(
            task_id="ttl", entrypoint="echo", reuse=ReusePolicy(), ray_job_config={"ttl_seconds_after_finished": 30}
        )
    assert err.value.field == "ray_job_config.ttl_seconds_after_finished"
    with pytest.raises(ConfigError) as err:
        FlyteRayOperator(task_id="keep", entrypoint="echo", reuse=ReusePolicy(), on_finish_action="keep_cluster")
    assert err.value.field == "on_finish_action"
