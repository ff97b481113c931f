"""``reuse=ReusePolicy(...)``: the task's job runs on its pool's RayCluster, made by the first task that needs it.

The task holds a Lease on the cluster from acquire to release, renewed by its trigger while the job runs
(:meth:`PoolBackend.holding`); it never owns the cluster. :func:`sweep_pools` deletes the pool clusters
of a namespace that :func:`~airflow_provider_flyray.pool_leases.pool_verdict` finds idle: on every
acquire and release, and from the maintenance DAG (:mod:`airflow_provider_flyray.maintenance`), so an
idle cluster goes within its ``idle_ttl`` plus that DAG's interval even when no task comes along.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from airflow_provider_flyray.backends.base import ClusterRequest
from airflow_provider_flyray.backends.raycluster import RayClusterBackend, namespace_of
from airflow_provider_flyray.cluster import ClusterRef
from airflow_provider_flyray.config import OnFinishAction
from airflow_provider_flyray.connection import KUBERNETES_BACKEND
from airflow_provider_flyray.core.errors import kube_reason
from airflow_provider_flyray.core.kube import KubeClient
from airflow_provider_flyray.core.leases import PoolClient
from airflow_provider_flyray.core.session import RaySession
from airflow_provider_flyray.errors import ClusterNotOwnedError, ConfigError
from airflow_provider_flyray.manifest import build_raycluster_manifest
from airflow_provider_flyray.naming import OWNER_ANNOTATION
from airflow_provider_flyray.owners import Ending, is_owned_by
from airflow_provider_flyray.pool_leases import (
    IDLE_TTL_ANNOTATION,
    LAST_USED_ANNOTATION,
    POOL_FINGERPRINT_ANNOTATION,
    POOL_LABEL,
    POOL_SPEC_ANNOTATION,
    PoolVerdict,
    idle_since,
    lease_manifest,
    micro_time,
    pool_verdict,
    stale_leases,
)
from airflow_provider_flyray.reuse import PoolOwner, canonical_json, pool_selector, pool_spec, spec_differences
from airflow_provider_flyray.status import Startup, StartupVerdict

# A cluster being deleted keeps its name for a moment: an acquirer waits this long for it to go.
DELETION_WAIT = 120.0


def pool_ref(ref: ClusterRef) -> tuple[str, int, str]:
    """The Lease name, its duration and the spec fingerprint a pool task's ClusterRef carries."""
    return str(ref.extra["lease"]), int(ref.extra["lease_seconds"]), str(ref.extra["fingerprint"])


def check_same_pool(cluster: dict[str, Any], owner: PoolOwner, spec: dict[str, Any], namespace: str) -> None:
    """The cluster under the pool's name is this pool's, made from the same cluster spec."""
    name = cluster["metadata"]["name"]
    if not is_owned_by(cluster, owner.key):
        raise ClusterNotOwnedError(
            f"RayCluster {namespace}/{name} exists but is not the cluster of pool {owner.key!r} "
            f"(annotation {OWNER_ANNOTATION}); it is left untouched"
        )
    annotations = cluster["metadata"].get("annotations") or {}
    if annotations.get(POOL_FINGERPRINT_ANNOTATION) != owner.fingerprint:
        try:
            theirs = json.loads(annotations.get(POOL_SPEC_ANNOTATION) or "null")
        except ValueError:
            theirs = None
        differences = spec_differences(spec, theirs) or ["the pool's cluster has no readable spec annotation"]
        raise ConfigError(
            "reuse.key",
            f"pool {owner.pool_key!r} already has RayCluster {namespace}/{name} with another cluster config "
            f"({'; '.join(differences)}); give this config its own key, or leave key unset (one pool per config)",
        )


