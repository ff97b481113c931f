"""``cluster_name=``: an existing RayCluster, used as it is; never created or deleted."""

from __future__ import annotations

import logging
from typing import Any

from airflow_provider_flyray.backends.base import ClusterRequest
from airflow_provider_flyray.backends.raycluster import RayClusterBackend
from airflow_provider_flyray.cluster import ClusterRef
from airflow_provider_flyray.connection import LOCAL_BACKEND
from airflow_provider_flyray.core.session import RaySession
from airflow_provider_flyray.errors import ConfigError


class ExistingRayClusterBackend(RayClusterBackend):
    name = "existing_raycluster"

    @classmethod
    def claims(cls, request: ClusterRequest) -> bool:
        if request.cluster_name is None:
            return False
        if request.settings.backend == LOCAL_BACKEND:
            raise ConfigError("cluster_name", "the connection uses the local backend, which has no existing clusters")
        return True

    async def acquire(self, session: RaySession, request: ClusterRequest, log: logging.Logger | Any) -> ClusterRef:
        assert request.cluster_name is not None
        kube = await session.kube()
        if await kube.get_cluster(request.namespace, request.cluster_name) is None:
            raise ConfigError("cluster_name", f"RayCluster {request.namespace}/{request.cluster_name} does not exist")
        return ClusterRef(self.name, name=request.cluster_name, namespace=request.namespace, owned=False)
