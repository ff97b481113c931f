"""Pool clusters driven as the operator and the trigger drive them, for the pool rows of the fault matrix.

``python -m tests.support.pools hold CONN_ID REF_JSON DAG TASK RUN ENTRYPOINT`` runs one holder's
trigger (renewing its Lease) until its event: a process a test can SIGKILL mid-job.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import Any

from kubernetes import client, utils

from airflow_provider_flyray import backends
from airflow_provider_flyray.backends import ClusterRequest
from airflow_provider_flyray.backends.pool import sweep_pools
from airflow_provider_flyray.cluster import ClusterRef
from airflow_provider_flyray.config import OnFinishAction, RayJobConfig
from airflow_provider_flyray.core.session import RaySession
from airflow_provider_flyray.hooks.ray_cluster import RayClusterHook
from airflow_provider_flyray.jobs_api import JobSubmission
from airflow_provider_flyray.naming import TaskIdentity, job_metadata_for, submission_id_for
from airflow_provider_flyray.owners import Ending, TaskInstanceOwner
from airflow_provider_flyray.pool_leases import POOL_LABEL
from airflow_provider_flyray.reuse import ReusePolicy
from airflow_provider_flyray.triggers.ray_job import RayJobTrigger
from tests.support import REPO
from tests.support.ray_jobs import first_event

POOL_RBAC = REPO / "docker" / "rbac-pools.yaml"
POOL_SELECTOR = "flyray.airflow.apache.org/scope=pool"
log = logging.getLogger("flyray.tests.pools")


def grant_pool_role(admin: client.ApiClient, namespace: str) -> None:
    """docker/rbac-pools.yaml applied in ``namespace`` (next to docker/rbac.yaml), honoured by the authorizer."""
    utils.create_from_yaml(admin, str(POOL_RBAC), namespace=namespace)
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=f"system:serviceaccount:{namespace}:airflow-flyray",
            resource_attributes=client.V1ResourceAttributes(
                namespace=namespace, group="coordination.k8s.io", resource="leases", verb="create"
            ),
        )
    )
    deadline = time.time() + 15
    while not client.AuthorizationV1Api(admin).create_subject_access_review(review).status.allowed:
        assert time.time() < deadline, "the RoleBinding of docker/rbac-pools.yaml never took effect"
        time.sleep(0.2)


def request(conn_id: str, identity: TaskIdentity, policy: ReusePolicy, config: RayJobConfig) -> ClusterRequest:
    hook = RayClusterHook(conn_id)
    settings = hook.validate()
    return ClusterRequest(
        TaskInstanceOwner(identity), settings, settings.namespace, config, OnFinishAction.DELETE_CLUSTER, reuse=policy
    )


def acquire(conn_id: str, identity: TaskIdentity, policy: ReusePolicy, config: RayJobConfig) -> ClusterRef:
    """What the operator's acquire step does for a task with ``reuse=policy``."""
    wanted = request(conn_id, identity, policy, config)
    backend = backends.select(wanted)
    assert backend.name == "pool", backend.name
    return RayClusterHook(conn_id).run(lambda session: backend.acquire(session, wanted, log))


def release(conn_id: str, ref: ClusterRef, identity: TaskIdentity) -> bool:
    """What the operator's release step does at the end of the task; True when the cluster was deleted."""
    return RayClusterHook(conn_id).run(
        lambda session: backends.backend_for(ref).release(
            session,
            ref,
            action=OnFinishAction.DELETE_CLUSTER,
            ending=Ending.SUCCEEDED,
            owner_key=identity.task_key,
            log=log,
        )
    )


def sweep(conn_id: str) -> list[str]:
    async def step(session: RaySession) -> list[str]:
        return await sweep_pools(await session.kube(), session.namespace, log)

    return RayClusterHook(conn_id).run(step)


def trigger(conn_id: str, ref: ClusterRef, identity: TaskIdentity, entrypoint: str, **kw: Any) -> RayJobTrigger:
    return RayJobTrigger(
        ray_conn_id=conn_id,
        cluster=ref.to_dict(),
        submission=JobSubmission(
            submission_id_for(identity), entrypoint, metadata=job_metadata_for(identity)
        ).to_dict(),
        owner_key=identity.task_key,
        poll_interval=1,
        startup_deadline=time.time() + 240,
        **kw,
    )


def run_together(*triggers: RayJobTrigger, timeout: float = 300) -> list[dict[str, Any]]:
    """Several triggers in one event loop (as one triggerer runs them), each to its first event."""

    async def together() -> list[dict[str, Any]]:
        return list(await asyncio.wait_for(asyncio.gather(*(first_event(t) for t in triggers)), timeout))

    return asyncio.run(together())


def leases_in(admin: client.ApiClient, namespace: str) -> list[str]:
    items = client.CoordinationV1Api(admin).list_namespaced_lease(namespace, label_selector=POOL_LABEL).items
    return sorted(lease.metadata.name for lease in items)


def main(argv: list[str]) -> None:
    command, conn_id, ref_json, dag_id, task_id, run_id, entrypoint = argv
    assert command == "hold", command
    ref = ClusterRef.from_dict(json.loads(ref_json))
    event = asyncio.run(first_event(trigger(conn_id, ref, TaskIdentity(dag_id, task_id, run_id), entrypoint)))
    print(json.dumps(event), flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(sys.argv[1:])