class PoolBackend(RayClusterBackend):
    name = "pool"

    @classmethod
    def claims(cls, request: ClusterRequest) -> bool:
        return request.reuse is not None and request.settings.backend == KUBERNETES_BACKEND

    # ---- worker ---------------------------------------------------------------------------------------

    async def acquire(self, session: RaySession, request: ClusterRequest, log: logging.Logger | Any) -> ClusterRef:
        assert request.reuse is not None
        identity = request.owner.identity  # type: ignore[attr-defined]
        kube = await session.kube()
        pools, namespace, policy = PoolClient(kube, log), request.namespace, request.reuse
        owner = PoolOwner.of(policy, request.config, identity.dag_id, identity.run_id)
        name, spec = owner.cluster_name(), pool_spec(request.config)
        # The Lease first: a sweep judging the cluster from now on sees it (see pool_leases), so the
        # sweep below never deletes the cluster this task is about to join.
        lease = lease_manifest(
            cluster_name=name,
            namespace=namespace,
            holder_key=request.owner.key,
            lease_seconds=policy.lease_seconds,
            now=time.time(),
        )
        await pools.hold(lease)
        try:
            await sweep_pools(kube, namespace, log)
            await self._join_or_create(pools, kube, owner, request, spec, log)
        except BaseException:
            with contextlib.suppress(Exception):
                await pools.release(namespace, lease["metadata"]["name"])
            raise
        extra = {
            "kind": "RayCluster",
            "pool": owner.key,
            "lease": lease["metadata"]["name"],
            "lease_seconds": policy.lease_seconds,
            "fingerprint": owner.fingerprint,
        }
        return ClusterRef(self.name, name=name, namespace=namespace, owned=False, extra=extra)

    async def _join_or_create(
        self,
        pools: PoolClient,
        kube: KubeClient,
        owner: PoolOwner,
        request: ClusterRequest,
        spec: dict[str, Any],
        log: logging.Logger | Any,
    ) -> None:
        namespace, name = request.namespace, owner.cluster_name()
        give_up = time.monotonic() + DELETION_WAIT
        while time.monotonic() < give_up:
            existing = await kube.get_cluster(namespace, name)
            if existing is not None and not existing["metadata"].get("deletionTimestamp"):
                check_same_pool(existing, owner, spec, namespace)
                touched = await pools.annotate_cluster(namespace, name, {LAST_USED_ANNOTATION: micro_time(time.time())})
                if touched is not None and not touched["metadata"].get("deletionTimestamp"):
                    log.info("Joining pool %r: RayCluster %s/%s", owner.pool_key, namespace, name)
                    return
            elif existing is None:
                assert request.reuse is not None
                manifest = build_raycluster_manifest(
                    request.config,
                    name=name,
                    namespace=namespace,
                    labels=owner.labels(),
                    annotations={
                        OWNER_ANNOTATION: owner.key,
                        POOL_SPEC_ANNOTATION: canonical_json(spec),
                        POOL_FINGERPRINT_ANNOTATION: owner.fingerprint,
                        IDLE_TTL_ANNOTATION: f"{request.reuse.idle_seconds:g}",
                        LAST_USED_ANNOTATION: micro_time(time.time()),
                    },
                )
                try:
                    await kube.create_cluster(manifest)
                    log.info("Created RayCluster %s/%s for pool %r", namespace, name, owner.pool_key)
                    return
                except ApiException as exc:
                    if exc.status != 409:  # 409: another task created it first; join it
                        raise ConfigError(
                            "ray_job_config", f"Kubernetes refused the RayCluster: {kube_reason(exc)}"
                        ) from None
                    continue
            await asyncio.sleep(1.0)  # the pool's previous cluster is still being deleted
        raise ClusterNotOwnedError(
            f"RayCluster {namespace}/{name} of pool {owner.key!r} was still being deleted after {DELETION_WAIT:.0f}s"
        )

    async def release(
        self,
        session: RaySession,
        ref: ClusterRef,
        *,
        action: OnFinishAction | str,
        ending: Ending,
        owner_key: str | None,
        log: logging.Logger | Any,
    ) -> bool:
        """Let go of the cluster (drop the Lease); deleted only when the pool's idle rule says so."""
        kube = await session.kube()
        pools, namespace = PoolClient(kube, log), namespace_of(ref)
        lease, _, _ = pool_ref(ref)
        await pools.annotate_cluster(namespace, ref.name, {LAST_USED_ANNOTATION: micro_time(time.time())})
        if await pools.release(namespace, lease):
            log.info("Released pool %s (its lease %s)", ref.describe(), lease)
        return ref.name in await sweep_pools(kube, namespace, log, only=ref.name)

    # ---- trigger --------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def holding(self, session: RaySession, ref: ClusterRef, holder_key: str) -> AsyncIterator[None]:
        """Renew this task's Lease while the trigger follows the job (re-made if a sweep removed it)."""
        renewer = asyncio.create_task(self._renew(session, ref, holder_key))
        try:
            yield
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await renewer

    async def _renew(self, session: RaySession, ref: ClusterRef, holder_key: str) -> None:
        lease, seconds, _ = pool_ref(ref)
        pools, namespace = PoolClient(await session.kube(), session.log), namespace_of(ref)
        while True:
            try:
                if not await pools.renew(namespace, lease, seconds):
                    manifest = lease_manifest(
                        cluster_name=ref.name,
                        namespace=namespace,
                        holder_key=holder_key,
                        lease_seconds=seconds,
                        now=time.time(),
                    )
                    await pools.hold(manifest)
                    session.log.warning("The lease %s on %s had expired; it was taken again", lease, ref.describe())
            except Exception as exc:  # the next renewal may succeed before the lease runs out
                session.log.warning("Could not renew the lease %s on %s: %s", lease, ref.describe(), exc)
            await asyncio.sleep(seconds / 3)

    async def wait_until_ready(self, session: RaySession, ref: ClusterRef, deadline: float | None) -> StartupVerdict:
        cluster = await (await session.kube()).get_cluster(namespace_of(ref), ref.name)
        _, _, fingerprint = pool_ref(ref)
        found = ((cluster or {}).get("metadata", {}).get("annotations") or {}).get(POOL_FINGERPRINT_ANNOTATION)
        if cluster is not None and found != fingerprint:
            return StartupVerdict(
                Startup.FAILED, f"{ref.describe()} was replaced by a cluster with another config; the job was not run"
            )
        return await super().wait_until_ready(session, ref, deadline)


