"""Kubernetes calls, async (``kubernetes_asyncio``): RayClusters, their pods and events, Secrets, watches.

Every call goes through :func:`~airflow_provider_flyray.core.errors.with_retries`. Objects come back as
plain API dicts (what :mod:`~airflow_provider_flyray.status` reads). The watches keep the objects they
deliver, so following a cluster's startup costs one list per watched kind, not a GET per change.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import watch as k8s_watch
from kubernetes_asyncio.client.exceptions import ApiException

from airflow_provider_flyray.core.errors import kube_reason, unless_missing, with_retries
from airflow_provider_flyray.errors import ClusterNotOwnedError, ConfigError, FlyrayError
from airflow_provider_flyray.manifest import RAY_API_GROUP, RAY_API_VERSION, RAYCLUSTER_PLURAL
from airflow_provider_flyray.naming import MANAGED_BY_LABEL, OWNER_ANNOTATION
from airflow_provider_flyray.owners import is_owned_by

RAY_TOKEN_SECRET_KEY = "auth_token"
WATCH_SECONDS = 30
DELETION_WATCH_SECONDS = 300


def _cluster_path(namespace: str, name: str | None = None) -> tuple[Any, ...]:
    base = (RAY_API_GROUP, RAY_API_VERSION, namespace, RAYCLUSTER_PLURAL)
    return base if name is None else (*base, name)


class KubeClient:
    """The Kubernetes side of one :class:`~airflow_provider_flyray.core.session.RaySession`."""

    def __init__(self, api_client: k8s.ApiClient, log: logging.Logger | Any) -> None:
        self.api_client = api_client
        self.custom = k8s.CustomObjectsApi(api_client)
        self.core = k8s.CoreV1Api(api_client)
        self.log = log

    def _plain(self, obj: Any) -> Any:
        return self.api_client.sanitize_for_serialization(obj)

    # ---- RayClusters ----------------------------------------------------------------------------------

    async def get_cluster(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await unless_missing(
            f"get RayCluster {namespace}/{name}",
            lambda: self.custom.get_namespaced_custom_object(*_cluster_path(namespace, name)),
            self.log,
            None,
        )

    async def list_clusters(self, namespace: str, label_selector: str = "", limit: int | None = None) -> list[Any]:
        extra: dict[str, Any] = {"limit": limit} if limit else {}
        result = await with_retries(
            f"list RayClusters in {namespace}",
            lambda: self.custom.list_namespaced_custom_object(
                RAY_API_GROUP, RAY_API_VERSION, namespace, RAYCLUSTER_PLURAL, label_selector=label_selector, **extra
            ),
            self.log,
        )
        return list(result.get("items", []))

    async def create_cluster(self, manifest: dict[str, Any]) -> dict[str, Any]:
        meta = manifest["metadata"]
        return await with_retries(
            f"create RayCluster {meta['namespace']}/{meta['name']}",
            lambda: self.custom.create_namespaced_custom_object(
                RAY_API_GROUP, RAY_API_VERSION, meta["namespace"], RAYCLUSTER_PLURAL, manifest
            ),
            self.log,
        )

    async def create_or_adopt_cluster(self, manifest: dict[str, Any], owner_key: str) -> tuple[dict[str, Any], bool]:
        """Create the RayCluster; if the name is taken by this owner's own cluster, adopt it.

        Returns ``(cluster, created)``. A cluster with that name that is not ours raises
        :class:`ClusterNotOwnedError` and is never touched.
        """
        meta = manifest["metadata"]
        try:
            return await self.create_cluster(manifest), True
        except ApiException as exc:
            if exc.status != 409:
                raise ConfigError("ray_job_config", f"Kubernetes refused the RayCluster: {kube_reason(exc)}") from None
        existing = await self.get_cluster(meta["namespace"], meta["name"])
        if existing is None or not is_owned_by(existing, owner_key):
            raise ClusterNotOwnedError(
                f"RayCluster {meta['namespace']}/{meta['name']} already exists and was not created by this task "
                f"(label {MANAGED_BY_LABEL} / annotation {OWNER_ANNOTATION} differ); it is left untouched. "
                "Delete it or rename the task."
            )
        return existing, False

    async def delete_cluster(self, namespace: str, name: str) -> bool:
        """Delete (in the background: KubeRay removes the pods); False when it was already gone."""
        deleted = await unless_missing(
            f"delete RayCluster {namespace}/{name}",
            lambda: self.custom.delete_namespaced_custom_object(
                *_cluster_path(namespace, name), body=k8s.V1DeleteOptions(propagation_policy="Background")
            ),
            self.log,
            None,
        )
        return deleted is not None

    # ---- pods, events, Secrets ------------------------------------------------------------------------

    async def list_pods(self, namespace: str, cluster: str) -> list[dict[str, Any]]:
        pods = await with_retries(
            f"list pods of RayCluster {namespace}/{cluster}",
            lambda: self.core.list_namespaced_pod(namespace, label_selector=f"ray.io/cluster={cluster}"),
            self.log,
        )
        return [self._plain(p) for p in pods.items]

    async def list_events(self, namespace: str, names: set[str]) -> list[dict[str, Any]]:
        """Events about the objects named ``names`` (a cluster and its pods)."""
        events = await with_retries(
            f"list events in {namespace}", lambda: self.core.list_namespaced_event(namespace), self.log
        )
        items = [self._plain(e) for e in events.items]
        return [e for e in items if (e.get("involvedObject") or {}).get("name") in names]

    async def pod_log_tail(self, namespace: str, pod: str, lines: int = 20) -> str:
        with contextlib.suppress(Exception):
            return str(await self.core.read_namespaced_pod_log(pod, namespace, tail_lines=lines, previous=False))
        return ""

    async def read_token_secret(self, namespace: str, name: str) -> str:
        """The Ray token stored under ``auth_token`` in a Secret."""
        secret = await with_retries(
            f"read Secret {namespace}/{name}", lambda: self.core.read_namespaced_secret(name, namespace), self.log
        )
        raw = (secret.data or {}).get(RAY_TOKEN_SECRET_KEY)
        if not raw:
            raise ConfigError(
                "dashboard_token_secret", f"Secret {namespace}/{name} has no key {RAY_TOKEN_SECRET_KEY!r}"
            )
        return base64.b64decode(raw).decode()

    # ---- watches --------------------------------------------------------------------------------------

    async def follow_cluster(
        self, namespace: str, name: str, wake_every: float = 5.0
    ) -> AsyncGenerator[tuple[dict[str, Any] | None, list[dict[str, Any]]], None]:
        """The RayCluster and its pods now, then again after every change (and at least every
        ``wake_every`` seconds, so a caller can check its deadline).

        One list per kind starts each watch; after that the state is kept from what the watches deliver.
        A watch that ends or fails is re-opened from a fresh list; without ``watch`` rights the state is
        re-listed on every wake (slower, still correct).
        """
        changed = asyncio.Event()
        state: dict[str, Any] = {"cluster": None, "pods": {}}
        lists: dict[str, Callable[..., Any]] = {
            "cluster": self.custom.list_namespaced_custom_object,
            "pods": self.core.list_namespaced_pod,
        }
        selectors: dict[str, dict[str, Any]] = {
            "cluster": {
                "group": RAY_API_GROUP,
                "version": RAY_API_VERSION,
                "namespace": namespace,
                "plural": RAYCLUSTER_PLURAL,
                "field_selector": f"metadata.name={name}",
            },
            "pods": {"namespace": namespace, "label_selector": f"ray.io/cluster={name}"},
        }
        polling: set[str] = set()

        async def relist(kind: str) -> str | None:
            listing = await with_retries(
                f"list {kind} of RayCluster {namespace}/{name}", lambda: lists[kind](**selectors[kind]), self.log
            )
            plain = listing if isinstance(listing, dict) else self._plain(listing)
            items = plain.get("items") or []
            if kind == "cluster":
                state["cluster"] = items[0] if items else None
            else:
                state["pods"] = {(p.get("metadata") or {}).get("name"): p for p in items}
            changed.set()
            return (plain.get("metadata") or {}).get("resourceVersion")

        def apply(kind: str, event: dict[str, Any]) -> None:
            obj = event.get("raw_object") or event.get("object")
            if not isinstance(obj, dict):
                obj = self._plain(obj)
            deleted = event.get("type") == "DELETED"
            if kind == "cluster":
                state["cluster"] = None if deleted else obj
            else:
                pod_name = (obj.get("metadata") or {}).get("name")
                if deleted:
                    state["pods"].pop(pod_name, None)
                else:
                    state["pods"][pod_name] = obj
            changed.set()

        async def pump(kind: str, version: str | None) -> None:
            while True:
                watch = k8s_watch.Watch()
                try:
                    if version is None:
                        version = await relist(kind)
                    async with watch.stream(
                        lists[kind], resource_version=version, timeout_seconds=WATCH_SECONDS, **selectors[kind]
                    ) as stream:
                        async for event in stream:
                            if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                                apply(kind, event)
                    # A watch that timed out goes on from the last version it saw.
                    version = getattr(watch, "resource_version", None)
                except ApiException as exc:
                    if exc.status == 403:
                        self.log.warning("cannot watch %s (403): missing 'watch' in the Role; polling instead", kind)
                        polling.add(kind)
                        return
                    self.log.debug("watch of %s restarted after %s", kind, exc)
                    version = None
                    await asyncio.sleep(1)
                except (asyncio.CancelledError, PermissionError, FlyrayError):
                    raise
                except Exception as exc:  # a dropped watch is re-opened from a fresh list
                    self.log.debug("watch of %s restarted after %s", kind, exc)
                    version = None
                    await asyncio.sleep(1)

        # Both kinds are read once before anything is judged: no cluster seen yet is not "gone".
        versions = {kind: await relist(kind) for kind in lists}
        pumps = [asyncio.create_task(pump(kind, versions[kind])) for kind in lists]
        for task in pumps:
            task.add_done_callback(lambda _: changed.set())
        try:
            while True:
                changed.clear()
                yield state["cluster"], list(state["pods"].values())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wake_every):  # not wait_for: see cluster_statuses
                        await changed.wait()
                await asyncio.sleep(0.05)  # coalesce a burst of events into one look
                for task in pumps:
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                for kind in polling:
                    await relist(kind)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def wait_for_deletion(
        self, namespace: str, name: str, known: dict[str, Any] | None = None, fallback_poll: float = 30.0
    ) -> None:
        """Return as soon as the RayCluster is deleted or marked for deletion.

        One long-lived watch (no polling), started from ``known`` (a version of the cluster already
        read) or a GET, and re-opened from a fresh GET when it ends; without ``watch`` rights a GET
        every ``fallback_poll`` seconds.
        """
        can_watch = True
        while True:
            cluster, known = known or await self.get_cluster(namespace, name), None
            meta = (cluster or {}).get("metadata") or {}
            if cluster is None or meta.get("deletionTimestamp"):
                return
            if not can_watch:
                await asyncio.sleep(fallback_poll)
                continue
            try:
                async with k8s_watch.Watch().stream(
                    self.custom.list_namespaced_custom_object,
                    group=RAY_API_GROUP,
                    version=RAY_API_VERSION,
                    namespace=namespace,
                    plural=RAYCLUSTER_PLURAL,
                    field_selector=f"metadata.name={name}",
                    resource_version=meta.get("resourceVersion"),
                    timeout_seconds=DELETION_WATCH_SECONDS,
                ) as stream:
                    async for event in stream:
                        obj = event.get("raw_object") or event.get("object") or {}
                        obj_meta = obj.get("metadata") if isinstance(obj, dict) else None
                        if event.get("type") == "DELETED" or (obj_meta or {}).get("deletionTimestamp"):
                            return
            except asyncio.CancelledError:
                raise
            except ApiException as exc:
                if exc.status == 403:
                    self.log.warning(
                        "cannot watch RayCluster %s/%s (403); checking it every %.0fs", namespace, name, fallback_poll
                    )
                    can_watch = False
                else:
                    await asyncio.sleep(1)
            except Exception as exc:  # dropped watch: re-open from a fresh GET
                self.log.debug("deletion watch of %s/%s restarted after %s", namespace, name, exc)
                await asyncio.sleep(1)


def seconds_left(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.time()
