"""The operator's ``kuberay_resource`` / ``submission_mode`` arguments, checked, and the RayJob request.

``kuberay_resource="RayJob"`` (or the connection's ``kuberay_resource`` extra) makes the task's
:class:`~airflow_provider_flyray.backends.base.ClusterRequest` carry a
:class:`~airflow_provider_flyray.rayjob.RayJobRequest`, which :mod:`airflow_provider_flyray.backends.rayjob`
serves. Everything is checked before anything is created.
"""

from __future__ import annotations

import time
from typing import Any

from airflow_provider_flyray.connection import KUBERNETES_BACKEND, ConnectionSettings, KubeRayResource
from airflow_provider_flyray.errors import ConfigError
from airflow_provider_flyray.jobs_api import JobSubmission
from airflow_provider_flyray.naming import TaskIdentity
from airflow_provider_flyray.rayjob import (
    RayJobRequest,
    SubmissionMode,
    active_deadline_seconds,
    rayjob_name_for,
)


def check_rayjob_arguments(op: Any) -> None:
    """At parse time: the values themselves (the connection's default is known only at run time)."""
    if op.kuberay_resource is not None:
        KubeRayResource.parse(op.kuberay_resource)
    if op.submission_mode is not None:
        SubmissionMode.parse(op.submission_mode)
        if op.kuberay_resource is not None and KubeRayResource.parse(op.kuberay_resource) is KubeRayResource.RAYCLUSTER:
            raise ConfigError("submission_mode", "applies to kuberay_resource='RayJob' only")


def rayjob_request(
    op: Any,
    identity: TaskIdentity,
    settings: ConnectionSettings,
    submission: JobSubmission | None,
    deadline: float | None,
) -> RayJobRequest | None:
    """The RayJob this task creates, or None in RayCluster mode (or on the local backend, which says so)."""
    resource = (
        KubeRayResource.parse(op.kuberay_resource) if op.kuberay_resource is not None else settings.kuberay_resource
    )
    if resource is not KubeRayResource.RAYJOB:
        if op.submission_mode is not None:
            raise ConfigError("submission_mode", "applies to kuberay_resource='RayJob' only")
        return None
    if settings.backend != KUBERNETES_BACKEND:
        op.log.warning(
            "kuberay_resource='RayJob' is for KubeRay; the %s backend runs this task itself", settings.backend
        )
        return None
    if submission is None:
        raise ConfigError("kuberay_resource", "'RayJob' runs a job: it does not apply to a task without one")
    mode = SubmissionMode.parse(op.submission_mode) if op.submission_mode is not None else SubmissionMode.INTERACTIVE
    if mode is not SubmissionMode.INTERACTIVE and submission.packages:
        raise ConfigError(
            "submission_mode",
            f"{mode.value}: KubeRay submits the job as soon as the head is up, before the provider can upload "
            "this task's local code; use 'InteractiveMode' (the default), or ship no local code",
        )
    return RayJobRequest(
        name=rayjob_name_for(identity),
        submission=submission,
        submission_mode=mode,
        keep_alive_seconds=op.lifecycle.keep_alive_seconds,
        active_deadline_seconds=active_deadline_seconds(None if deadline is None else deadline - time.time()),
    )
