"""The default: a RayCluster per task instance, built from ``ray_job_config``, released per policy.

A retry adopts the live cluster of an earlier try instead of making another (the name is deterministic
and the owner annotation is compared first), and the next run of a task deletes the clusters its earlier
runs left behind when their worker was killed with no retry left (:mod:`~airflow_provider_flyray.orphans`).
"""

from __future__ import annotations

import logging
from typing import Any

from airflow_provider_flyray.backends.base import ClusterRequest
from airflow_provider_flyray.backends.raycluster import RayClusterBackend, is_deleted
from airflow_provider_flyray.cluster import ClusterRef
from airflow_provider_flyray.connection import KUBERNETES_BACKEND
from airflow_provider_flyray.core.kube import KubeClient
from airflow_provider_flyray.core.session import RaySession
from airflow_provider_flyray.manifest import owned_cluster_manifest
from airflow_provider_flyray.orphans import earlier_owners, find_orphans
from airflow_provider_flyray.owners import owner_key_of


class TransientRayClusterBackend(RayClusterBackend):
    name = "raycluster"

    @classmethod
    def claims(cls, request: ClusterRequest) -> bool:
        return request.settings.backend == KUBERNETES_BACKEND

    async def acquire(self, session: RaySession, request: ClusterRequest, log: logging.Logger | Any) -> ClusterRef:
        kube = await session.kube()
        namespace, owner = request.namespace, request.owner
        # One list of this owner's clusters, all runs: a retry after a lost worker adopts the live cluster
        # of an earlier try instead of making another; clusters orphaned by earlier runs are deleted.
        family = await kube.list_clusters(namespace, owner.family_selector())
        for cluster in family:
            if not is_deleted(cluster) and owner_key_of(cluster) == owner.key:
                name = cluster["metadata"]["name"]
                log.info("Reattaching to RayCluster %s/%s of an earlier try", namespace, name)
                return ClusterRef(self.name, name=name, namespace=namespace, owned=True)
        await self.sweep_orphans(kube, request, family, log)
        manifest = owned_cluster_manifest(request.config, owner, namespace, request.on_finish_action)
        name = manifest["metadata"]["name"]
        _, created = await kube.create_or_adopt_cluster(manifest, owner.key)
        log.info("%s RayCluster %s/%s", "Created" if created else "Found this try's", namespace, name)
        return ClusterRef(self.name, name=name, namespace=namespace, owned=True)

    async def sweep_orphans(
        self, kube: KubeClient, request: ClusterRequest, family: list[dict[str, Any]], log: logging.Logger | Any
    ) -> None:
        """Delete the clusters of earlier runs whose worker was killed with no retry left.

        Best effort: a failure here is logged and never fails the task.
        """
        identity = getattr(request.owner, "identity", None)
        if request.task_states is None or identity is None:  # an Airflow without the Task SDK call
            return
        try:
            owners = earlier_owners(family, request.owner.key)
            if not owners:
                return
            states = request.task_states(
                dag_id=identity.dag_id, task_ids=[identity.task_id], run_ids=sorted({o.run_id for o in owners})
            )
            for orphan in find_orphans(family, states, request.owner.key):
                ref = ClusterRef(self.name, name=orphan.name, namespace=request.namespace, owned=True)
                await self.delete_if_ours(kube, ref, orphan.owner_key, log)
                log.warning("Deleted %s, left behind by an earlier run: %s", ref.describe(), orphan.reason)
        except Exception as exc:
            log.warning("Could not check for RayClusters left by earlier runs of this task: %s", exc)
