"""An existing Ray dashboard address (``address=`` or ``RayJobConfig.address``): no cluster lifecycle."""

from __future__ import annotations

import logging
from typing import Any

from airflow_provider_flyray.backends.base import ClusterBackend, ClusterRequest
from airflow_provider_flyray.cluster import ClusterRef
from airflow_provider_flyray.connection import DashboardAccess
from airflow_provider_flyray.core.session import RaySession
from airflow_provider_flyray.jobs_api import DashboardEndpoint, token_headers


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
        assert ref.address is not None
        settings = session.settings
        return DashboardEndpoint(
            ref.address,
            token_headers(settings.dashboard_token, DashboardAccess.ADDRESS),
            verify_tls=settings.verify_tls,
        )
