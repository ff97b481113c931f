"""``cluster=create.output``: the cluster a ``RayCreateClusterOperator`` made for the DAG run.

Selection only: the task gets the setup task's ClusterRef with ``owned=False``, so its release, its
``on_kill`` and its trigger's never delete the cluster (the teardown does). Everything else (readiness,
the dashboard, noticing the cluster going away) stays with the backend that made it, named by the ref.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from airflow_provider_flyray.backends.base import ClusterBackend, ClusterRequest
from airflow_provider_flyray.cluster import ClusterRef
from airflow_provider_flyray.core.session import RaySession


class SharedClusterBackend(ClusterBackend):
    name = "shared"

    @classmethod
    def claims(cls, request: ClusterRequest) -> bool:
        return request.cluster is not None

    async def acquire(self, session: RaySession, request: ClusterRequest, log: logging.Logger | Any) -> ClusterRef:
        assert request.cluster is not None
        log.info("Using %s, the DAG run's shared cluster", request.cluster.describe())
        return dataclasses.replace(request.cluster, owned=False)
