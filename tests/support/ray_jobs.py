"""Ray jobs without Airflow: the provider's hook and RayJobTrigger driven directly on a cluster (a small
head, a task cluster, a trigger's first event), and the Ray Jobs REST API of a dashboard."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Any

from airflow_provider_flyray.cluster import ClusterRef
from airflow_provider_flyray.config import HeadNodeConfig, RayJobConfig
from airflow_provider_flyray.hooks.ray_cluster import RayClusterHook
from airflow_provider_flyray.jobs_api import JobSubmission
from airflow_provider_flyray.manifest import task_cluster_manifest
from airflow_provider_flyray.naming import TaskIdentity, submission_id_for
from airflow_provider_flyray.triggers.ray_job import RayJobTrigger

# A head that fits the test node next to others: 1 CPU, 100 MB object store.
SMALL_HEAD = HeadNodeConfig(
    requests={"cpu": "1", "memory": "1Gi"}, ray_start_params={"num-cpus": "1", "object-store-memory": "100000000"}
)


def create_cluster(hook: RayClusterHook, ns: str, identity: TaskIdentity, config: RayJobConfig) -> ClusterRef:
    """The task's RayCluster, created (or adopted) as the operator would."""
    manifest = task_cluster_manifest(config, identity, ns)
    hook.create_or_adopt_cluster(manifest, identity.task_key)
    return ClusterRef("raycluster", name=manifest["metadata"]["name"], namespace=ns, owned=True)


async def first_event(trigger: Any) -> dict[str, Any]:
    """The payload of the first event ``trigger.run()`` yields."""
    async for event in trigger.run():
        return dict(event.payload)
    raise AssertionError("no event")


def run_to_event(trigger: Any, timeout: float = 120) -> dict[str, Any]:
    """Run ``trigger`` in a new event loop until its first event (at most ``timeout`` seconds)."""
    return asyncio.run(asyncio.wait_for(first_event(trigger), timeout))


def run_trigger(
    conn_id: str,
    ref: ClusterRef,
    identity: TaskIdentity,
    entrypoint: str,
    timeout: float = 300,
    startup_timeout: float = 240,
    **kw: Any,
) -> dict[str, Any]:
    """The task's RayJobTrigger for ``entrypoint`` on ``ref`` (polling every second, the cluster given
    ``startup_timeout`` seconds to come up), run until its first event."""
    trigger = RayJobTrigger(
        ray_conn_id=conn_id,
        cluster=ref.to_dict(),
        submission=JobSubmission(submission_id_for(identity), entrypoint).to_dict(),
        owner_key=identity.task_key,
        poll_interval=1,
        startup_deadline=time.time() + startup_timeout,
        **kw,
    )
    return run_to_event(trigger, timeout)


def rest(url: str, method: str = "GET", body: dict | None = None) -> Any:
    """One JSON call to a Ray dashboard's REST API (e.g. ``address + "/api/jobs/"``)."""
    request = urllib.request.Request(
        url,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
    )
    return json.loads(urllib.request.urlopen(request, timeout=30).read())
