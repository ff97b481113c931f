"""RaySession: one ``flyray`` connection's settings, Kubernetes client and HTTP session, for one run.

``async with RaySession(conn_id) as session:`` looks the connection up asynchronously (or takes the
extras a synchronous caller already read), parses its fields, opens one aiohttp session and, on first
use, one Kubernetes ``ApiClient``. The trigger uses it directly; the worker through
:class:`~airflow_provider_flyray.hooks.ray_cluster.RayClusterHook`, which runs it on a portal thread.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import aiohttp

from airflow_provider_flyray.connection import (
    ConnectionSettings,
    extras_from_text,
    kube_credentials_error,
    parse_connection_extras,
)
from airflow_provider_flyray.core.dashboard import DashboardClient
from airflow_provider_flyray.core.kube import KubeClient

DEFAULT_CONN_ID = "ray_default"


def _flag(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "yes", "on")


class RaySession:
    """One connection's settings, Kubernetes client and HTTP session (see the module docstring)."""

    def __init__(
        self,
        ray_conn_id: str | None,
        *,
        namespace: str | None = None,
        extras: dict[str, Any] | None = None,
        log: logging.Logger | Any = None,
    ) -> None:
        self.ray_conn_id = ray_conn_id
        self.namespace_override = namespace
        self.extras = extras
        self.log = log or logging.getLogger(__name__)
        self.settings = ConnectionSettings()
        self._stack = contextlib.AsyncExitStack()
        self._kube: KubeClient | None = None
        self._dashboard: DashboardClient | None = None
        # The last version of an object this session's watches delivered, by "namespace/name": later
        # steps start from it instead of reading the object again.
        self.seen: dict[str, dict[str, Any]] = {}

    async def __aenter__(self) -> RaySession:
        if self.extras is None:
            self.extras = await self._load_extras()
        self.settings = parse_connection_extras(self.extras)
        http = await self._stack.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None))
        )
        self._dashboard = DashboardClient(http)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    @property
    def namespace(self) -> str:
        return self.namespace_override or self.settings.namespace

    @property
    def dashboard(self) -> DashboardClient:
        assert self._dashboard is not None, "use RaySession as an async context manager"
        return self._dashboard

    async def kube(self) -> KubeClient:
        if self._kube is None:
            from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook
            from kubernetes_asyncio.client import Configuration
            from kubernetes_asyncio.config import ConfigException

            configuration = Configuration()
            if _flag((self.extras or {}).get("disable_verify_ssl")):
                # KubernetesHook applies this to the synchronous client only: set it before the async
                # client is built from the configuration.
                configuration.verify_ssl = False
            hook = AsyncKubernetesHook(
                conn_id=self.ray_conn_id,
                connection_extras=dict(self.extras or {}),
                client_configuration=configuration,
            )
            try:
                api_client = await self._stack.enter_async_context(hook.get_conn())
            except ConfigException as exc:
                # The client only says e.g. "Invalid kube-config file. No configuration found."
                raise kube_credentials_error(self.extras or {}, str(exc)) from None
            self._kube = KubeClient(api_client, self.log)
        return self._kube

    async def _load_extras(self) -> dict[str, Any]:
        from airflow.providers.common.compat.connection import get_async_connection
        from airflow.providers.common.compat.sdk import AirflowNotFoundException

        if not self.ray_conn_id:
            return {}
        try:
            connection = await get_async_connection(self.ray_conn_id)
        except AirflowNotFoundException:
            if self.ray_conn_id == DEFAULT_CONN_ID:
                return {}
            raise
        extras_from_text(connection.extra)
        return dict(connection.extra_dejson)
