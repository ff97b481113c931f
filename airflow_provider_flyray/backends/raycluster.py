"""What every KubeRay ``RayCluster`` backend shares: startup health, the dashboard endpoint, deletion.

:mod:`.transient` (a cluster per task) and :mod:`.existing` (a cluster by name) differ only in how the
cluster is acquired and released; both inherit the trigger side from :class:`RayClusterBackend`. The
pure helpers at the top decide how the dashboard is reached from the connection's ``dashboard_access``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from airflow_provider_flyray.backends.base import ClusterBackend
from airflow_provider_flyray.cluster import ClusterRef
from airflow_provider_flyray.connection import ConnectionSettings, DashboardAccess, browser_dashboard_url
from airflow_provider_flyray.core.kube import KubeClient
from airflow_provider_flyray.core.session import RaySession
from airflow_provider_flyray.errors import ConfigError, DashboardUnreachableError
from airflow_provider_flyray.jobs_api import DashboardEndpoint, token_headers
from airflow_provider_flyray.manifest import DASHBOARD_PORT, head_service_name
from airflow_provider_flyray.owners import deletion_refusal
from airflow_provider_flyray.status import (
    Startup,
    StartupVerdict,
    dashboard_port_of,
    interpret_startup,
    summarize_events,
)

# ---- how the dashboard is reached (pure) -----------------------------------------------------------------


def direct_dashboard_url(settings: ConnectionSettings, ref: ClusterRef, cluster: dict[str, Any] | None) -> str | None:
    """The dashboard base URL for the service/pod/address modes; None when it cannot be known yet."""
    if ref.address:
        return ref.address
    if settings.dashboard_access is DashboardAccess.ADDRESS:
        return settings.dashboard_address
    if cluster is None:
        return None
    port = dashboard_port_of(cluster, DASHBOARD_PORT)
    if settings.dashboard_access is DashboardAccess.SERVICE:
        return f"http://{head_service_name(ref.name)}.{ref.namespace}.svc.cluster.local:{port}"
    if settings.dashboard_access is DashboardAccess.POD:
        pod_ip = ((cluster.get("status") or {}).get("head") or {}).get("podIP")
        return f"http://{pod_ip}:{port}" if pod_ip else None
    return None


def proxy_dashboard_url(api_host: str, ref: ClusterRef) -> str:
    service = head_service_name(ref.name)
    return f"{api_host.rstrip('/')}/api/v1/namespaces/{ref.namespace}/services/{service}:dashboard/proxy"


def kube_auth_endpoint(configuration: Any, base_url: str, extra_headers: dict[str, str]) -> DashboardEndpoint:
    """A DashboardEndpoint that authenticates to the API server like the Kubernetes client does."""
    headers = dict(extra_headers)
    # kubernetes_asyncio keeps a token under "BearerToken" (already "Bearer ..."-prefixed) when loaded
    # from a kubeconfig or in-cluster; older configurations use "authorization" with a prefix.
    # (Read from the dicts: kubernetes_asyncio's get_api_key_with_prefix is a coroutine.)
    api_keys, prefixes = configuration.api_key or {}, configuration.api_key_prefix or {}
    for key in ("BearerToken", "authorization"):
        if api_keys.get(key):
            prefix = prefixes.get(key)
            headers["Authorization"] = f"{prefix} {api_keys[key]}" if prefix else str(api_keys[key])
            break
    return DashboardEndpoint(
        base_url=base_url,
        headers=headers,
        verify_tls=bool(configuration.verify_ssl),
        ca_file=configuration.ssl_ca_cert,
        client_cert_file=configuration.cert_file,
        client_key_file=configuration.key_file,
    )


def cluster_token_secret_name(
    settings: ConnectionSettings, cluster: dict[str, Any] | None, ref: ClusterRef
) -> str | None:
    """The Secret holding the Ray token: the connection's, or KubeRay's for a token-auth cluster."""
    if settings.dashboard_token:
        return None
    if settings.dashboard_token_secret:
        return settings.dashboard_token_secret
    auth = ((cluster or {}).get("spec") or {}).get("authOptions") or {}
    if str(auth.get("mode", "")).lower() == "token":
        return str(auth.get("secretName") or ref.name)
    return None


def namespace_of(ref: ClusterRef) -> str:
    if not ref.namespace:
        raise ConfigError("namespace", f"{ref.describe()} has no namespace")
    return ref.namespace


def seen_key(ref: ClusterRef) -> str:
    return f"{ref.namespace}/{ref.name}"


def is_deleted(cluster: dict[str, Any] | None) -> bool:
    return cluster is None or bool((cluster.get("metadata") or {}).get("deletionTimestamp"))


# ---- the backend ----------------------------------------------------------------------------------------


class RayClusterBackend(ClusterBackend):
    """A KubeRay RayCluster, watched through the Kubernetes API."""

    has_startup = True

    async def delete_if_ours(
        self, kube: KubeClient, ref: ClusterRef, owner_key: str | None, log: logging.Logger | Any
    ) -> bool:
        """Delete the cluster unless :func:`~airflow_provider_flyray.owners.deletion_refusal` objects."""
        namespace = namespace_of(ref)
        refusal = deletion_refusal(await kube.get_cluster(namespace, ref.name), ref, owner_key)
        if refusal:
            log.warning("Not deleting: %s", refusal)
            return False
        return await kube.delete_cluster(namespace, ref.name)

    async def delete(
        self, session: RaySession, ref: ClusterRef, owner_key: str | None, log: logging.Logger | Any
    ) -> bool:
        deleted = await self.delete_if_ours(await session.kube(), ref, owner_key, log)
        if deleted:
            log.info("Deleted %s", ref.describe())
        return deleted

    async def wait_until_ready(self, session: RaySession, ref: ClusterRef, deadline: float | None) -> StartupVerdict:
        """Follow the RayCluster and its pods (watches) until ready, failed, gone or past ``deadline``;
        every change is judged with :func:`interpret_startup`, so an unschedulable pod or a crash loop
        fails in seconds."""
        kube = await session.kube()
        namespace = namespace_of(ref)
        # aclosing: the watches must stop when the verdict is in, not when the generator is collected.
        async with contextlib.aclosing(kube.follow_cluster(namespace, ref.name)) as changes:
            async for cluster, pods in changes:
                verdict = interpret_startup(cluster, pods)
                if cluster is not None:
                    session.seen[seen_key(ref)] = cluster
                if verdict.state is Startup.FAILED:
                    return StartupVerdict(
                        Startup.FAILED, f"{verdict.reason}{await self._failure_details(kube, ref, pods)}"
                    )
                if verdict.state is not Startup.PENDING:
                    return verdict
                if deadline is not None and time.time() >= deadline:
                    details = await self._failure_details(kube, ref, pods)
                    return StartupVerdict(Startup.FAILED, f"startup_timeout reached: {verdict.reason}{details}")
        raise AssertionError("follow_cluster never ends")

    async def _failure_details(self, kube: KubeClient, ref: ClusterRef, pods: list[dict[str, Any]]) -> str:
        parts = []
        namespace = namespace_of(ref)
        with contextlib.suppress(Exception):
            names = {ref.name} | {(p.get("metadata") or {}).get("name") for p in pods}
            events = summarize_events(await kube.list_events(namespace, {n for n in names if n}))
            if events:
                parts.append(f"events: {events}")
        for pod in pods:
            meta = pod.get("metadata") or {}
            if (meta.get("labels") or {}).get("ray.io/node-type") == "head":
                output = (await kube.pod_log_tail(namespace, str(meta.get("name")))).strip()
                if output:
                    parts.append(f"head output:\n{output}")
        return ("; " + "; ".join(parts)) if parts else ""

    async def dashboard(self, session: RaySession, ref: ClusterRef) -> DashboardEndpoint:
        settings = session.settings
        kube = await session.kube()
        namespace = namespace_of(ref)
        cluster = session.seen.get(seen_key(ref)) or await kube.get_cluster(namespace, ref.name)
        token = settings.dashboard_token
        secret_name = cluster_token_secret_name(settings, cluster, ref)
        if secret_name:
            token = await kube.read_token_secret(namespace, secret_name)
        if not ref.address and settings.dashboard_access is DashboardAccess.PROXY:
            configuration = kube.api_client.configuration
            endpoint = kube_auth_endpoint(
                configuration,
                proxy_dashboard_url(str(configuration.host), ref),
                token_headers(token, DashboardAccess.PROXY),
            )
            await asyncio.to_thread(lambda: endpoint.ssl_context)  # reads certificate files
            return endpoint
        url = direct_dashboard_url(settings, ref, cluster)
        if url is None:
            raise DashboardUnreachableError(
                f"the dashboard address of {ref.describe()} is not known (head pod has no IP)"
            )
        access = DashboardAccess.ADDRESS if ref.address else settings.dashboard_access
        return DashboardEndpoint(url, token_headers(token, access), verify_tls=settings.verify_tls)

    async def watch_gone(self, session: RaySession, ref: ClusterRef) -> str | None:
        await (await session.kube()).wait_for_deletion(
            namespace_of(ref), ref.name, known=session.seen.get(seen_key(ref))
        )
        return f"{ref.describe()} was deleted while the Ray job was running"

    async def gone_reason(self, session: RaySession, ref: ClusterRef, *, settle: bool = False) -> str | None:
        cluster = await (await session.kube()).get_cluster(namespace_of(ref), ref.name)
        return f"{ref.describe()} was deleted while the Ray job was running" if is_deleted(cluster) else None

    def browser_url(self, settings: ConnectionSettings, ref: ClusterRef, direct_url: str | None) -> str | None:
        return browser_dashboard_url(
            settings,
            namespace=ref.namespace,
            cluster=ref.name,
            service=head_service_name(ref.name),
            direct_url=direct_url,
        )
