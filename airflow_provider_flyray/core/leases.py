"""Kubernetes calls for pools, async: holders' Leases, and the pool cluster's annotations and guarded delete.

The objects come back as plain API dicts, read by :mod:`airflow_provider_flyray.pool_leases`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from airflow_provider_flyray.core.errors import unless_missing, with_retries
from airflow_provider_flyray.core.kube import KubeClient
from airflow_provider_flyray.manifest import RAY_API_GROUP, RAY_API_VERSION, RAYCLUSTER_PLURAL
from airflow_provider_flyray.pool_leases import POOL_LABEL, micro_time

MERGE_PATCH = "application/merge-patch+json"


class PoolClient:
    """The Lease and pool-cluster calls of one session, next to its :class:`KubeClient`."""

    def __init__(self, kube: KubeClient, log: logging.Logger | Any) -> None:
        self.kube = kube
        self.leases = k8s.CoordinationV1Api(kube.api_client)
        self.log = log

    def _plain(self, obj: Any) -> Any:
        return self.kube.api_client.sanitize_for_serialization(obj)

    # ---- Leases ---------------------------------------------------------------------------------------

    async def list_leases(self, namespace: str, cluster_name: str | None = None) -> list[dict[str, Any]]:
        """The holders' Leases of one pool cluster (or of every pool, ``cluster_name=None``)."""
        selector = f"{POOL_LABEL}={cluster_name}" if cluster_name else POOL_LABEL
        result = await with_retries(
            f"list Leases in {namespace}",
            lambda: self.leases.list_namespaced_lease(namespace, label_selector=selector),
            self.log,
        )
        return [self._plain(item) for item in result.items]

    async def hold(self, manifest: dict[str, Any]) -> None:
        """Create the Lease, or renew it when this holder (an earlier try) already has it."""
        meta = manifest["metadata"]
        try:
            await with_retries(
                f"create Lease {meta['namespace']}/{meta['name']}",
                lambda: self.leases.create_namespaced_lease(meta["namespace"], manifest),  # type: ignore[arg-type]
                self.log,
            )
            return
        except ApiException as exc:
            if exc.status != 409:
                raise
        await self.renew(meta["namespace"], meta["name"], manifest["spec"]["leaseDurationSeconds"])

    async def renew(self, namespace: str, name: str, lease_seconds: int, now: float | None = None) -> bool:
        """Push the Lease's end ``lease_seconds`` past now; False when the Lease no longer exists."""
        body = {"spec": {"renewTime": micro_time(now or time.time()), "leaseDurationSeconds": int(lease_seconds)}}
        renewed = await unless_missing(
            f"renew Lease {namespace}/{name}",
            lambda: self.leases.patch_namespaced_lease(  # type: ignore[call-arg]
                name, namespace, body, _content_type=MERGE_PATCH
            ),
            self.log,
            None,
        )
        return renewed is not None

    async def release(self, namespace: str, name: str) -> bool:
        """Drop the Lease; False when it was already gone."""
        deleted = await unless_missing(
            f"delete Lease {namespace}/{name}",
            lambda: self.leases.delete_namespaced_lease(name, namespace),
            self.log,
            None,
        )
        return deleted is not None

    # ---- the pool's cluster ---------------------------------------------------------------------------

    async def annotate_cluster(self, namespace: str, name: str, annotations: dict[str, str]) -> dict[str, Any] | None:
        """Merge ``annotations`` into the RayCluster (a new resourceVersion); None when it is gone."""
        body = {"metadata": {"annotations": annotations}}
        return await unless_missing(
            f"annotate RayCluster {namespace}/{name}",
            lambda: self.kube.custom.patch_namespaced_custom_object(  # type: ignore[call-arg]
                RAY_API_GROUP, RAY_API_VERSION, namespace, RAYCLUSTER_PLURAL, name, body, _content_type=MERGE_PATCH
            ),
            self.log,
            None,
        )

    async def delete_cluster_unchanged(self, namespace: str, name: str, resource_version: str) -> bool:
        """Delete the RayCluster only if nothing changed it since ``resource_version`` was read (an
        acquirer's annotation changes it); False when it changed or is gone."""
        options = k8s.V1DeleteOptions(
            propagation_policy="Background", preconditions=k8s.V1Preconditions(resource_version=resource_version)
        )
        try:
            await with_retries(
                f"delete RayCluster {namespace}/{name}",
                lambda: self.kube.custom.delete_namespaced_custom_object(
                    RAY_API_GROUP, RAY_API_VERSION, namespace, RAYCLUSTER_PLURAL, name, body=options
                ),
                self.log,
            )
        except ApiException as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True
