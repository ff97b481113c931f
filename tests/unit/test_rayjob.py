"""RayJob mode, pure: the RayJob's name, manifest, lifecycle and deadline, KubeRay's verdicts, the
arguments' checks and which backend serves the request. No cluster needed."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest

from airflow_provider_flyray import backends
from airflow_provider_flyray.backends import ClusterRequest
from airflow_provider_flyray.cluster import ClusterRef
from airflow_provider_flyray.config import OnFinishAction, RayJobConfig, WorkerNodeConfig
from airflow_provider_flyray.connection import ConnectionSettings, KubeRayResource, parse_connection_extras
from airflow_provider_flyray.errors import ConfigError
from airflow_provider_flyray.jobs_api import JobSubmission
from airflow_provider_flyray.manifest import task_cluster_manifest
from airflow_provider_flyray.naming import TaskIdentity, submission_id_for
from airflow_provider_flyray.operators.rayjob_mode import rayjob_request
from airflow_provider_flyray.owners import TaskInstanceOwner
from airflow_provider_flyray.packaging import LocalPackage
from airflow_provider_flyray.rayjob import (
    MAX_RAYJOB_NAME,
    RAYJOB_DEADLINE_MARGIN,
    RAYJOB_TTL_MARGIN,
    RayJobRequest,
    SubmissionMode,
    active_deadline_seconds,
    build_rayjob_manifest,
    check_rayjob_name,
    describe_status,
    is_terminal,
    lifecycle_spec,
    rayjob_name_for,
    rayjob_verdict,
)
from airflow_provider_flyray.reuse import ReusePolicy
from airflow_provider_flyray.status import Startup

IDENTITY = TaskIdentity(
    "etl_" + "x" * 80, "train_" + "y" * 60, "manual__2026-12-02T10:00:00+00:00", map_index=2, try_number=3
)
CONFIG = RayJobConfig(worker_node_config=[WorkerNodeConfig(group_name="w", replicas=1)])
JOB = JobSubmission(
    submission_id=submission_id_for(IDENTITY),
    entrypoint="python train.py",
    runtime_env={"py_modules": ["gcs://_ray_pkg_abc.zip"], "env_vars": {"A": "1"}},
    metadata={"airflow_task_key": IDENTITY.task_key},
    entrypoint_num_cpus=1,
    entrypoint_resources={"special": 2.0},
)


def manifest(**kw):
    fields = {
        "name": rayjob_name_for(IDENTITY),
        "namespace": "ns",
        "submission": JOB,
        "on_finish_action": "delete_cluster",
    }
    return build_rayjob_manifest(CONFIG, TaskInstanceOwner(IDENTITY), **{**fields, **kw})


def test_the_name_fits_kuberay_and_is_one_per_try():
    name = rayjob_name_for(IDENTITY)
    assert len(name) <= MAX_RAYJOB_NAME and name.endswith("-3")
    assert rayjob_name_for(IDENTITY) == name, "deterministic"
    retry = TaskIdentity(IDENTITY.dag_id, IDENTITY.task_id, IDENTITY.run_id, IDENTITY.map_index, try_number=4)
    assert rayjob_name_for(retry) != name and rayjob_name_for(retry)[:-2] == name[:-2]
    assert rayjob_name_for(TaskIdentity("9", "_", "r")).startswith("ray-")
    with pytest.raises(ConfigError, match="at most 47"):
        check_rayjob_name("a" * 48)


def test_the_rayjob_carries_the_job_and_the_same_cluster_spec_as_raycluster_mode():
    rayjob = manifest()
    spec = rayjob["spec"]
    assert rayjob["kind"] == "RayJob" and rayjob["apiVersion"] == "ray.io/v1"
    assert spec["rayClusterSpec"] == task_cluster_manifest(CONFIG, IDENTITY, "ns")["spec"]
    assert spec["entrypoint"] == "python train.py" and spec["jobId"] == JOB.submission_id
    assert spec["submissionMode"] == "InteractiveMode"
    assert json.loads(spec["runtimeEnvYAML"]) == JOB.runtime_env
    assert spec["metadata"] == JOB.metadata
    assert spec["entrypointNumCpus"] == 1 and json.loads(spec["entrypointResources"]) == {"special": 2.0}
    assert rayjob["metadata"]["labels"]["try_number"] == "3"
    assert rayjob["metadata"]["annotations"]["flyray.airflow.apache.org/owner"] == IDENTITY.task_key
    assert "activeDeadlineSeconds" not in spec and "clusterSelector" not in spec


def test_an_existing_cluster_is_selected_and_never_given_a_lifecycle():
    spec = manifest(cluster_selector="shared-cluster")["spec"]
    assert spec["clusterSelector"] == {"ray.io/cluster": "shared-cluster"}
    assert "rayClusterSpec" not in spec and "shutdownAfterJobFinishes" not in spec


def test_the_lifecycle_maps_on_finish_action_and_flytes_ttl():
    assert lifecycle_spec(OnFinishAction.DELETE_CLUSTER, None) == {
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": RAYJOB_TTL_MARGIN,
    }
    assert lifecycle_spec("delete_cluster", 300)["ttlSecondsAfterFinished"] == 300 + RAYJOB_TTL_MARGIN
    for kept in ("keep_cluster", "delete_succeeded_cluster"):
        assert lifecycle_spec(kept, 30) == {"shutdownAfterJobFinishes": False}


def test_the_deadline_is_what_is_left_of_execution_timeout_plus_a_margin():
    assert active_deadline_seconds(None) is None
    assert active_deadline_seconds(599.2) == 600 + RAYJOB_DEADLINE_MARGIN
    assert active_deadline_seconds(-5) == 1 + RAYJOB_DEADLINE_MARGIN
    assert manifest(deadline_seconds=660)["spec"]["activeDeadlineSeconds"] == 660


def rayjob(state: str = "", reason: str = "", message: str = "", deleting: bool = False, cluster: str = ""):
    meta = {"name": "j", "deletionTimestamp": "2026-12-02T00:00:00Z"} if deleting else {"name": "j"}
    status = {"jobDeploymentStatus": state, "reason": reason, "message": message, "rayClusterName": cluster}
    return {"metadata": meta, "status": {k: v for k, v in status.items() if v}}


def test_kuberay_giving_a_rayjob_up_fails_the_startup_with_its_reason():
    verdict = rayjob_verdict(rayjob("ValidationFailed", "ValidationFailed", "name too long"), "j")
    assert (
        verdict.state is Startup.FAILED and "ValidationFailed" in verdict.reason and "name too long" in verdict.reason
    )
    assert rayjob_verdict(rayjob("Failed", "DeadlineExceeded"), "j").state is Startup.FAILED
    assert rayjob_verdict(rayjob("Initializing", cluster="j-abcde"), "j").state is Startup.PENDING
    assert rayjob_verdict(rayjob("Running"), "j").state is Startup.PENDING
    assert rayjob_verdict(None, "j").state is Startup.GONE
    assert rayjob_verdict(rayjob("Running", deleting=True), "j").state is Startup.GONE
    assert describe_status(rayjob("Failed", "DeadlineExceeded", "past 60s")) == "Failed/DeadlineExceeded: past 60s"
    assert is_terminal(rayjob("Complete")) and is_terminal(rayjob("ValidationFailed"))
    assert not is_terminal(rayjob("Running")) and not is_terminal(rayjob("Waiting"))


def operator(**fields):
    defaults = {
        "kuberay_resource": None,
        "submission_mode": None,
        "log": logging.getLogger("test"),
        "lifecycle": SimpleNamespace(keep_alive_seconds=None),
    }
    return SimpleNamespace(**{**defaults, **fields})


def test_the_connection_sets_the_default_and_the_task_overrides_it():
    rayjob_conn = parse_connection_extras({"kuberay_resource": "rayjob"})
    assert rayjob_conn.kuberay_resource is KubeRayResource.RAYJOB
    assert parse_connection_extras({}).kuberay_resource is KubeRayResource.RAYCLUSTER
    with pytest.raises(ConfigError) as err:
        parse_connection_extras({"kuberay_resource": "RayService"})
    assert err.value.field == "connection.extra.kuberay_resource"
    assert rayjob_request(operator(), IDENTITY, rayjob_conn, JOB, None) is not None
    assert rayjob_request(operator(kuberay_resource="RayCluster"), IDENTITY, rayjob_conn, JOB, None) is None
    made = rayjob_request(operator(kuberay_resource="RayJob"), IDENTITY, ConnectionSettings(), JOB, 100.0)
    assert made is not None and made.name == rayjob_name_for(IDENTITY) and made.active_deadline_seconds is not None


def test_local_code_needs_the_interactive_mode_and_the_mode_needs_rayjob():
    shipped = JobSubmission(
        "s",
        "python x.py",
        packages=[LocalPackage("runtime_env.py_modules[0]", "gcs://_ray_pkg_x.zip", "/tmp/x", "directory", 10)],
    )
    k8s = ConnectionSettings()
    ok = rayjob_request(operator(kuberay_resource="RayJob", submission_mode="HTTPMode"), IDENTITY, k8s, JOB, None)
    assert ok is not None and ok.submission_mode is SubmissionMode.HTTP
    with pytest.raises(ConfigError, match="before the provider can upload") as err:
        rayjob_request(operator(kuberay_resource="RayJob", submission_mode="K8sJobMode"), IDENTITY, k8s, shipped, None)
    assert err.value.field == "submission_mode"
    with pytest.raises(ConfigError, match="applies to kuberay_resource='RayJob' only"):
        rayjob_request(operator(submission_mode="HTTPMode"), IDENTITY, k8s, JOB, None)


def test_the_local_backend_runs_a_rayjob_task_itself_and_says_so(caplog):
    with caplog.at_level(logging.WARNING):
        local = ConnectionSettings(backend="local")
        assert rayjob_request(operator(kuberay_resource="RayJob"), IDENTITY, local, JOB, None) is None
    assert "kuberay_resource='RayJob' is for KubeRay" in caplog.text


def request_for(**kw) -> ClusterRequest:
    owner = TaskInstanceOwner(IDENTITY)
    rayjob = RayJobRequest(rayjob_name_for(IDENTITY), JOB)
    return ClusterRequest(owner, ConnectionSettings(), "ns", CONFIG, OnFinishAction.DELETE_CLUSTER, rayjob=rayjob, **kw)


def test_a_rayjob_request_goes_to_the_rayjob_backend_and_refuses_what_contradicts_it():
    assert backends.select(request_for()).name == "rayjob"
    assert backends.select(request_for(cluster_name="existing")).name == "rayjob", "clusterSelector"
    for field, value in (
        ("address", "http://127.0.0.1:8265"),
        ("reuse", ReusePolicy()),
        ("cluster", ClusterRef("shared", name="c", namespace="ns")),
    ):
        with pytest.raises(ConfigError, match="KubeRay owns that cluster's lifecycle") as err:
            backends.select(request_for(**{field: value}))
        assert err.value.field == field


def test_a_retry_submits_under_the_adopted_rayjobs_job_id():
    backend = backends.backend_for(ClusterRef("rayjob", name="j", namespace="ns"))
    earlier = ClusterRef("rayjob", name="j", namespace="ns", owned=True, extra={"job_id": "earlier-try1"})
    assert backend.submission_for(earlier, JOB).submission_id == "earlier-try1"
    assert backend.submission_for(earlier, JOB).entrypoint == JOB.entrypoint
    assert backends.backend_for(ClusterRef("raycluster", name="c")).submission_for(earlier, JOB) is JOB


def test_the_operator_checks_the_values_at_parse_time():
    from airflow_provider_flyray import FlyteRayOperator

    op = FlyteRayOperator(task_id="rj", entrypoint="echo", kuberay_resource="RayJob", submission_mode="HTTPMode")
    assert (op.kuberay_resource, op.submission_mode) == ("RayJob", "HTTPMode")
    with pytest.raises(ConfigError) as err:
        FlyteRayOperator(task_id="bad", entrypoint="echo", kuberay_resource="RayService")
    assert err.value.field == "kuberay_resource"
    with pytest.raises(ConfigError) as err:
        FlyteRayOperator(task_id="bad", entrypoint="echo", kuberay_resource="RayJob", submission_mode="SidecarMode")
    assert err.value.field == "submission_mode"
    with pytest.raises(ConfigError) as err:
        FlyteRayOperator(task_id="bad", entrypoint="echo", kuberay_resource="RayCluster", submission_mode="HTTPMode")
    assert err.value.field == "submission_mode"
