"""Kubernetes calls for RayJob mode, async: create (or adopt), read, list and delete ``ray.io/v1`` RayJobs.

The objects come back as plain API dicts, read by :mod:`airflow_provider_flyray.rayjob`.
"""

from __future__ import annotations

import logging
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from airflow_provider_flyray.core.errors import kube_reason, unless_missing, with_retries
from airflow_provider_flyray.core.kube import KubeClient
from airflow_provider_flyray.errors import ClusterNotOwnedError, ConfigError
from airflow_provider_flyray.manifest import RAY_API_GROUP, RAY_API_VERSION
from airflow_provider_flyray.naming import MANAGED_BY_LABEL, OWNER_ANNOTATION
from airflow_provider_flyray.owners import is_owned_by
from airflow_provider_flyray.rayjob import RAYJOB_PLURAL


def _path(namespace: str, name: str | None = None) -> tuple[Any, ...]:
    base = (RAY_API_GROUP, RAY_API_VERSION, namespace, RAYJOB_PLURAL)
    return base if name is None else (*base, name)


class RayJobClient:
    """The RayJob calls of one session, next to its :class:`KubeClient`."""

    def __init__(self, kube: KubeClient, log: logging.Logger | Any) -> None:
        self.custom = kube.custom
        self.log = log

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await unless_missing(
            f"get RayJob {namespace}/{name}",
            lambda: self.custom.get_namespaced_custom_object(*_path(namespace, name)),
            self.log,
            None,
        )

    async def list(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        result = await with_retries(
            f"list RayJobs in {namespace}",
            lambda: self.custom.list_namespaced_custom_object(*_path(namespace), label_selector=label_selector),
            self.log,
        )
        return list(result.get("items", []))

    async def create_or_adopt(self, manifest: dict[str, Any], owner_key: str) -> tuple[dict[str, Any], bool]:
        """Create the RayJob; a name taken by this owner's own RayJob (this try, a restarted worker) is
        adopted, one taken by anything else raises :class:`ClusterNotOwnedError` and is left alone."""
        meta = manifest["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        try:
            created = await with_retries(
                f"create RayJob {namespace}/{name}",
                lambda: self.custom.create_namespaced_custom_object(
                    RAY_API_GROUP, RAY_API_VERSION, namespace, RAYJOB_PLURAL, manifest
                ),
                self.log,
            )
            return created, True
        except ApiException as exc:
            if exc.status != 409:
                raise ConfigError("kuberay_resource", f"Kubernetes refused the RayJob: {kube_reason(exc)}") from None
        existing = await self.get(namespace, name)
        if existing is None or not is_owned_by(existing, owner_key):
            raise ClusterNotOwnedError(
                f"RayJob {namespace}/{name} already exists and was not created by this task "
                f"(label {MANAGED_BY_LABEL} / annotation {OWNER_ANNOTATION} differ); it is left untouched. "
                "Delete it or rename the task."
            )
        return existing, False

    async def delete(self, namespace: str, name: str) -> bool:
        """Delete the RayJob: KubeRay's finalizer stops its Ray job, and its RayCluster goes with it
        (owner reference); False when it was already gone."""
        deleted = await unless_missing(
            f"delete RayJob {namespace}/{name}",
            lambda: self.custom.delete_namespaced_custom_object(
                *_path(namespace, name), body=k8s.V1DeleteOptions(propagation_policy="Background")
            ),
            self.log,
            None,
        )
        return deleted is not None
