"""RayJob mode (``kuberay_resource="RayJob"``), pure: the RayJob's name, manifest, lifecycle and verdicts.

KubeRay then owns the cluster's lifecycle: it creates the RayCluster from ``rayClusterSpec``, deletes it
once the job ended (``shutdownAfterJobFinishes`` + ``ttlSecondsAfterFinished``) and fails the RayJob at
``activeDeadlineSeconds``, all server-side, so a lost Airflow leaks nothing that runs. The I/O is in
:mod:`airflow_provider_flyray.backends.rayjob`.

Why ``InteractiveMode`` by default: KubeRay creates the cluster and then waits for the client to submit
the job whose id is ``spec.jobId``. The provider submits it through the Jobs API exactly as in RayCluster
mode, so exactly-once submission (the deterministic id; a retry adopts the job of an earlier try), the
upload of local code *before* the job starts, log streaming and the startup fail-fast stay one
implementation. In ``K8sJobMode`` and ``HTTPMode`` KubeRay submits as soon as the head is ready, before
the provider can upload local code, and K8sJobMode adds a submitter pod per job; both are allowed as an
override for jobs without local code (the provider then follows the job KubeRay submitted under the same
id, and submits it itself only if KubeRay has not yet).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from airflow_provider_flyray.config import OnFinishAction, RayJobConfig
from airflow_provider_flyray.errors import ConfigError
from airflow_provider_flyray.jobs_api import JobSubmission
from airflow_provider_flyray.manifest import RAY_API_GROUP, RAY_API_VERSION, build_raycluster_manifest
from airflow_provider_flyray.naming import TaskIdentity, _digest, dns_slug
from airflow_provider_flyray.owners import Owner, owner_annotations
from airflow_provider_flyray.status import Startup, StartupVerdict

RAYJOB_PLURAL = "rayjobs"
# KubeRay refuses a longer RayJob name (it appends "-<5 chars>" for its cluster's name).
MAX_RAYJOB_NAME = 47
# ttlSecondsAfterFinished beyond Flyte's own TTL: while Airflow is up, the provider deletes the RayJob
# itself after it read the job's last lines; the margin is KubeRay's backstop should Airflow be gone.
RAYJOB_TTL_MARGIN = 60
# activeDeadlineSeconds beyond what is left of execution_timeout: Airflow's own timeout (stop the job,
# report its last lines) comes first; KubeRay's deadline only acts when Airflow is gone.
RAYJOB_DEADLINE_MARGIN = 60
SUBMISSION_MODE_FIELD = "submission_mode"


class SubmissionMode(StrEnum):
    """KubeRay's ``spec.submissionMode`` (SidecarMode is not offered: not with clusterSelector)."""

    INTERACTIVE = "InteractiveMode"
    K8S_JOB = "K8sJobMode"
    HTTP = "HTTPMode"

    @classmethod
    def parse(cls, value: Any, field: str = SUBMISSION_MODE_FIELD) -> SubmissionMode:
        for member in cls:
            if isinstance(value, str) and value.strip().lower() == member.value.lower():
                return member
        allowed = ", ".join(repr(m.value) for m in cls)
        raise ConfigError(field, f"got {value!r}; expected one of {allowed} (default 'InteractiveMode')")


@dataclass(frozen=True)
class RayJobRequest:
    """What RayJob mode adds to a task's ClusterRequest: the RayJob's name and the job it records."""

    name: str
    submission: JobSubmission
    submission_mode: SubmissionMode = SubmissionMode.INTERACTIVE
    keep_alive_seconds: int | None = None
    active_deadline_seconds: int | None = None


# ---- names -------------------------------------------------------------------------------------------


def rayjob_name_for(identity: TaskIdentity) -> str:
    """``<dag>-<task>-<hash10>-<try>`` within KubeRay's 47 characters: one RayJob per task try."""
    suffix = f"-{_digest(identity.task_key, 10)}-{identity.try_number}"
    prefix = dns_slug(f"{identity.dag_id}-{identity.task_id}")
    if not prefix or not prefix[0].isalpha():
        prefix = f"ray-{prefix}".rstrip("-")
    name = f"{prefix[: MAX_RAYJOB_NAME - len(suffix)].rstrip('-')}{suffix}"
    check_rayjob_name(name)
    return name


def check_rayjob_name(name: str) -> str:
    """Checked before create: KubeRay would otherwise mark the RayJob ValidationFailed."""
    if len(name) > MAX_RAYJOB_NAME or not name[:1].isalpha() or dns_slug(name) != name:
        raise ConfigError(
            "kuberay_resource", f"RayJob name {name!r} is not a DNS-1035 label of at most {MAX_RAYJOB_NAME} characters"
        )
    return name


# ---- the manifest ------------------------------------------------------------------------------------