async def sweep_pools(
    kube: KubeClient, namespace: str, log: logging.Logger | Any, only: str | None = None
) -> list[str]:
    """Delete the pool clusters of ``namespace`` that are idle past their ``idle_ttl`` with no live Lease,
    and the Leases that hold nothing; the names of the clusters deleted. Best effort: a failure is logged."""
    deleted: list[str] = []
    try:
        pools, now = PoolClient(kube, log), time.time()
        clusters = await kube.list_clusters(namespace, pool_selector())
        by_pool: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for lease in await pools.list_leases(namespace):
            by_pool[((lease.get("metadata") or {}).get("labels") or {}).get(POOL_LABEL, "")].append(lease)
        for cluster in clusters:
            meta = cluster["metadata"]
            name, leases = meta["name"], by_pool.pop(meta["name"], [])
            if only is not None and name != only:
                continue
            verdict, cluster, leases = await judge_and_delete(kube, pools, namespace, cluster, leases, now)
            if verdict.delete:
                log.info("Deleted pool RayCluster %s/%s: %s", namespace, name, verdict.reason)
                deleted.append(name)
                stale = [str(lease["metadata"]["name"]) for lease in leases]
            else:
                stale = stale_leases(leases, now)
                dropped = [lease for lease in leases if lease["metadata"]["name"] in stale]
                if dropped and (since := idle_since(cluster, dropped)) is not None:
                    # The idle clock keeps what the Leases about to go said.
                    await pools.annotate_cluster(namespace, name, {LAST_USED_ANNOTATION: micro_time(since)})
            for lease_name in stale:
                await pools.release(namespace, lease_name)
        if only is None:  # Leases of clusters that are gone (a sweep killed between the two deletes)
            for leases in by_pool.values():
                for lease_name in stale_leases(leases, now):
                    await pools.release(namespace, lease_name)
    except Exception as exc:
        log.warning("Could not sweep the idle pool clusters of %s: %s", namespace, exc)
    return deleted


JUDGE_ATTEMPTS = 3


async def judge_and_delete(
    kube: KubeClient,
    pools: PoolClient,
    namespace: str,
    cluster: dict[str, Any],
    leases: list[dict[str, Any]],
    now: float,
) -> tuple[PoolVerdict, dict[str, Any], list[dict[str, Any]]]:
    """Judge the cluster and delete it when idle, guarded by the version judged (verdict.delete: deleted).

    KubeRay writes the cluster's status while it runs, which also fails the precondition; so a failed
    delete is judged again on a fresh read, and an acquirer's touch shows there as a live Lease or a new
    ``last-used``."""
    name = cluster["metadata"]["name"]
    for _ in range(JUDGE_ATTEMPTS):
        verdict = pool_verdict(cluster, leases, now)
        if not verdict.delete:
            return verdict, cluster, leases
        if await pools.delete_cluster_unchanged(namespace, name, cluster["metadata"]["resourceVersion"]):
            return verdict, cluster, leases
        fresh = await kube.get_cluster(namespace, name)
        if fresh is None:
            break
        cluster, leases, now = fresh, await pools.list_leases(namespace, name), time.time()
    return PoolVerdict(False, "changed while it was judged"), cluster, leases
