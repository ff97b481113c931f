"""One Ray cluster for the tasks of a DAG run: a setup task creates it, a teardown deletes it.

``RayCreateClusterOperator`` creates the cluster for its DAG run (the owner:
:mod:`~airflow_provider_flyray.dag_run_owner`), waits in the triggerer until it is ready and returns its
ClusterRef (plain, secret-free data) as its XCom. ``FlyteRayOperator(cluster=create.output)`` and
``@task.ray`` with ``.override(cluster=...)`` run on it without owning it; ``RayDeleteClusterOperator``
deletes it. Wired as Airflow's setup and teardown (``delete.as_teardown(setups=create)``, or
:func:`ray_cluster_for_run`), the teardown runs when the work tasks fail, when the run is marked failed
and when tasks are cleared. A setup that fails deletes what it created (its teardown is skipped then);
a cluster whose teardown was killed is deleted by the setup of a later run of the DAG, once Airflow
reports its run finished.

On the local backend the cluster is a Ray head on the Airflow machine, from setup to teardown (the
tasks must run on that machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowException, BaseOperator, conf

from airflow_provider_flyray import backends
from airflow_provider_flyray.backends import ClusterRequest, backend_for
from airflow_provider_flyray.backends.raycluster import RayClusterBackend
from airflow_provider_flyray.backends.transient import TransientRayClusterBackend
from airflow_provider_flyray.cluster import ClusterRef
from airflow_provider_flyray.config import OnFinishAction, RayJobConfig, ray_job_config_from
from airflow_provider_flyray.connection import check_namespace
from airflow_provider_flyray.core.session import RaySession
from airflow_provider_flyray.dag_run_owner import DagRunOwner, run_orphans
from airflow_provider_flyray.errors import ConfigError
from airflow_provider_flyray.events import Outcome, RayJobEvent
from airflow_provider_flyray.hooks.ray_cluster import RayClusterHook
from airflow_provider_flyray.links.ray import RayDashboardLink, publish_links
from airflow_provider_flyray.operators.arguments import check_seconds, shared_cluster
from airflow_provider_flyray.operators.worker_wait import first_event
from airflow_provider_flyray.owners import Ending
from airflow_provider_flyray.timings import Timings
from airflow_provider_flyray.triggers.ray_job import RayJobTrigger

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context, XComArg

# Where the teardown finds the key it must see on the cluster before deleting it.
OWNER_KEY_EXTRA = "owner_key"
DEFAULT_STARTUP_TIMEOUT = 600.0
# As FlyteRayOperator's (see RayJobTrigger.run): the shortest time between deferring and the event.
MIN_DEFERRAL = 8.0


class RayCreateClusterOperator(BaseOperator):
    """Create a Ray cluster for this DAG run and wait until it is ready; its XCom is the cluster.

    :param ray_job_config: the cluster (:class:`~airflow_provider_flyray.config.RayJobConfig` or a dict).
    :param ray_conn_id: ``flyray`` connection.
    :param namespace: Kubernetes namespace (templated; default: the connection's).
    :param startup_timeout: seconds for the cluster to become ready (default ``[flyray] startup_timeout``).
    :param deferrable: wait in the triggerer (default ``[operators] default_deferrable``).
    """

    template_fields: Sequence[str] = ("namespace",)
    operator_extra_links = (RayDashboardLink(),)
    ui_color = "#cfe0ff"

    def __init__(
        self,
        *,
        ray_job_config: RayJobConfig | dict[str, Any] | None = None,
        ray_conn_id: str = RayClusterHook.default_conn_name,
        namespace: str | None = None,
        startup_timeout: float | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.namespace = namespace
        self.ray_job_config = ray_job_config_from(ray_job_config)
        if self.ray_job_config.address:
            raise ConfigError("ray_job_config.address", "a shared cluster is created, not given by address")
        self.ray_conn_id = ray_conn_id
        self.startup_timeout = (
            startup_timeout
            if startup_timeout is not None
            else conf.getfloat("flyray", "startup_timeout", fallback=DEFAULT_STARTUP_TIMEOUT)
        )
        check_seconds("startup_timeout", self.startup_timeout)
        self.deferrable = deferrable

    def execute(self, context: Context) -> dict[str, Any]:
        timings = Timings()
        timings.mark("execute_started")
        hook = RayClusterHook(self.ray_conn_id, namespace=self.namespace or None)
        settings = hook.validate()
        namespace = check_namespace(self.namespace, "namespace") if self.namespace else settings.namespace
        owner = DagRunOwner.from_ti(context["ti"])
        request = ClusterRequest(
            owner=owner,
            settings=settings,
            namespace=namespace,
            config=self.ray_job_config,
            on_finish_action=OnFinishAction.DELETE_CLUSTER,
        )
        backend = backends.select(request)
        if isinstance(backend, RayClusterBackend):
            self._sweep_finished_runs(hook, owner, namespace, context)
        ref = hook.run(lambda session: backend.acquire(session, request, self.log))
        ref = dataclasses.replace(ref, extra={**ref.extra, OWNER_KEY_EXTRA: owner.key})
        timings.mark("deferred")
        trigger = RayJobTrigger(
            ray_conn_id=self.ray_conn_id,
            cluster=ref.to_dict(),
            submission=None,
            owner_key=owner.key,
            startup_deadline=time.time() + float(self.startup_timeout),
            on_finish_action=OnFinishAction.DELETE_CLUSTER.value,
            timings=timings.to_dict(),
            earliest_event=time.time() + conf.getfloat("flyray", "min_deferral_seconds", fallback=MIN_DEFERRAL)
            if self.deferrable
            else None,
        )
        if self.deferrable:
            self.defer(trigger=trigger, method_name="execute_complete")
        try:
            event = asyncio.run(first_event(trigger))
        except BaseException:
            _delete(hook, ref, self.log)
            raise
        return self.execute_complete(context, event)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None, **_: Any) -> dict[str, Any]:
        if not event:
            raise AirflowException("RayJobTrigger returned no event")
        typed = RayJobEvent.from_dict(event)
        ref = typed.cluster
        if typed.status is not Outcome.READY:
            # Its teardown is skipped when the setup fails: what it created goes now.
            _delete(RayClusterHook(self.ray_conn_id, namespace=ref.namespace), ref, self.log)
            raise AirflowException(typed.reason or f"the Ray cluster did not become ready ({typed.status.value})")
        self.log.info("%s is ready for the tasks of this DAG run", ref.describe())
        publish_links(context["ti"], typed.dashboard_url)
        return ref.to_dict()

    def _sweep_finished_runs(self, hook: RayClusterHook, owner: DagRunOwner, namespace: str, context: Context) -> None:
        """Delete the clusters of finished runs of this DAG whose teardown never ran to its end. Best
        effort: a failure is logged and never fails the task."""
        run_state = getattr(context["ti"], "get_dagrun_state", None)
        if run_state is None:
            return

        async def sweep(session: RaySession) -> None:
            kube = await session.kube()
            family = await kube.list_clusters(namespace, owner.family_selector())
            for orphan in run_orphans(family, lambda dag_id, run_id: run_state(dag_id, run_id), owner.key):
                ref = ClusterRef(TransientRayClusterBackend.name, orphan.name, namespace, owned=True)
                backend = backend_for(ref)
                assert isinstance(backend, RayClusterBackend)
                if await backend.delete_if_ours(kube, ref, orphan.owner_key, self.log):
                    self.log.warning("Deleted %s, left behind by an earlier run: %s", ref.describe(), orphan.reason)

        try:
            hook.run(sweep)
        except Exception as exc:
            self.log.warning("Could not check for RayClusters left by earlier runs of this DAG: %s", exc)


class RayDeleteClusterOperator(BaseOperator):
    """Delete the DAG run's cluster (the teardown of a :class:`RayCreateClusterOperator`).

    :param cluster: ``create.output`` (templated).
    :param ray_conn_id: ``flyray`` connection.
    """

    template_fields: Sequence[str] = ("cluster",)
    ui_color = "#cfe0ff"

    def __init__(self, *, cluster: Any, ray_conn_id: str = RayClusterHook.default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cluster = cluster
        self.ray_conn_id = ray_conn_id

    def execute(self, context: Context) -> None:
        if self.cluster is None:  # its setup pushed nothing (it failed, and deleted what it made)
            self.log.info("No Ray cluster to delete")
            return
        ref = shared_cluster(self.cluster, cluster_name=None, address=None)
        assert ref is not None
        if not ref.owned or OWNER_KEY_EXTRA not in ref.extra:
            raise ConfigError("cluster", "expected the output of a RayCreateClusterOperator (cluster=create.output)")
        if not _delete(RayClusterHook(self.ray_conn_id, namespace=ref.namespace), ref, self.log):
            self.log.info("%s was already gone", ref.describe())


def _delete(hook: RayClusterHook, ref: ClusterRef, log: Any) -> bool:
    owner_key = ref.extra.get(OWNER_KEY_EXTRA)
    deleted = hook.run(
        lambda session: backend_for(ref).release(
            session, ref, action=OnFinishAction.DELETE_CLUSTER, ending=Ending.SUCCEEDED, owner_key=owner_key, log=log
        )
    )
    if deleted:
        log.info("Deleted %s", ref.describe())
    return bool(deleted)


@contextlib.contextmanager
def ray_cluster_for_run(
    task_id: str = "ray_cluster", *, delete_task_id: str | None = None, **create_kwargs: Any
) -> Iterator[XComArg]:
    """A Ray cluster for the tasks defined in the block: its setup, and its teardown after them.

    ``with ray_cluster_for_run(ray_job_config=CONFIG) as cluster: FlyteRayOperator(..., cluster=cluster)``
    """
    create = RayCreateClusterOperator(task_id=task_id, **create_kwargs)
    delete = RayDeleteClusterOperator(
        task_id=delete_task_id or f"delete_{task_id}", cluster=create.output, ray_conn_id=create.ray_conn_id
    )
    dag = create.dag if create.has_dag() else None
    before = set(dag.task_dict) if dag is not None else set()
    with delete.as_teardown(setups=create):
        yield create.output
    if dag is not None:
        _wire_block(
            create, delete, [t for i, t in dag.task_dict.items() if i not in before and t not in (create, delete)]
        )


def _wire_block(create: Any, delete: Any, block: list[Any]) -> None:
    """Setup before the block's first tasks, teardown after its last ones. Airflow's setup/teardown
    context does this for plain operators but not for mapped ones (``.partial().expand()``), whose
    teardown would otherwise run as soon as the cluster is ready and delete it under their jobs."""
    ids = {t.task_id for t in block}
    for task in block:
        if not task.upstream_task_ids & ids and create.task_id not in task.upstream_task_ids:
            create >> task
        if not task.downstream_task_ids & ids and delete.task_id not in task.downstream_task_ids:
            task >> delete
