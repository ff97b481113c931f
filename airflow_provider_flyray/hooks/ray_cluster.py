"""RayClusterHook: the ``flyray`` connection, and a synchronous facade over the async core.

Every Kubernetes and Ray dashboard call is implemented once, async, in :mod:`airflow_provider_flyray.core`
(the trigger uses it directly). The methods here run those same coroutines on the portal thread
(:func:`~airflow_provider_flyray.core.portal.run_sync`) with the connection read synchronously, so a
worker, a test or a notebook gets the same behaviour, timeouts and retries as the trigger.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from functools import cached_property
from typing import Any, TypeVar

from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

from airflow_provider_flyray.backends import backend_for
from airflow_provider_flyray.cluster import ClusterRef
from airflow_provider_flyray.config import OnFinishAction
from airflow_provider_flyray.connection import (
    LOCAL_BACKEND,
    ConnectionSettings,
    KubeRayResource,
    extras_from_text,
    parse_connection_extras,
)
from airflow_provider_flyray.core.portal import run_sync
from airflow_provider_flyray.core.session import DEFAULT_CONN_ID, RaySession
from airflow_provider_flyray.errors import ConfigError
from airflow_provider_flyray.owners import Ending

T = TypeVar("T")


class RayClusterHook(KubernetesHook):
    """Create, find and delete RayClusters and talk to their Ray dashboard.

    :param ray_conn_id: a connection of type ``flyray`` (default ``ray_default``; when that id does not
        exist the default kubeconfig / in-cluster credentials are used with the default settings).
    :param namespace: overrides the connection's namespace.
    """

    conn_name_attr = "ray_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "flyray"
    hook_name = "Ray (flyray: KubeRay or local)"

    def __init__(
        self, ray_conn_id: str | None = default_conn_name, namespace: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(conn_id=ray_conn_id, **kwargs)
        self.ray_conn_id = ray_conn_id
        self._namespace_override = namespace

    # ---- connection -------------------------------------------------------------------------------

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Form fields for Airflow 3.0/3.1 (3.2+ builds the form from provider info)."""
        from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import BooleanField, PasswordField, StringField

        widgets: dict[str, Any] = super().get_connection_form_widgets()
        widgets.update(
            {
                "backend": StringField(lazy_gettext("Backend (kubernetes|local)"), widget=BS3TextFieldWidget()),
                "dashboard_access": StringField(
                    lazy_gettext("Dashboard access (service|proxy|pod|address)"), widget=BS3TextFieldWidget()
                ),
                "dashboard_address": StringField(lazy_gettext("Dashboard address"), widget=BS3TextFieldWidget()),
                "dashboard_url_template": StringField(
                    lazy_gettext("Public dashboard URL template"), widget=BS3TextFieldWidget()
                ),
                "dashboard_token": PasswordField(lazy_gettext("Dashboard token"), widget=BS3PasswordFieldWidget()),
                "verify_tls": BooleanField(lazy_gettext("Verify dashboard TLS"), default=True),
            }
        )
        return widgets

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {"hidden_fields": ["host", "schema", "login", "password", "port", "extra"], "relabeling": {}}

    @cached_property
    def settings(self) -> ConnectionSettings:
        return parse_connection_extras(self.conn_extras)

    @cached_property
    def conn_extras(self) -> dict[str, Any]:
        """KubernetesHook's view of the extras (read once per hook), but ``extra`` text that is not JSON
        is refused instead of silently read as no extras."""
        if not self.conn_id:
            return {}
        connection = self.get_connection(self.conn_id)
        extras_from_text(connection.extra)
        return dict(connection.extra_dejson)

    def get_namespace(self) -> str:
        return self._namespace_override or self.settings.namespace

    def validate(self) -> ConnectionSettings:
        """Parse the connection now: bad fields fail before anything is created."""
        settings = self.settings
        path = self.conn_extras.get("kube_config_path")
        if settings.backend != LOCAL_BACKEND and path and not os.access(str(path), os.R_OK):
            # The Kubernetes client would only say "Invalid kube-config file. No configuration found."
            raise ConfigError(
                "connection.extra.kube_config_path",
                f"{path!r} does not exist or is not readable; expected the path of a kubeconfig file on the worker",
            )
        return settings

    # ---- the async core, synchronously -------------------------------------------------------------

    def async_session(self, log: Any = None) -> RaySession:
        """A :class:`~airflow_provider_flyray.core.session.RaySession` for this connection, for use in async
        code (it reads the connection asynchronously when entered)."""
        return RaySession(self.ray_conn_id, namespace=self._namespace_override, log=log or self.log)

    def run(self, step: Callable[[RaySession], Awaitable[T]]) -> T:
        """Run ``step(session)`` on the portal thread, in a session with this connection's extras."""
        extras = self.conn_extras

        async def with_session() -> T:
            async with RaySession(
                self.ray_conn_id, namespace=self._namespace_override, extras=extras, log=self.log
            ) as session:
                return await step(session)

        return run_sync(with_session())

    def get_cluster(self, name: str, namespace: str) -> dict[str, Any] | None:
        async def step(session: RaySession) -> dict[str, Any] | None:
            return await (await session.kube()).get_cluster(namespace, name)

        return self.run(step)

    def list_clusters(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        async def step(session: RaySession) -> list[dict[str, Any]]:
            return await (await session.kube()).list_clusters(namespace, label_selector)

        return self.run(step)

    def create_or_adopt_cluster(self, manifest: dict[str, Any], owner_key: str) -> tuple[dict[str, Any], bool]:
        """Create the RayCluster, or adopt this owner's own cluster of that name (``(cluster, created)``)."""

        async def step(session: RaySession) -> tuple[dict[str, Any], bool]:
            return await (await session.kube()).create_or_adopt_cluster(manifest, owner_key)

        return self.run(step)

    def delete_cluster(self, ref: ClusterRef, owner_key: str | None = None) -> bool:
        """Delete a cluster this provider created for ``owner_key`` (refuses any other)."""

        async def step(session: RaySession) -> bool:
            return await backend_for(ref).release(
                session,
                ref,
                action=OnFinishAction.DELETE_CLUSTER,
                ending=Ending.KILLED,
                owner_key=owner_key,
                log=self.log,
            )

        return self.run(step)

    def read_token_secret(self, name: str, namespace: str) -> str:
        async def step(session: RaySession) -> str:
            return await (await session.kube()).read_token_secret(namespace, name)

        return self.run(step)

    def stop_job(self, ref: ClusterRef, submission_id: str) -> bool:
        async def step(session: RaySession) -> bool:
            endpoint = await backend_for(ref).dashboard(session, ref)
            return await session.dashboard.stop_job(endpoint, submission_id)

        return self.run(step)

    def test_connection(self) -> tuple[bool, str]:
        """The UI's "Test": the API server answers with these credentials, the KubeRay CRDs the connection
        uses are installed (RayCluster; RayJob too when it is the connection's default) and readable in its
        namespace. The local backend: Ray is installed on this machine."""
        from kubernetes_asyncio.client.exceptions import ApiException

        from airflow_provider_flyray.core.errors import kube_reason
        from airflow_provider_flyray.core.rayjobs import RayJobClient

        kinds = ["RayCluster"]
        try:
            settings = self.settings
            if settings.backend == LOCAL_BACKEND:
                from airflow_provider_flyray.backends.local_process import ray_executable

                return True, f"local backend: Ray found at {ray_executable()}"
            namespace = self.get_namespace()
            if settings.kuberay_resource is KubeRayResource.RAYJOB:
                kinds.append("RayJob")

            async def step(session: RaySession) -> None:
                kube = await session.kube()
                await kube.list_clusters(namespace, limit=1)
                if "RayJob" in kinds:
                    await RayJobClient(kube, session.log).list(namespace, "")

            self.run(step)
            return True, f"{' and '.join(kinds)}s readable in namespace {namespace} (KubeRay CRDs installed)"
        except ApiException as exc:
            if exc.status == 404:
                return False, (
                    f"Kubernetes answered 404: the KubeRay CRDs ({', '.join(kinds)}, ray.io/v1) are not installed "
                    "in this cluster; install the KubeRay operator (see the docs: KubeRay prerequisites)"
                )
            return False, f"Kubernetes answered {exc.status}: {kube_reason(exc)}"
        except Exception as exc:
            return False, str(exc)
