"""``RaySweepPoolsOperator``: delete the idle pool clusters of a namespace (the maintenance DAG's task).

Pool clusters (``reuse=``) are also swept on every acquire and release; this task is what deletes one
when no task comes along. :func:`airflow_provider_flyray.maintenance.pool_maintenance_dag` schedules it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_flyray.backends.pool import sweep_pools
from airflow_provider_flyray.connection import KUBERNETES_BACKEND, check_namespace
from airflow_provider_flyray.core.session import RaySession
from airflow_provider_flyray.hooks.ray_cluster import RayClusterHook

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context


class RaySweepPoolsOperator(BaseOperator):
    """Delete the pool clusters idle past their ``idle_ttl`` with no live lease; returns their names.

    :param ray_conn_id: ``flyray`` connection.
    :param namespace: Kubernetes namespace (templated; default: the connection's).
    """

    template_fields: Sequence[str] = ("namespace",)
    ui_color = "#e8e8f0"

    def __init__(
        self, *, ray_conn_id: str = RayClusterHook.default_conn_name, namespace: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.ray_conn_id = ray_conn_id
        self.namespace = namespace

    def execute(self, context: Context) -> list[str]:
        hook = RayClusterHook(self.ray_conn_id, namespace=self.namespace or None)
        settings = hook.validate()
        if settings.backend != KUBERNETES_BACKEND:
            self.log.info("The %s backend has no pool clusters", settings.backend)
            return []
        namespace = check_namespace(self.namespace, "namespace") if self.namespace else settings.namespace

        async def sweep(session: RaySession) -> list[str]:
            return await sweep_pools(await session.kube(), namespace, self.log)

        deleted = hook.run(sweep)
        self.log.info("Deleted %d idle pool cluster(s) in %s: %s", len(deleted), namespace, deleted or "none")
        return deleted
