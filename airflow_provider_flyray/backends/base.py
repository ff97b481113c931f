"""The protocol every way of getting a Ray cluster implements, and what a task asks of it.

The operator (on the worker) calls :meth:`ClusterBackend.acquire` and :meth:`~ClusterBackend.release`;
the trigger calls :meth:`~ClusterBackend.holding` around its wait, and in it
:meth:`~ClusterBackend.wait_until_ready`, :meth:`~ClusterBackend.dashboard`,
:meth:`~ClusterBackend.watch_gone` and :meth:`~ClusterBackend.gone_reason`. Both only ever hold a
:class:`~airflow_provider_flyray.cluster.ClusterRef` and ask the backend registered under its
``backend`` name; neither knows which backend it is talking to.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from airflow_provider_flyray.cluster import ClusterRef
from airflow_provider_flyray.config import OnFinishAction, RayJobConfig
from airflow_provider_flyray.connection import ConnectionSettings, DashboardAccess
from airflow_provider_flyray.core.session import RaySession
from airflow_provider_flyray.jobs_api import DashboardEndpoint, JobSubmission, token_headers
from airflow_provider_flyray.owners import Ending, Owner, should_delete
from airflow_provider_flyray.rayjob import RayJobRequest
from airflow_provider_flyray.reuse import ReusePolicy
from airflow_provider_flyray.status import Startup, StartupVerdict

# Airflow's ``ti.get_task_states(dag_id=, task_ids=, run_ids=)``: {run_id: {task_id[_map]: state}}.
TaskStates = Callable[..., Mapping[str, Mapping[str, Any]]]


@dataclass(frozen=True)
class ClusterRequest:
    """What a task asks for, rendered and validated. Lives on the worker only (it is never serialised)."""

    owner: Owner
    settings: ConnectionSettings
    namespace: str
    config: RayJobConfig
    on_finish_action: OnFinishAction
    cluster_name: str | None = None
    address: str | None = None
    # Lets a backend judge the clusters of earlier runs (the orphan sweep); None when unavailable.
    task_states: TaskStates | None = None
    # A cluster made for the DAG run by its setup task (``cluster=create.output``): used, never owned.
    cluster: ClusterRef | None = None
    # ``reuse=``: run on the pool's cluster, shared with the tasks of the same config (backends/pool.py).
    reuse: ReusePolicy | None = None
    # ``kuberay_resource="RayJob"``: a RayJob whose cluster KubeRay owns (backends/rayjob.py).
    rayjob: RayJobRequest | None = None


class ClusterBackend:
    """Base class of the backends: the defaults are those of a cluster that needs no lifecycle."""

    # The name under which the backend is registered and that its ClusterRefs carry.
    name: ClassVar[str]
    # Whether the cluster has a startup to wait for (and report) before its dashboard is tried.
    has_startup: ClassVar[bool] = False

    @classmethod
    def claims(cls, request: ClusterRequest) -> bool:
        """Whether this backend serves ``request`` (asked in registration order; the first one wins)."""
        raise NotImplementedError

    # ---- worker -----------------------------------------------------------------------------------

    async def acquire(self, session: RaySession, request: ClusterRequest, log: logging.Logger | Any) -> ClusterRef:
        """Create, adopt or find the cluster (fast: the wait for it happens in the trigger)."""
        raise NotImplementedError

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
        """Apply the cluster policy at the end of the owner's use; True when the cluster was deleted.

        The decision is :func:`~airflow_provider_flyray.owners.should_delete`'s; only owned clusters
        are ever deleted."""
        if not ref.owned:
            return False
        if not should_delete(action, ending):
            log.info("Keeping %s (on_finish_action=%s)", ref.describe(), OnFinishAction.parse(action).value)
            return False
        return await self.delete(session, ref, owner_key, log)

    async def delete(
        self, session: RaySession, ref: ClusterRef, owner_key: str | None, log: logging.Logger | Any
    ) -> bool:
        """Delete an owned cluster now (after :meth:`release` decided so); True when it was deleted."""
        return False

    def submission_for(self, ref: ClusterRef, submission: JobSubmission) -> JobSubmission:
        """The job to submit on ``ref`` (a RayJob's ``jobId`` names it); ``submission`` by default."""
        return submission

    # ---- trigger ----------------------------------------------------------------------------------

    async def resolve(self, session: RaySession, ref: ClusterRef) -> ClusterRef:
        """``ref`` once the cluster is known by name (KubeRay names a RayJob's); ``ref`` by default."""
        return ref

    async def wait_until_ready(self, session: RaySession, ref: ClusterRef, deadline: float | None) -> StartupVerdict:
        """Ready, failed (with the reason) or past ``deadline``. The Jobs API answering is checked after."""
        return StartupVerdict(Startup.READY)

    @contextlib.asynccontextmanager
    async def holding(self, session: RaySession, ref: ClusterRef, holder_key: str) -> AsyncIterator[None]:
        """Around the trigger's whole wait: what keeps the cluster this task's while it runs (a pool's
        Lease renewal); nothing by default."""
        yield

    async def dashboard(self, session: RaySession, ref: ClusterRef) -> DashboardEndpoint:
        """Where and how to reach the cluster's Ray dashboard (holds credentials: never serialise it)."""
        raise NotImplementedError

    async def startup_problem(self, session: RaySession, ref: ClusterRef) -> str | None:
        """While waiting for the dashboard: a reason to stop waiting at once (e.g. the head exited)."""
        return None

    async def watch_gone(self, session: RaySession, ref: ClusterRef) -> str | None:
        """Return a reason as soon as the cluster goes away; None at once when it cannot be watched."""
        return None

    async def gone_reason(self, session: RaySession, ref: ClusterRef, *, settle: bool = False) -> str | None:
        """Why the cluster is gone, or None while it is there. ``settle``: the caller just saw an error
        that a dying cluster would explain, so give it a moment to finish dying."""
        return None

    async def exit_output(self, session: RaySession, ref: ClusterRef) -> str:
        """What a cluster that went away printed last, to append to the reason ("" when nothing)."""
        return ""

    def browser_url(self, settings: ConnectionSettings, ref: ClusterRef, direct_url: str | None) -> str | None:
        """The dashboard URL for the UI buttons (None: no button), given the URL the trigger used."""
        return direct_url or ref.address


def address_endpoint(session: RaySession, ref: ClusterRef) -> DashboardEndpoint:
    """The dashboard of a cluster known by its address (an explicit address, a local head): the
    connection's token and TLS setting, nothing from Kubernetes."""
    assert ref.address is not None
    settings = session.settings
    return DashboardEndpoint(
        ref.address,
        token_headers(settings.dashboard_token, DashboardAccess.ADDRESS),
        verify_tls=settings.verify_tls,
    )
