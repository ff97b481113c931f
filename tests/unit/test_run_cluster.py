"""The DAG run's shared cluster, without a cluster: its owner, the orphan rule, ``cluster=`` checking,
backend selection (tests/integration/test_run_cluster_local.py runs it on real Airflow and Ray)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from airflow_provider_flyray import backends
from airflow_provider_flyray.backends import ClusterRequest
from airflow_provider_flyray.cluster import ClusterRef
from airflow_provider_flyray.config import OnFinishAction, RayJobConfig
from airflow_provider_flyray.connection import ConnectionSettings
from airflow_provider_flyray.dag_run_owner import DagRunOwner, run_of_key, run_orphans
from airflow_provider_flyray.errors import ConfigError
from airflow_provider_flyray.manifest import owned_cluster_manifest
from airflow_provider_flyray.naming import OWNER_ANNOTATION, TaskIdentity, is_valid_cluster_name
from airflow_provider_flyray.operators.arguments import shared_cluster
from airflow_provider_flyray.orphans import TaskKey
from airflow_provider_flyray.owners import TaskInstanceOwner

OWNER = DagRunOwner("etl", "manual__2026-12-02T10:00:00+00:00", "ray_cluster")


def test_the_owner_is_the_run_and_names_a_valid_cluster_per_setup_try():
    assert OWNER.key == "etl|ray_cluster|manual__2026-12-02T10:00:00+00:00|dag-run"
    assert run_of_key(OWNER.key) == ("etl", "ray_cluster", "manual__2026-12-02T10:00:00+00:00")
    name = OWNER.cluster_name()
    assert is_valid_cluster_name(name) and name.startswith("etl-ray-cluster-")
    retry = DagRunOwner(OWNER.dag_id, OWNER.run_id, OWNER.setup_task_id, try_number=2)
    assert retry.key == OWNER.key and retry.cluster_name() != name  # adopted by key, named per try
    other_run = DagRunOwner(OWNER.dag_id, "scheduled__2026-12-03", OWNER.setup_task_id)
    assert other_run.cluster_name() != name and other_run.family_selector() == OWNER.family_selector()


def test_a_task_instances_orphan_rule_never_judges_a_run_cluster():
    # The key does not parse as a task instance's: a task's sweep leaves the run's cluster alone.
    assert TaskKey.parse(OWNER.key) is None
    assert run_of_key(TaskInstanceOwner(TaskIdentity("etl", "ray_cluster", "r1")).key) is None


def cluster(owner: DagRunOwner, deleting: bool = False) -> dict[str, Any]:
    manifest = owned_cluster_manifest(RayJobConfig(), owner, "ns", OnFinishAction.DELETE_CLUSTER)
    if deleting:
        manifest["metadata"]["deletionTimestamp"] = "2026-12-02T10:00:00Z"
    return manifest


def test_clusters_of_finished_runs_are_orphans_and_live_runs_keep_theirs():
    runs = {"done-ok": "success", "done-bad": "failed", "running": "running", "queued": "queued"}
    owners = {run: DagRunOwner("etl", run, "ray_cluster") for run in [*runs, "unknown"]}
    family = [cluster(o) for o in owners.values()] + [cluster(OWNER)]
    family.append(cluster(DagRunOwner("etl", "done-ok-again", "ray_cluster"), deleting=True))
    hand_made = cluster(owners["done-ok"])
    hand_made["metadata"]["annotations"][OWNER_ANNOTATION] = "someone else"
    family.append(hand_made)
    orphans = run_orphans(family, lambda dag_id, run_id: runs.get(run_id), OWNER.key)
    assert sorted(o.owner_key for o in orphans) == sorted([owners["done-ok"].key, owners["done-bad"].key])
    assert all(o.reason.startswith("its DAG run done-") for o in orphans)


REF = ClusterRef("raycluster", "etl-ray-cluster-abc-1", "ns", owned=True, extra={"owner_key": OWNER.key})


def test_cluster_accepts_the_setup_tasks_xcom_and_names_the_field_otherwise():
    assert shared_cluster(REF.to_dict(), cluster_name=None, address=None) == REF
    assert shared_cluster(None, cluster_name=None, address=None) is None
    for bad in ("etl-ray-cluster", {"name": "x"}, {"backend": "raycluster", "name": "x", "colour": "red"}):
        with pytest.raises(ConfigError) as caught:
            shared_cluster(bad, cluster_name=None, address=None)
        assert caught.value.field == "cluster" and "create.output" in str(caught.value)
    with pytest.raises(ConfigError, match="not both"):
        shared_cluster(REF.to_dict(), cluster_name="mine", address=None)


def test_a_task_on_the_run_cluster_uses_it_without_owning_it():
    request = ClusterRequest(
        owner=TaskInstanceOwner(TaskIdentity("etl", "work", "r1")),
        settings=ConnectionSettings(),
        namespace="ns",
        config=RayJobConfig(),
        on_finish_action=OnFinishAction.DELETE_CLUSTER,
        cluster=REF,
    )
    backend = backends.select(request)
    assert backend.name == "shared"
    ref = asyncio.run(backend.acquire(None, request, logging.getLogger()))  # type: ignore[arg-type]
    assert ref == ClusterRef("raycluster", REF.name, "ns", owned=False, extra=REF.extra)
    # Its release is the KubeRay backend's, which never deletes a cluster it does not own.
    assert backends.backend_for(ref).name == "raycluster"
    released = asyncio.run(
        backends.backend_for(ref).release(
            None,  # type: ignore[arg-type]
            ref,
            action=OnFinishAction.DELETE_CLUSTER,
            ending=backends.base.Ending.SUCCEEDED,
            owner_key=None,
            log=logging.getLogger(),
        )
    )
    assert released is False


def test_the_short_form_puts_mapped_and_plain_tasks_between_setup_and_teardown():
    """A mapped body (``.partial().expand()``) as well as plain tasks: the teardown waits for all of
    them (Airflow's setup/teardown context alone leaves mapped operators out, and the teardown then ran
    as soon as the cluster was ready, deleting it under the jobs: found by benchmarks/shared_clusters.py)."""
    import pendulum
    from airflow.sdk import DAG

    from airflow_provider_flyray import FlyteRayOperator, ray_cluster_for_run

    with (
        DAG("mapped_block", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag,
        ray_cluster_for_run("ray_cluster", ray_job_config=RayJobConfig()) as cluster,
    ):
        mapped = FlyteRayOperator.partial(task_id="mapped", cluster=cluster).expand(entrypoint=["a", "b"])
        first = FlyteRayOperator(task_id="first", cluster=cluster, entrypoint="x")
        then = FlyteRayOperator(task_id="then", cluster=cluster, entrypoint="y")
        first >> then
    delete = dag.task_dict["delete_ray_cluster"]
    assert delete.is_teardown and dag.task_dict["ray_cluster"].is_setup
    assert delete.upstream_task_ids == {"ray_cluster", "mapped", "then"}
    assert dag.task_dict["ray_cluster"].downstream_task_ids == {"delete_ray_cluster", "mapped", "first", "then"}
    assert mapped.downstream_task_ids == {"delete_ray_cluster"}