def lifecycle_spec(action: OnFinishAction | str, keep_alive_seconds: int | None) -> dict[str, Any]:
    """``on_finish_action`` (and Flyte's TTL) as KubeRay's fields, for when KubeRay alone is left.

    ``delete_succeeded_cluster`` keeps the cluster server-side too: KubeRay 1.4/1.5 can only tell a
    failed job from a succeeded one through an alpha feature gate (``deletionStrategy``); the provider
    applies the rule itself at the end of the task."""
    if OnFinishAction.parse(action) is not OnFinishAction.DELETE_CLUSTER:
        return {"shutdownAfterJobFinishes": False}
    return {
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": int(keep_alive_seconds or 0) + RAYJOB_TTL_MARGIN,
    }


def active_deadline_seconds(seconds_left: float | None) -> int | None:
    """KubeRay's deadline for what is left of ``execution_timeout`` (None: no timeout, no deadline)."""
    if seconds_left is None:
        return None
    return max(1, math.ceil(seconds_left)) + RAYJOB_DEADLINE_MARGIN


def build_rayjob_manifest(
    config: RayJobConfig,
    owner: Owner,
    *,
    name: str,
    namespace: str,
    submission: JobSubmission,
    on_finish_action: OnFinishAction | str,
    keep_alive_seconds: int | None = None,
    deadline_seconds: int | None = None,
    submission_mode: SubmissionMode = SubmissionMode.INTERACTIVE,
    cluster_selector: str | None = None,
) -> dict[str, Any]:
    """The RayJob of one task try: its cluster from the same builder as RayCluster mode (or
    ``clusterSelector`` for an existing cluster), its job as the provider submits it."""
    labels, annotations = owner.labels(), owner_annotations(owner, on_finish_action)
    spec: dict[str, Any] = {
        "entrypoint": submission.entrypoint,
        "jobId": submission.submission_id,
        "submissionMode": submission_mode.value,
        "metadata": dict(submission.metadata),
    }
    if submission.runtime_env:
        # JSON is YAML: KubeRay reads runtimeEnvYAML with a YAML parser.
        spec["runtimeEnvYAML"] = json.dumps(submission.runtime_env, sort_keys=True)
    if submission.entrypoint_num_cpus is not None:
        spec["entrypointNumCpus"] = submission.entrypoint_num_cpus
    if submission.entrypoint_num_gpus is not None:
        spec["entrypointNumGpus"] = submission.entrypoint_num_gpus
    if submission.entrypoint_resources:
        spec["entrypointResources"] = json.dumps(submission.entrypoint_resources, sort_keys=True)
    if deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = int(deadline_seconds)
    if cluster_selector is not None:
        # An existing cluster: KubeRay never deletes it (nor do the lifecycle fields apply).
        spec["clusterSelector"] = {"ray.io/cluster": cluster_selector}
    else:
        cluster = build_raycluster_manifest(config, name=name, namespace=namespace, labels=labels)
        spec["rayClusterSpec"] = cluster["spec"]
        spec.update(lifecycle_spec(on_finish_action, keep_alive_seconds))
    return {
        "apiVersion": f"{RAY_API_GROUP}/{RAY_API_VERSION}",
        "kind": "RayJob",
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations},
        "spec": spec,
    }


# ---- status (what KubeRay says) ----------------------------------------------------------------------

TERMINAL_DEPLOYMENT = frozenset({"Complete", "Failed", "ValidationFailed"})


def status_of(rayjob: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return (rayjob or {}).get("status") or {}


def is_terminal(rayjob: Mapping[str, Any] | None) -> bool:
    """KubeRay is done with it: Complete, Failed, or ValidationFailed (which never moves on)."""
    return str(status_of(rayjob).get("jobDeploymentStatus") or "") in TERMINAL_DEPLOYMENT


def cluster_name_of(rayjob: Mapping[str, Any] | None) -> str | None:
    """The RayCluster KubeRay made (or selected) for the RayJob; None until it named one."""
    return status_of(rayjob).get("rayClusterName") or None


def describe_status(rayjob: Mapping[str, Any] | None) -> str:
    """``jobDeploymentStatus`` with KubeRay's reason and message, for a failure message."""
    status = status_of(rayjob)
    parts = [str(status.get("jobDeploymentStatus") or "new")]
    if status.get("reason"):
        parts.append(str(status["reason"]))
    text = "/".join(parts)
    return f"{text}: {status['message']}" if status.get("message") else text


def rayjob_verdict(rayjob: Mapping[str, Any] | None, name: str) -> StartupVerdict:
    """Before the job runs: FAILED when KubeRay gave the RayJob up (ValidationFailed, a deadline, a
    failed submission), GONE when it was deleted, PENDING otherwise (the cluster's own verdict decides)."""
    if rayjob is None or (rayjob.get("metadata") or {}).get("deletionTimestamp"):
        return StartupVerdict(Startup.GONE, f"RayJob {name} was deleted")
    state = str(status_of(rayjob).get("jobDeploymentStatus") or "")
    if state in ("ValidationFailed", "Failed"):
        return StartupVerdict(Startup.FAILED, f"KubeRay gave up RayJob {name}: {describe_status(rayjob)}")
    return StartupVerdict(Startup.PENDING, f"RayJob {name} is {state or 'new'}")
