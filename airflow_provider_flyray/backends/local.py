"""The connection's ``backend: local``: a Ray head started on the Airflow machine for the task, stopped
after it (Flyte's local execution). The processes themselves are handled in :mod:`.local_process`."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from airflow_provider_flyray.backends import local_process
from airflow_provider_flyray.backends.base import ClusterBackend, ClusterRequest, address_endpoint
from airflow_provider_flyray.cluster import ClusterRef
from airflow_provider_flyray.config import cpu_quantity
from airflow_provider_flyray.connection import LOCAL_BACKEND
from airflow_provider_flyray.core.session import RaySession
from airflow_provider_flyray.jobs_api import DashboardEndpoint

# A head that fails after its dashboard came up takes a moment to exit.
EXIT_SETTLE_SECONDS = 5.0


class LocalBackend(ClusterBackend):
    name = local_process.BACKEND_NAME

    @classmethod
    def claims(cls, request: ClusterRequest) -> bool:
        return request.settings.backend == LOCAL_BACKEND

    async def acquire(self, session: RaySession, request: ClusterRequest, log: logging.Logger | Any) -> ClusterRef:
        head = request.config.head_node_config
        params = (head.ray_start_params if head else None) or {}
        cpus = params.get("num-cpus") or (head.requests or {}).get("cpu") if head else None
        ref = await asyncio.to_thread(
            local_process.start_local_cluster,
            request.owner.cluster_name(),
            num_cpus=cpu_quantity(cpus) if cpus else None,
            num_gpus=float(params["num-gpus"]) if "num-gpus" in params else None,
            object_store_memory=int(params["object-store-memory"]) if "object-store-memory" in params else None,
        )
        log.info("Started %s (process group %s)", ref.describe(), ref.local_pgid)
        if ref.local_cgroup:
            log.info("Its processes run in %s, killed whole at the end", ref.extra.get("containment"))
        else:
            log.warning(
                "Its processes run without a cgroup of their own: %s. The end stops its process group and the "
                "processes that inherited its environment; one that leaves both (setsid + env -i) can outlive it",
                ref.extra.get("containment"),
            )
        return ref

    async def delete(
        self, session: RaySession, ref: ClusterRef, owner_key: str | None, log: logging.Logger | Any
    ) -> bool:
        await asyncio.to_thread(local_process.stop_local_cluster, ref)
        return True

    async def dashboard(self, session: RaySession, ref: ClusterRef) -> DashboardEndpoint:
        return address_endpoint(session, ref)

    async def startup_problem(self, session: RaySession, ref: ClusterRef) -> str | None:
        if await asyncio.to_thread(local_process.local_cluster_alive, ref):
            return None
        output = await asyncio.to_thread(local_process.local_startup_output, ref)
        return f"the local Ray head exited during startup:\n{output}"

    async def gone_reason(self, session: RaySession, ref: ClusterRef, *, settle: bool = False) -> str | None:
        checks = int(EXIT_SETTLE_SECONDS / 0.2) if settle else 1
        for attempt in range(checks):
            if not await asyncio.to_thread(local_process.local_cluster_alive, ref):
                return f"{ref.describe()} exited"
            if attempt + 1 < checks:
                await asyncio.sleep(0.2)
        return None

    async def exit_output(self, session: RaySession, ref: ClusterRef) -> str:
        return await asyncio.to_thread(local_process.local_startup_output, ref)
