"""FlyteRayOperator: run one Ray job on a transient KubeRay cluster (or an existing one, or locally).

The worker validates everything, gets the cluster from the backend that serves the request, publishes
the UI links and defers; :class:`~airflow_provider_flyray.triggers.ray_job.RayJobTrigger` waits for the
cluster, submits the job once, streams its logs and reports; ``execute_complete`` records the result and
applies the cluster policy. With ``deferrable=False`` the same trigger code runs on the worker.

The steps are public methods, in the order ``execute`` calls them, so a subclass or a decorator
replaces one of them: :meth:`~FlyteRayOperator.build_submission` (what to run),
:meth:`~FlyteRayOperator.cluster_request` and :meth:`~FlyteRayOperator.acquire_cluster` (where),
:meth:`~FlyteRayOperator.build_trigger` (how to wait), :meth:`~FlyteRayOperator.process_result` (what
the task returns), :meth:`~FlyteRayOperator.release_cluster` (cleanup).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowTaskTimeout, BaseOperator, conf

from airflow_provider_flyray import backends
from airflow_provider_flyray.backends import ClusterBackend, ClusterRequest, backend_for
from airflow_provider_flyray.cluster import ClusterRef
from airflow_provider_flyray.config import RayJobConfig, ray_job_config_from
from airflow_provider_flyray.connection import ConnectionSettings, check_namespace
from airflow_provider_flyray.errors import ConfigError
from airflow_provider_flyray.events import Outcome, RayJobEvent
from airflow_provider_flyray.hooks.ray_cluster import RayClusterHook
from airflow_provider_flyray.jobs_api import JobSubmission
from airflow_provider_flyray.links.ray import RayDashboardLink, RayJobLink, publish_links
from airflow_provider_flyray.naming import TaskIdentity, job_metadata_for, submission_id_for
from airflow_provider_flyray.operators import shipping, worker_wait
from airflow_provider_flyray.operators.arguments import (
    Lifecycle,
    check_rendered_names,
    check_static_arguments,
    existing_address,
    pool_request,
    rendered_metadata,
    rendered_runtime_env,
    resolve_lifecycle,
    seconds_of,
    shared_cluster,
    worker_deadline,
)
from airflow_provider_flyray.operators.rayjob_mode import rayjob_request
from airflow_provider_flyray.owners import Ending, Owner, TaskInstanceOwner, should_delete
from airflow_provider_flyray.reuse import ReusePolicy, reuse_policy_from
from airflow_provider_flyray.timings import Timings
from airflow_provider_flyray.triggers.ray_job import DEFAULT_DASHBOARD_UNREACHABLE_TIMEOUT, RayJobTrigger

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

__all__ = ["FlyteRayOperator", "Lifecycle", "resolve_lifecycle"]

DEFAULT_POLL_INTERVAL = 5.0
DEFAULT_STARTUP_TIMEOUT = 600.0
# See RayJobTrigger.run: the shortest time between deferring and the trigger's event.
DEFAULT_MIN_DEFERRAL_SECONDS = 8.0


class FlyteRayOperator(BaseOperator):
    """Run a Ray job through the Ray Jobs API on a Ray cluster this task creates, finds or is given.

    Modes: ``address=`` (an existing Ray dashboard); ``cluster_name=`` (an existing RayCluster, never
    created or deleted); the connection's ``local`` backend (a Ray head on this machine); ``reuse=`` (a
    pool); ``kuberay_resource="RayJob"`` (KubeRay owns the cluster); else a RayCluster per task try.

    :param entrypoint: shell command of the Ray job (templated).
    :param ray_job_config: :class:`~airflow_provider_flyray.config.RayJobConfig` (or a dict of its fields).
    :param ray_conn_id: ``flyray`` connection.
    :param namespace: Kubernetes namespace (templated; default: the connection's).
    :param cluster_name: use this existing RayCluster (templated).
    :param address: use this existing Ray dashboard URL (templated). Same as ``RayJobConfig.address``.
    :param cluster: the DAG run's cluster, ``create.output`` of a
        :class:`~airflow_provider_flyray.operators.ray_cluster.RayCreateClusterOperator` (templated).
    :param reuse: :class:`~airflow_provider_flyray.reuse.ReusePolicy`: share a pool's cluster with the
        tasks of the same config (this DAG run's, or all runs'), deleted after ``idle_ttl`` unused.
    :param kuberay_resource: ``"RayCluster"`` (default: the connection's) or ``"RayJob"``: KubeRay owns
        the cluster's lifecycle (see :mod:`airflow_provider_flyray.rayjob`).
    :param submission_mode: RayJob mode's ``submissionMode`` (default ``"InteractiveMode"``).
    :param runtime_env: Ray runtime_env (templated); alternative to ``RayJobConfig.runtime_env``.
    :param entrypoint_num_cpus: CPUs reserved for the entrypoint (driver) process.
    :param entrypoint_num_gpus: GPUs reserved for the entrypoint.
    :param entrypoint_memory: memory in bytes reserved for the entrypoint.
    :param entrypoint_resources: custom Ray resources for the entrypoint.
    :param metadata: Ray job metadata, strings only (templated).
    :param wait_for_completion: False submits and succeeds at once (needs a cluster that outlives the task).
    :param deferrable: wait in the triggerer (default ``[operators] default_deferrable``).
    :param poll_interval: seconds between job status checks (default ``[flyray] poll_interval``, 5).
    :param startup_timeout: seconds for the cluster to become ready (default ``[flyray] startup_timeout``, 600).
    :param on_finish_action: ``delete_cluster`` (default), ``keep_cluster`` or ``delete_succeeded_cluster``.
    :param get_logs: stream the job's logs into the task log.
    :param dashboard_unreachable_timeout: seconds the Ray dashboard may stay unreachable during the job
        (retried meanwhile) before the task fails (default 120).
    """

    template_fields: Sequence[str] = (
        "entrypoint",
        "runtime_env",
        "metadata",
        "cluster_name",
        "namespace",
        "address",
        "cluster",
    )
    template_fields_renderers = {"runtime_env": "json", "metadata": "json"}
    operator_extra_links = (RayDashboardLink(), RayJobLink())
    ui_color = "#e6f0ff"

    def __init__(
        self,
        *,
        entrypoint: str,
        ray_job_config: RayJobConfig | dict[str, Any] | None = None,
        ray_conn_id: str = RayClusterHook.default_conn_name,
        namespace: str | None = None,
        cluster_name: str | None = None,
        address: str | None = None,
        cluster: Any = None,
        reuse: ReusePolicy | dict[str, Any] | None = None,
        kuberay_resource: str | None = None,
        submission_mode: str | None = None,
        runtime_env: dict[str, Any] | None = None,
        entrypoint_num_cpus: float | None = None,
        entrypoint_num_gpus: float | None = None,
        entrypoint_memory: int | None = None,
        entrypoint_resources: dict[str, float] | None = None,
        metadata: dict[str, str] | None = None,
        wait_for_completion: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float | None = None,
        startup_timeout: float | None = None,
        on_finish_action: str | None = None,
        get_logs: bool = True,
        dashboard_unreachable_timeout: float = DEFAULT_DASHBOARD_UNREACHABLE_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Templated fields: assigned verbatim, checked after rendering (in execute).
        self.entrypoint = entrypoint
        self.runtime_env = runtime_env
        self.metadata = metadata
        self.cluster_name = cluster_name
        self.namespace = namespace
        self.address = address
        self.cluster = cluster
        # Everything else is checked now, so a bad DAG fails at parse time with the field's name.
        self.ray_job_config = ray_job_config_from(ray_job_config)
        self.reuse = reuse_policy_from(reuse)
        self.kuberay_resource, self.submission_mode = kuberay_resource, submission_mode
        self.ray_conn_id = ray_conn_id
        self.entrypoint_num_cpus = entrypoint_num_cpus
        self.entrypoint_num_gpus = entrypoint_num_gpus
        self.entrypoint_memory = entrypoint_memory
        self.entrypoint_resources = entrypoint_resources
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = (
            poll_interval
            if poll_interval is not None
            else conf.getfloat("flyray", "poll_interval", fallback=DEFAULT_POLL_INTERVAL)
        )
        self.startup_timeout = (
            startup_timeout
            if startup_timeout is not None
            else conf.getfloat("flyray", "startup_timeout", fallback=DEFAULT_STARTUP_TIMEOUT)
        )
        self.on_finish_action = on_finish_action
        self.get_logs = get_logs
        self.dashboard_unreachable_timeout = dashboard_unreachable_timeout
        self._check_static_arguments()
        # What on_kill must stop and release, while this worker holds them.
        self._ref: ClusterRef | None = None
        self._submission_id: str | None = None

    # ---- validation ---------------------------------------------------------------------------------

    def _check_static_arguments(self) -> None:
        check_static_arguments(self)
        self.lifecycle = resolve_lifecycle(self.on_finish_action, self.ray_job_config)

    def _check_rendered_names(self) -> None:
        check_rendered_names(cluster_name=self.cluster_name, namespace=self.namespace, address=self.address)

    # ---- the steps, in the order execute() runs them --------------------------------------------------

    def cluster_owner(self, context: Context) -> Owner:
        """Who the cluster is for: this task instance (a retry adopts its earlier try's cluster)."""
        return TaskInstanceOwner(TaskIdentity.from_ti(context["ti"]))

    def build_submission(self, context: Context) -> JobSubmission:
        """The Ray job to submit: entrypoint, runtime_env, metadata and entrypoint resources, with this
        try's deterministic submission id."""
        if not isinstance(self.entrypoint, str) or not self.entrypoint.strip():
            raise ConfigError("entrypoint", "rendered to an empty command")
        identity = TaskIdentity.from_ti(context["ti"])
        return JobSubmission(
            submission_id=submission_id_for(identity),
            entrypoint=self.entrypoint,
            runtime_env=rendered_runtime_env(self.runtime_env, self.ray_job_config),
            metadata={**rendered_metadata(self.metadata), **job_metadata_for(identity)},
            entrypoint_num_cpus=self.entrypoint_num_cpus,
            entrypoint_num_gpus=self.entrypoint_num_gpus,
            entrypoint_memory=self.entrypoint_memory,
            entrypoint_resources=dict(self.entrypoint_resources) if self.entrypoint_resources else None,
        )

    def cluster_request(
        self, context: Context, settings: ConnectionSettings, submission: JobSubmission | None = None
    ) -> ClusterRequest:
        """Which cluster the job needs, for :func:`airflow_provider_flyray.backends.select`."""
        address = existing_address(self.address, self.ray_job_config, self.cluster_name)
        namespace = check_namespace(self.namespace, "namespace") if self.namespace else settings.namespace
        shared = shared_cluster(self.cluster, cluster_name=self.cluster_name, address=address)
        reuse = pool_request(self.reuse, settings, self, shared=shared, address=address)
        identity, deadline = TaskIdentity.from_ti(context["ti"]), self._execution_deadline(context)
        rayjob = rayjob_request(self, identity, settings, submission, deadline)
        if (
            address is None
            and shared is None
            and reuse is None
            and rayjob is None
            and not self.cluster_name
            and not self.wait_for_completion
            and should_delete(self.lifecycle.on_finish_action, Ending.SUCCEEDED)
        ):
            raise ConfigError(
                "wait_for_completion",
                "False with a transient cluster would delete the cluster under the job; "
                "set on_finish_action='keep_cluster' or use cluster_name/address",
            )
        return ClusterRequest(
            owner=self.cluster_owner(context),
            settings=settings,
            namespace=namespace,
            config=self.ray_job_config,
            on_finish_action=self.lifecycle.on_finish_action,
            cluster_name=self.cluster_name or None,
            address=address,
            task_states=getattr(context["ti"], "get_task_states", None),
            cluster=shared,
            reuse=reuse,
            rayjob=rayjob,
        )

    def acquire_cluster(self, hook: RayClusterHook, backend: ClusterBackend, request: ClusterRequest) -> ClusterRef:
        """Create, adopt or find the cluster (the wait for it happens in the trigger)."""
        return hook.run(lambda session: backend.acquire(session, request, self.log))

    def build_trigger(
        self, context: Context, ref: ClusterRef, submission: JobSubmission, owner: Owner, timings: Timings
    ) -> RayJobTrigger:
        """The trigger that waits for the cluster and the job; its kwargs hold no secrets."""
        timings.mark("deferred")
        return RayJobTrigger(
            ray_conn_id=self.ray_conn_id,
            cluster=ref.to_dict(),
            submission=submission.to_dict(),
            owner_key=owner.key,
            poll_interval=self.poll_interval,
            startup_deadline=time.time() + float(self.startup_timeout),
            deadline=self._execution_deadline(context)
            if self.deferrable and self.wait_for_completion
            else worker_deadline(self._execution_deadline(context), seconds_of(self.execution_timeout)),
            get_logs=self.get_logs,
            on_finish_action=self.lifecycle.on_finish_action.value,
            keep_alive_seconds=self.lifecycle.keep_alive_seconds,
            submit_only=not self.wait_for_completion,
            dashboard_unreachable_timeout=float(self.dashboard_unreachable_timeout),
            timings=timings.to_dict(),
            earliest_event=(
                time.time() + conf.getfloat("flyray", "min_deferral_seconds", fallback=DEFAULT_MIN_DEFERRAL_SECONDS)
                if self.deferrable and self.wait_for_completion
                else None
            ),
        )

    def process_result(self, context: Context, event: RayJobEvent) -> Any:
        """The task's return value (its XCom) for a job that succeeded; raise for one that did not."""
        ref = event.cluster
        if event.status.succeeded:
            self.log.info("Ray job %s %s", event.submission_id, event.job_status or event.status.value)
            return {
                "job_id": event.submission_id,
                "status": event.job_status,
                "cluster_name": ref.name,
                "namespace": ref.namespace,
                "dashboard_url": event.dashboard_url,
            }
        message = event.reason or f"Ray job {event.submission_id} ended with {event.status.value}"
        if event.log_tail:
            message += f"\n--- last {len(event.log_tail)} lines of the Ray job's log ---\n" + "\n".join(event.log_tail)
        if event.status.value == "timeout":
            raise AirflowTaskTimeout(f"timeout: {message}")
        raise AirflowException(message)

    def release_cluster(self, hook: RayClusterHook, ref: ClusterRef, ending: Ending, owner_key: str | None) -> None:
        """Apply ``on_finish_action`` (see :func:`airflow_provider_flyray.owners.should_delete`)."""
        action = self.lifecycle.on_finish_action
        try:
            released = hook.run(
                lambda session: backend_for(ref).release(
                    session, ref, action=action, ending=ending, owner_key=owner_key, log=self.log
                )
            )
            if released:
                self.log.info("Released %s", ref.describe())
        except Exception:
            self.log.exception("Could not delete %s: delete it by hand", ref.describe())
            raise

    # ---- execute ------------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        timings = Timings()
        timings.mark("execute_started")
        # All validation first: nothing is created if any input is wrong.
        self._check_rendered_names()
        # Local code is checked and hashed here, whatever build_submission (or an override) put in runtime_env.
        submission = shipping.localize(self, self.build_submission(context))
        existing_address(self.address, self.ray_job_config, self.cluster_name)
        hook = RayClusterHook(self.ray_conn_id, namespace=self.namespace or None)
        request = self.cluster_request(context, hook.validate(), submission)
        backend = backends.select(request)
        ref = self.acquire_cluster(hook, backend, request)
        submission = backend.submission_for(ref, submission)
        self._ref, self._submission_id = ref, submission.submission_id
        try:
            publish_links(context["ti"], backend.browser_url(request.settings, ref, None), submission.submission_id)
            submission = shipping.ship_before_deferral(self, hook, backend, ref, submission)
            trigger = self.build_trigger(context, ref, submission, request.owner, timings)
        except BaseException:
            self.release_cluster(hook, ref, Ending.FAILED, request.owner.key)
            raise
        if self.deferrable and self.wait_for_completion:
            self.log.info("Deferring after %.2fs on the worker", timings.since("execute_started"))
            self.defer(trigger=trigger, method_name="execute_complete")
        return self.execute_complete(context, self._wait_on_worker(trigger))

    def _wait_on_worker(self, trigger: RayJobTrigger) -> dict[str, Any]:
        return worker_wait.wait_on_worker(trigger, self.log)

    def _execution_deadline(self, context: Context) -> float | None:
        if not self.execution_timeout:
            return None
        start = getattr(context["ti"], "start_date", None)
        return (start.timestamp() if start else time.time()) + seconds_of(self.execution_timeout)

    # ---- resume -------------------------------------------------------------------------------------

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None, **_: Any) -> Any:
        if not event:
            raise AirflowException("RayJobTrigger returned no event")
        typed = RayJobEvent.from_dict(event)
        if typed.status is Outcome.PACKAGES_MISSING:  # not an end: upload, wait again (operators/shipping.py)
            return shipping.resume_after_upload(self, context, typed)
        timings = Timings(typed.timings)
        timings.mark("resumed")
        try:
            return self._complete(context, typed)
        finally:
            timings.mark("finished")
            self.log.info("Finished on the worker after %.2fs", timings.since("resumed"))
            # One machine-readable line: where the time went (benchmarks/e2e_figures.py reads it).
            self.log.info(timings.log_line(typed.start_time, typed.end_time))

    def _complete(self, context: Context, event: RayJobEvent) -> Any:
        ref = event.cluster
        if event.submission_id:
            publish_links(context["ti"], event.dashboard_url, event.submission_id)
        # The trigger already stopped whatever needed stopping: a later worker on_kill (Airflow calls it
        # on AirflowTaskTimeout) has nothing left to do.
        self._ref, self._submission_id = ref, None
        if event.status.value != "submitted":
            hook = RayClusterHook(self.ray_conn_id, namespace=ref.namespace)
            ending = Ending.SUCCEEDED if event.status.succeeded else Ending.FAILED
            self.release_cluster(hook, ref, ending, self.cluster_owner(context).key)
        self._ref = None
        return self.process_result(context, event)

    def on_kill(self) -> None:
        """Worker killed (non-deferrable wait, or before deferral): stop the job, apply the policy."""
        ref, submission_id = self._ref, self._submission_id
        if ref is None:
            return
        hook = RayClusterHook(self.ray_conn_id, namespace=ref.namespace)
        if submission_id:
            try:
                hook.stop_job(ref, submission_id)
            except Exception as exc:
                self.log.warning("Could not stop Ray job %s: %s", submission_id, exc)
        try:
            self.release_cluster(hook, ref, Ending.KILLED, None)
        except Exception as exc:
            self.log.warning("Could not delete %s: %s", ref.describe(), exc)
