"""The triggers under test, behind one factory interface (``--impl flyray|astro``).

Imports are lazy: this module is loaded in two virtual environments, ours (Airflow 3 + this provider)
and ``benchmarks/.venv-astro`` (``astro-provider-ray==0.4.0``), and each only has its own trigger.
Each implementation builds its triggers the way its operator would before deferring.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

CONN_ID = "ray_bench"
JOB_PREFIX = "capacity"


def job_id(index: int) -> str:
    # The fake server keys its end-of-job schedule by the trailing index.
    return f"{JOB_PREFIX}-{index:05d}"


@dataclass(frozen=True)
class Impl:
    name: str
    # The AIRFLOW_CONN_<ID> value that points this implementation's hook at the fake dashboard.
    connection: Callable[[str], str]
    # (dashboard url, job index, poll interval) -> a trigger instance, ready for ``run()``.
    make_trigger: Callable[[str, int, float], Any]
    # True when the job is submitted before deferring (on the worker), so it exists before the trigger.
    presubmit: bool
    distribution: str


def _flyray_connection(url: str) -> str:
    # Address mode needs nothing from the connection: the address travels in the ClusterRef.
    return json.dumps({"conn_type": "flyray", "extra": {}})


def _flyray_trigger(url: str, index: int, poll_interval: float) -> Any:
    from airflow_provider_flyray.backends.address import AddressBackend
    from airflow_provider_flyray.jobs_api import JobSubmission
    from airflow_provider_flyray.naming import TaskIdentity, job_metadata_for
    from airflow_provider_flyray.triggers.ray_job import RayJobTrigger

    # What FlyteRayOperator(address=...) passes for one map index of a mapped task.
    identity = TaskIdentity("bench_capacity", "train", "manual__2026-11-28T00:00:00+00:00", map_index=index)
    submission = JobSubmission(
        submission_id=job_id(index), entrypoint="python job.py", metadata=job_metadata_for(identity)
    )
    return RayJobTrigger(
        ray_conn_id=CONN_ID,
        cluster=AddressBackend.ref_for(url).to_dict(),
        submission=submission.to_dict(),
        owner_key=identity.task_key,
        poll_interval=poll_interval,
        get_logs=True,
    )


def _astro_connection(url: str) -> str:
    # RayHook reads `address` from the extras (its connection form's "Ray dashboard url").
    return json.dumps({"conn_type": "ray", "extra": {"address": url}})


def _astro_trigger(url: str, index: int, poll_interval: float) -> Any:
    from ray_provider.triggers import RayJobTrigger

    # What SubmitRayJob passes when deferring against an existing cluster (no cluster YAML, no URL in XCom).
    return RayJobTrigger(
        job_id=job_id(index),
        conn_id=CONN_ID,
        xcom_dashboard_url=None,
        ray_cluster_yaml=None,
        gpu_device_plugin_yaml="",
        poll_interval=int(poll_interval),
        fetch_logs=True,
    )


IMPLS = {
    "flyray": Impl("flyray", _flyray_connection, _flyray_trigger, False, "airflow-provider-flyray"),
    "astro": Impl("astro", _astro_connection, _astro_trigger, True, "astro-provider-ray"),
}


def versions(impl: Impl) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in (impl.distribution, "apache-airflow", "ray", "aiohttp", "requests", "structlog"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found
