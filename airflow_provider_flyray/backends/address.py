"""An existing Ray dashboard address (``address=`` or ``RayJobConfig.address``): no cluster lifecycle."""

from __future__ import annotations

import logging
from typing import Any

from airflow_provider_flyray.backends.base import ClusterBackend, ClusterRequest, address_endpoint
from airflow_provider_flyray.cluster import ClusterRef
from airflow_provider_flyray.core.session import RaySession
from airflow_provider_flyray.jobs_api import DashboardEndpoint


class AddressBackend(ClusterBackend):
    name = "address"

    @classmethod
    def claims(cls, request: ClusterRequest) -> bool:
        return request.address is not None

    @classmethod
    def ref_for(cls, address: str) -> ClusterRef:
        return ClusterRef(cls.name, name="address", address=address)

    async def acquire(self, session: RaySession, request: ClusterRequest, log: logging.Logger | Any) -> ClusterRef:
        assert request.address is not None
        return self.ref_for(request.address)

    async def dashboard(self, session: RaySession, ref: ClusterRef) -> DashboardEndpoint:
        return address_endpoint(session, ref)
