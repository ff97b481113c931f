"""``kuberay_resource="RayJob"``: a KubeRay RayJob per task try; KubeRay owns the cluster's lifecycle.

The worker creates the RayJob (or adopts the live one of an earlier try, whose ``jobId`` the task then
submits); KubeRay makes the RayCluster, deletes it after the job (``shutdownAfterJobFinishes``) and
enforces ``activeDeadlineSeconds``, so a lost Airflow leaves nothing running. The trigger waits for the
cluster KubeRay names, then follows it exactly as in RayCluster mode (the RayCluster half of this class
is :class:`~.raycluster.RayClusterBackend`), and also stops at once when KubeRay gives the RayJob up
(``ValidationFailed``, a deadline). Releasing deletes the RayJob: KubeRay's finalizer stops the job and
its cluster goes with it. The pure half is :mod:`airflow_provider_flyray.rayjob`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

from airflow_provider_flyray.backends.base import ClusterRequest
from airflow_provider_flyray.backends.raycluster import RayClusterBackend, is_deleted, namespace_of
from airflow_provider_flyray.cluster import ClusterRef
from airflow_provider_flyray.connection import KUBERNETES_BACKEND, ConnectionSettings
from airflow_provider_flyray.core.rayjobs import RayJobClient
from airflow_provider_flyray.core.session import RaySession
from airflow_provider_flyray.errors import ConfigError, DashboardUnreachableError
from airflow_provider_flyray.jobs_api import DashboardEndpoint, JobSubmission
from airflow_provider_flyray.naming import ON_FINISH_ANNOTATION
from airflow_provider_flyray.owners import Ending, owner_key_of, should_delete
from airflow_provider_flyray.rayjob import (
    build_rayjob_manifest,
    cluster_name_of,
    describe_status,
    is_terminal,
    rayjob_verdict,
)
from airflow_provider_flyray.status import Startup, StartupVerdict

# How long KubeRay may take to name (and create) the RayJob's cluster before the wait says it is not
# there: it does so on its first reconcile, within a second when the operator runs.
NAMING_WAIT = 60.0
STATUS_POLL = 2.0


class RayJobBackend(RayClusterBackend):
    name = "rayjob"

    @classmethod
    def claims(cls, request: ClusterRequest) -> bool:
        if request.rayjob is None:
            return False
        for field, given in (("address", request.address), ("cluster", request.cluster), ("reuse", request.reuse)):
            if given is not None:
                raise ConfigError(
                    field, "cannot be combined with kuberay_resource='RayJob' (KubeRay owns that cluster's lifecycle)"
                )
        if request.settings.backend != KUBERNETES_BACKEND:
            raise ConfigError("kuberay_resource", "'RayJob' needs the connection's kubernetes backend (KubeRay)")
        return True

    # ---- worker -------------------------------------------------------------------------------------

    async def acquire(self, session: RaySession, request: ClusterRequest, log: logging.Logger | Any) -> ClusterRef:
        assert request.rayjob is not None
        wanted = request.rayjob
        kube = await session.kube()
        rayjobs, namespace, owner = RayJobClient(kube, log), request.namespace, request.owner
        family = await rayjobs.list(namespace, owner.family_selector())
        for rayjob in family:
            meta = rayjob["metadata"]
            if owner_key_of(rayjob) == owner.key and not is_terminal(rayjob) and not meta.get("deletionTimestamp"):
                log.info(
                    "Reattaching to RayJob %s/%s of an earlier try (%s)",
                    namespace,
                    meta["name"],
                    describe_status(rayjob),
                )
                return self.ref_for(rayjob, request.cluster_name)
        await self.sweep_finished(rayjobs, namespace, family, owner.key, log)
        manifest = build_rayjob_manifest(
            request.config,
            owner,
            name=wanted.name,
            namespace=namespace,
            submission=wanted.submission,
            on_finish_action=request.on_finish_action,
            keep_alive_seconds=wanted.keep_alive_seconds,
            deadline_seconds=wanted.active_deadline_seconds,
            submission_mode=wanted.submission_mode,
            cluster_selector=request.cluster_name,
        )
        rayjob, created = await rayjobs.create_or_adopt(manifest, owner.key)
        log.info("%s RayJob %s/%s", "Created" if created else "Found this try's", namespace, wanted.name)
        return self.ref_for(rayjob, request.cluster_name)

    def ref_for(self, rayjob: dict[str, Any], cluster_name: str | None) -> ClusterRef:
        meta, spec = rayjob["metadata"], rayjob.get("spec") or {}
        return ClusterRef(
            self.name,
            name=meta["name"],
            namespace=meta["namespace"],
            owned=True,
            extra={
                "kind": "RayJob",
                "job_id": str(spec.get("jobId") or ""),
                "cluster": cluster_name or cluster_name_of(rayjob) or "",
                "existing_cluster": bool(cluster_name),
            },
        )

    def submission_for(self, ref: ClusterRef, submission: JobSubmission) -> JobSubmission:
        """The job KubeRay follows is the RayJob's ``jobId``: an adopted RayJob of an earlier try keeps its id."""
        job_id = str(ref.extra.get("job_id") or "")
        return dataclasses.replace(submission, submission_id=job_id) if job_id else submission

    async def sweep_finished(
        self, rayjobs: RayJobClient, namespace: str, family: list[dict[str, Any]], owner_key: str, log: Any
    ) -> None:
        """Delete the RayJobs of earlier tries and runs that KubeRay is done with and whose policy wanted
        them gone (KubeRay deletes their cluster, not the RayJob record). Best effort."""
        for rayjob in family:
            meta = rayjob["metadata"]
            state = str((rayjob.get("status") or {}).get("jobDeploymentStatus") or "")
            action = (meta.get("annotations") or {}).get(ON_FINISH_ANNOTATION, "delete_cluster")
            ending = Ending.SUCCEEDED if state == "Complete" else Ending.FAILED
            if not is_terminal(rayjob) or meta.get("deletionTimestamp") or not should_delete(action, ending):
                continue
            try:
                if await rayjobs.delete(namespace, meta["name"]):
                    log.info("Deleted RayJob %s/%s of an earlier try or run (%s)", namespace, meta["name"], state)
            except Exception as exc:
                log.warning("Could not delete the finished RayJob %s/%s: %s", namespace, meta["name"], exc)

    async def delete(
        self, session: RaySession, ref: ClusterRef, owner_key: str | None, log: logging.Logger | Any
    ) -> bool:
        rayjobs, namespace = RayJobClient(await session.kube(), log), namespace_of(ref)
        rayjob = await rayjobs.get(namespace, ref.name)
        if rayjob is None:
            return False
        if owner_key is not None and owner_key_of(rayjob) != owner_key:
            log.warning("Not deleting: %s is not managed by this provider for this task", ref.describe())
            return False
        deleted = await rayjobs.delete(namespace, ref.name)
        if deleted:
            log.info("Deleted %s (KubeRay stops its job and deletes its cluster)", ref.describe())
        return deleted

    # ---- trigger ------------------------------------------------------------------------------------

    def cluster_ref(self, ref: ClusterRef) -> ClusterRef:
        """The RayCluster half: the cluster KubeRay made (or selected) for the RayJob."""
        cluster = str(ref.extra.get("cluster") or "")
        if not cluster:
            raise DashboardUnreachableError(f"KubeRay has not named the cluster of {ref.describe()} yet")
        return ClusterRef("raycluster", name=cluster, namespace=ref.namespace, owned=False)

    async def resolve(self, session: RaySession, ref: ClusterRef) -> ClusterRef:
        """Wait (briefly) until KubeRay named the RayJob's cluster and made it; unchanged when it did
        not, or gave the RayJob up (the wait then reports why)."""
        rayjobs, kube, namespace = (
            RayJobClient(await session.kube(), session.log),
            await session.kube(),
            namespace_of(ref),
        )
        limit = time.monotonic() + NAMING_WAIT
        while time.monotonic() < limit:
            rayjob = await rayjobs.get(namespace, ref.name)
            if rayjob_verdict(rayjob, ref.name).state is not Startup.PENDING:
                return ref
            cluster = str(ref.extra.get("cluster") or "") or cluster_name_of(rayjob)
            if cluster and (
                ref.extra.get("existing_cluster") or not is_deleted(await kube.get_cluster(namespace, cluster))
            ):
                return dataclasses.replace(ref, extra={**ref.extra, "cluster": cluster})
            await asyncio.sleep(0.5)
        return ref

    async def wait_until_ready(self, session: RaySession, ref: ClusterRef, deadline: float | None) -> StartupVerdict:
        """The cluster's startup verdict (pods, events: the same fail-fast as RayCluster mode), cut short
        when KubeRay gives the RayJob up."""
        rayjobs = RayJobClient(await session.kube(), session.log)
        if not ref.extra.get("cluster"):
            verdict = rayjob_verdict(await rayjobs.get(namespace_of(ref), ref.name), ref.name)
            if verdict.state is not Startup.PENDING:
                return StartupVerdict(Startup.FAILED, verdict.reason)
            return StartupVerdict(
                Startup.FAILED,
                f"KubeRay did not make a cluster for {ref.describe()} within {NAMING_WAIT:.0f}s ({verdict.reason}): "
                "is the KubeRay operator running, at v1.4 or later?",
            )
        cluster = super().wait_until_ready(session, self.cluster_ref(ref), deadline)
        return await first_of(cluster, self.until_given_up(session, ref))

    async def until_given_up(self, session: RaySession, ref: ClusterRef) -> StartupVerdict:
        rayjobs, namespace = RayJobClient(await session.kube(), session.log), namespace_of(ref)
        while True:
            verdict = rayjob_verdict(await rayjobs.get(namespace, ref.name), ref.name)
            if verdict.state is not Startup.PENDING:
                return StartupVerdict(Startup.FAILED, verdict.reason)
            await asyncio.sleep(STATUS_POLL)

    async def dashboard(self, session: RaySession, ref: ClusterRef) -> DashboardEndpoint:
        if not ref.extra.get("cluster"):
            ref = await self.resolve(session, ref)
        return await super().dashboard(session, self.cluster_ref(ref))

    async def startup_problem(self, session: RaySession, ref: ClusterRef) -> str | None:
        return await super().startup_problem(session, self.cluster_ref(ref))

    async def watch_gone(self, session: RaySession, ref: ClusterRef) -> str | None:
        await super().watch_gone(session, self.cluster_ref(ref))
        # KubeRay may already be making a new cluster of that name: the deletion seen is the reason.
        return await self.gone_reason(session, ref) or self.cluster_deleted(ref)

    async def gone_reason(self, session: RaySession, ref: ClusterRef, *, settle: bool = False) -> str | None:
        rayjob = await RayJobClient(await session.kube(), session.log).get(namespace_of(ref), ref.name)
        if rayjob is None or (rayjob.get("metadata") or {}).get("deletionTimestamp"):
            return f"{ref.describe()} was deleted while the Ray job was running"
        if str((rayjob.get("status") or {}).get("jobDeploymentStatus")) == "Failed":
            return f"KubeRay ended {ref.describe()}: {describe_status(rayjob)}"
        if ref.extra.get("cluster") and await super().gone_reason(session, self.cluster_ref(ref)):
            return self.cluster_deleted(ref)
        return None

    @staticmethod
    def cluster_deleted(ref: ClusterRef) -> str:
        cluster = f"the RayCluster {ref.extra['cluster']}" if ref.extra.get("cluster") else "the RayCluster"
        return f"{cluster} of {ref.describe()} was deleted while the Ray job was running"

    def browser_url(self, settings: ConnectionSettings, ref: ClusterRef, direct_url: str | None) -> str | None:
        if not ref.extra.get("cluster"):  # before KubeRay named it: no button rather than a wrong one
            return None
        return super().browser_url(settings, self.cluster_ref(ref), direct_url)


async def first_of(*waits: Any) -> StartupVerdict:
    """The first verdict of several concurrent waits; the others are cancelled."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        return next(iter(done)).result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
