"""FlyteRayOperator: run one Ray job on a transient KubeRay cluster (or an existing one, or locally).

The worker validates everything, creates (or finds) the cluster, publishes the UI links and defers;
:class:`~airflow_provider_flyray.triggers.ray_job.RayJobTrigger` waits for the cluster, submits the job
once, streams its logs and reports; ``execute_complete`` records the result and applies the cluster
policy. With ``deferrable=False`` the same trigger code runs on the worker.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowTaskTimeout, BaseOperator, conf

from airflow_provider_flyray.cluster import Backend, ClusterRef
from airflow_provider_flyray.config import (
    OnFinishAction,
    RayJobConfig,
    cpu_quantity,
    ray_job_config_from,
    validate_runtime_env,
)
from airflow_provider_flyray.connection import (
    ConnectionSettings,
    browser_dashboard_url,
    check_http_url,
    check_namespace,
)
from airflow_provider_flyray.errors import ConfigError
from airflow_provider_flyray.hooks.ray_cluster import RayClusterHook
from airflow_provider_flyray.jobs_api import JobSubmission
from airflow_provider_flyray.links.ray import RayDashboardLink, RayJobLink, is_browser_url, job_url
from airflow_provider_flyray.manifest import head_service_name, task_cluster_manifest
from airflow_provider_flyray.naming import (
    OWNER_ANNOTATION,
    TaskIdentity,
    check_cluster_name,
    cluster_name_for,
    job_metadata_for,
    submission_id_for,
    task_family_selector,
)
from airflow_provider_flyray.orphans import earlier_owners, find_orphans
from airflow_provider_flyray.triggers.ray_job import DEFAULT_DASHBOARD_UNREACHABLE_TIMEOUT, RayJobTrigger

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

DEFAULT_POLL_INTERVAL = 5.0
DEFAULT_STARTUP_TIMEOUT = 600.0
# See RayJobTrigger.run: the shortest time between deferring and the trigger's event.
DEFAULT_MIN_DEFERRAL_SECONDS = 8.0


@dataclass(frozen=True)
class Lifecycle:
    """What happens to an owned cluster at the end, resolved from the operator and the Flyte fields."""

    on_finish_action: OnFinishAction
    keep_alive_seconds: int | None = None


def resolve_lifecycle(explicit: str | OnFinishAction | None, config: RayJobConfig) -> Lifecycle:
    """Map Flyte's ``shutdown_after_job_finishes``/``ttl_seconds_after_finished`` onto ``on_finish_action``."""
    action = OnFinishAction.parse(explicit) if explicit is not None else None
    if config.shutdown_after_job_finishes is False:
        if action not in (None, OnFinishAction.KEEP_CLUSTER):
            raise ConfigError(
                "on_finish_action",
                f"{action.value if action else ''!r} contradicts shutdown_after_job_finishes=False (keep the cluster)",
            )
        return Lifecycle(OnFinishAction.KEEP_CLUSTER)
    if config.shutdown_after_job_finishes is True and action is OnFinishAction.KEEP_CLUSTER:
        raise ConfigError(
            "on_finish_action", "'keep_cluster' contradicts ray_job_config.shutdown_after_job_finishes=True"
        )
    if config.ttl_seconds_after_finished is not None:
        if action is OnFinishAction.KEEP_CLUSTER:
            raise ConfigError(
                "on_finish_action", "'keep_cluster' contradicts ray_job_config.ttl_seconds_after_finished"
            )
        return Lifecycle(action or OnFinishAction.DELETE_CLUSTER, config.ttl_seconds_after_finished)
    return Lifecycle(action or OnFinishAction.DELETE_CLUSTER)


def _check_number(name: str, value: Any, *, whole: bool = False) -> None:
    if value is None:
        return
    kinds = (int,) if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < 0:
        raise ConfigError(name, f"expected a {'whole ' if whole else ''}number >= 0, got {value!r}")


def _check_seconds(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(name, f"expected seconds > 0, got {value!r}")


class FlyteRayOperator(BaseOperator):
    """Run a Ray job through the Ray Jobs API on a Ray cluster this task creates, finds or is given.

    Modes, in order of precedence: ``address=`` (an existing Ray dashboard, no Kubernetes);
    ``cluster_name=`` (an existing RayCluster: never created or deleted); the connection's ``local``
    backend (a Ray head started on this machine for the task); otherwise a transient RayCluster per task
    try, built from ``ray_job_config``.

    :param entrypoint: shell command of the Ray job (templated).
    :param ray_job_config: :class:`~airflow_provider_flyray.config.RayJobConfig` (or a dict of its fields).
    :param ray_conn_id: ``flyray`` connection.
    :param namespace: Kubernetes namespace (templated; default: the connection's).
    :param cluster_name: use this existing RayCluster (templated).
    :param address: use this existing Ray dashboard URL (templated). Same as ``RayJobConfig.address``.
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

    template_fields: Sequence[str] = ("entrypoint", "runtime_env", "metadata", "cluster_name", "namespace", "address")
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
        # Everything else is checked now, so a bad DAG fails at parse time with the field's name.
        self.ray_job_config = ray_job_config_from(ray_job_config)
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
        self._ref: ClusterRef | None = None
        self._submission_id: str | None = None

    # ---- validation ---------------------------------------------------------------------------------

    def _check_static_arguments(self) -> None:
        if not isinstance(self.entrypoint, str) or not self.entrypoint.strip():
            raise ConfigError("entrypoint", "expected a non-empty shell command, e.g. 'python train.py'")
        for name in ("entrypoint_num_cpus", "entrypoint_num_gpus"):
            _check_number(name, getattr(self, name))
        _check_number("entrypoint_memory", self.entrypoint_memory, whole=True)
        if self.entrypoint_resources is not None:
            if not isinstance(self.entrypoint_resources, Mapping):
                raise ConfigError("entrypoint_resources", "expected a dict of resource name to amount")
            for key, amount in self.entrypoint_resources.items():
                _check_number(f"entrypoint_resources[{key!r}]", amount)
        for name in ("poll_interval", "startup_timeout", "dashboard_unreachable_timeout"):
            _check_seconds(name, getattr(self, name))
        if not isinstance(self.ray_conn_id, str) or not self.ray_conn_id:
            raise ConfigError("ray_conn_id", "expected a connection id")
        self.lifecycle = resolve_lifecycle(self.on_finish_action, self.ray_job_config)
        if not isinstance(self.wait_for_completion, bool):
            raise ConfigError("wait_for_completion", "expected True or False")

    def _check_rendered_names(self) -> None:
        """``None`` means unset; a value that rendered empty is an error, never a silent fallback (an
        empty ``cluster_name`` or ``address`` would otherwise create a transient cluster instead)."""
        for name in ("cluster_name", "namespace", "address"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(name, f"rendered to {value!r}; give a value or leave it unset (None)")
        if self.cluster_name is not None:
            check_cluster_name(self.cluster_name)

    def _rendered_runtime_env(self) -> dict[str, Any] | None:
        own = validate_runtime_env(self.runtime_env, "runtime_env")
        from_config = self.ray_job_config.runtime_env
        if isinstance(from_config, str):
            raise ConfigError(
                "ray_job_config.runtime_env", "expected a dict (templates belong in the operator's runtime_env)"
            )
        if own is not None and from_config is not None:
            raise ConfigError("runtime_env", "set on both the operator and ray_job_config; keep one of them")
        return own if own is not None else from_config

    def _rendered_metadata(self) -> dict[str, str]:
        if self.metadata is None:
            return {}
        if not isinstance(self.metadata, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.metadata.items()
        ):
            raise ConfigError("metadata", "expected a dict of string to string")
        reserved = sorted(k for k in self.metadata if k.startswith("airflow_"))
        if reserved:
            raise ConfigError("metadata", f"keys starting with 'airflow_' are reserved: {reserved}")
        return dict(self.metadata)

    def _existing_address(self) -> str | None:
        own, from_config = self.address or None, self.ray_job_config.address
        if own and from_config and own.rstrip("/") != from_config.rstrip("/"):
            raise ConfigError("address", f"{own!r} differs from ray_job_config.address {from_config!r}; set one")
        address = own or from_config
        if address is None:
            return None
        if self.cluster_name:
            raise ConfigError("cluster_name", "set either cluster_name (a KubeRay cluster) or address, not both")
        return check_http_url(address, "address")

    def _submission_for(self, identity: TaskIdentity) -> JobSubmission:
        if not isinstance(self.entrypoint, str) or not self.entrypoint.strip():
            raise ConfigError("entrypoint", "rendered to an empty command")
        return JobSubmission(
            submission_id=submission_id_for(identity),
            entrypoint=self.entrypoint,
            runtime_env=self._rendered_runtime_env(),
            metadata={**self._rendered_metadata(), **job_metadata_for(identity)},
            entrypoint_num_cpus=self.entrypoint_num_cpus,
            entrypoint_num_gpus=self.entrypoint_num_gpus,
            entrypoint_memory=self.entrypoint_memory,
            entrypoint_resources=dict(self.entrypoint_resources) if self.entrypoint_resources else None,
        )

    # ---- execute ------------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        self._worker_started = time.monotonic()
        execute_started = time.time()
        identity = TaskIdentity.from_ti(context["ti"])
        # All validation first: nothing is created if any input is wrong.
        self._check_rendered_names()
        submission = self._submission_for(identity)
        address = self._existing_address()
        hook = RayClusterHook(self.ray_conn_id, namespace=self.namespace or None)
        settings = hook.validate()
        namespace = check_namespace(self.namespace, "namespace") if self.namespace else settings.namespace
        if (
            address is None
            and not self.cluster_name
            and not self.wait_for_completion
            and (self.lifecycle.on_finish_action is not OnFinishAction.KEEP_CLUSTER)
        ):
            raise ConfigError(
                "wait_for_completion",
                "False with a transient cluster would delete the cluster under the job; "
                "set on_finish_action='keep_cluster' or use cluster_name/address",
            )

        ref = self._acquire_cluster(hook, settings, identity, namespace, address, context["ti"])
        self._ref = ref
        self._submission_id = submission.submission_id
        try:
            self._publish_links(context, self._known_dashboard_url(settings, ref), submission.submission_id)
            trigger = RayJobTrigger(
                ray_conn_id=self.ray_conn_id,
                cluster=ref.to_dict(),
                submission=submission.to_dict(),
                owner_key=identity.task_key,
                poll_interval=self.poll_interval,
                startup_deadline=time.time() + float(self.startup_timeout),
                deadline=self._execution_deadline(context),
                get_logs=self.get_logs,
                on_finish_action=self.lifecycle.on_finish_action.value,
                keep_alive_seconds=self.lifecycle.keep_alive_seconds,
                submit_only=not self.wait_for_completion,
                dashboard_unreachable_timeout=float(self.dashboard_unreachable_timeout),
                timings={"execute_started": execute_started, "deferred": time.time()},
                earliest_event=(
                    time.time() + conf.getfloat("flyray", "min_deferral_seconds", fallback=DEFAULT_MIN_DEFERRAL_SECONDS)
                    if self.deferrable and self.wait_for_completion
                    else None
                ),
            )
        except BaseException:
            self._release_cluster(hook, ref, succeeded=False, owner_key=identity.task_key)
            raise
        if self.deferrable and self.wait_for_completion:
            self.log.info("Deferring after %.2fs on the worker", time.monotonic() - self._worker_started)
            self.defer(trigger=trigger, method_name="execute_complete")
        event = asyncio.run(_first_event(trigger))
        return self.execute_complete(context, event)

    def _acquire_cluster(
        self,
        hook: RayClusterHook,
        settings: ConnectionSettings,
        identity: TaskIdentity,
        namespace: str,
        address: str | None,
        ti: Any,
    ) -> ClusterRef:
        if address:
            return ClusterRef(Backend.ADDRESS, name="address", address=address)
        if self.cluster_name:
            if settings.backend is Backend.LOCAL:
                raise ConfigError(
                    "cluster_name", "the connection uses the local backend, which has no existing clusters"
                )
            if hook.get_cluster(self.cluster_name, namespace) is None:
                raise ConfigError("cluster_name", f"RayCluster {namespace}/{self.cluster_name} does not exist")
            return ClusterRef(Backend.KUBERNETES, name=self.cluster_name, namespace=namespace, owned=False)
        name = cluster_name_for(identity)
        if settings.backend is Backend.LOCAL:
            from airflow_provider_flyray.hooks.local_ray import start_local_cluster

            head = self.ray_job_config.head_node_config
            params = (head.ray_start_params if head else None) or {}
            cpus = params.get("num-cpus") or (head.requests or {}).get("cpu") if head else None
            ref = start_local_cluster(
                name,
                num_cpus=cpu_quantity(cpus) if cpus else None,
                num_gpus=float(params["num-gpus"]) if "num-gpus" in params else None,
                object_store_memory=int(params["object-store-memory"]) if "object-store-memory" in params else None,
            )
            self.log.info("Started %s (process group %s)", ref.describe(), ref.local_pgid)
            return ref
        # One list of this task's clusters, all runs: a retry after a lost worker adopts the live cluster
        # of an earlier try instead of making another; clusters orphaned by earlier runs are deleted.
        family = hook.list_clusters(namespace, task_family_selector(identity))
        for cluster in family:
            meta = cluster.get("metadata") or {}
            if (
                meta.get("deletionTimestamp")
                or (meta.get("annotations") or {}).get(OWNER_ANNOTATION) != identity.task_key
            ):
                continue
            self.log.info("Reattaching to RayCluster %s/%s of an earlier try", namespace, meta["name"])
            return ClusterRef(Backend.KUBERNETES, name=meta["name"], namespace=namespace, owned=True)
        self._sweep_orphans(hook, ti, identity, namespace, family)
        manifest = task_cluster_manifest(
            self.ray_job_config, identity, namespace, on_finish_action=self.lifecycle.on_finish_action.value
        )
        _, created = hook.create_or_adopt_cluster(manifest, identity.task_key)
        self.log.info("%s RayCluster %s/%s", "Created" if created else "Found this try's", namespace, name)
        return ClusterRef(Backend.KUBERNETES, name=name, namespace=namespace, owned=True)

    def _sweep_orphans(
        self, hook: RayClusterHook, ti: Any, identity: TaskIdentity, namespace: str, clusters: list[dict[str, Any]]
    ) -> None:
        """Delete the clusters of earlier runs of this task whose worker was killed with no retry left.

        Best effort: a failure here is logged and never fails the task.
        """
        get_task_states = getattr(ti, "get_task_states", None)
        if get_task_states is None:  # an Airflow without the Task SDK call
            return
        try:
            owners = earlier_owners(clusters, identity.task_key)
            if not owners:
                return
            states = get_task_states(
                dag_id=identity.dag_id, task_ids=[identity.task_id], run_ids=sorted({o.run_id for o in owners})
            )
            for orphan in find_orphans(clusters, states, identity.task_key):
                ref = ClusterRef(Backend.KUBERNETES, name=orphan.name, namespace=namespace, owned=True)
                hook.delete_cluster(ref, orphan.owner_key)
                self.log.warning("Deleted %s, left behind by an earlier run: %s", ref.describe(), orphan.reason)
        except Exception as exc:
            self.log.warning("Could not check for RayClusters left by earlier runs of this task: %s", exc)

    def _known_dashboard_url(self, settings: ConnectionSettings, ref: ClusterRef) -> str | None:
        if ref.backend is not Backend.KUBERNETES:
            return ref.address
        return browser_dashboard_url(
            settings, namespace=ref.namespace, cluster=ref.name, service=head_service_name(ref.name), direct_url=None
        )

    def _publish_links(self, context: Context, dashboard_url: str | None, submission_id: str) -> None:
        if not is_browser_url(dashboard_url):
            return
        assert dashboard_url is not None
        ti = context["ti"]
        ti.xcom_push(key=RayDashboardLink().xcom_key, value=dashboard_url)
        ti.xcom_push(key=RayJobLink().xcom_key, value=job_url(dashboard_url, submission_id))

    def _execution_deadline(self, context: Context) -> float | None:
        if not self.execution_timeout:
            return None
        timeout = (
            self.execution_timeout
            if isinstance(self.execution_timeout, timedelta)
            else timedelta(seconds=self.execution_timeout)
        )
        start = getattr(context["ti"], "start_date", None)
        started = start.timestamp() if start else time.time()
        return started + timeout.total_seconds()

    # ---- resume -------------------------------------------------------------------------------------

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None, **_: Any) -> Any:
        started, resumed = time.monotonic(), time.time()
        try:
            return self._complete(context, event)
        finally:
            self.log.info("Finished on the worker after %.2fs", time.monotonic() - started)
            if event:
                # One machine-readable line: where the time went (benchmarks/e2e_figures.py reads it).
                timings = {**event.get("timings", {}), "resumed": resumed, "finished": time.time()}
                for key in ("start_time", "end_time"):
                    if event.get(key):
                        timings[f"job_{key}"] = event[key] / 1000
                self.log.info("flyray timings %s", json.dumps(timings, sort_keys=True))

    def _complete(self, context: Context, event: dict[str, Any] | None) -> Any:
        if not event:
            raise AirflowException("RayJobTrigger returned no event")
        ref = ClusterRef.from_dict(event["cluster"])
        self._ref = ref
        status = event.get("status")
        submission_id = event.get("submission_id")
        self._submission_id = submission_id
        dashboard_url = event.get("dashboard_url")
        if submission_id:
            self._publish_links(context, dashboard_url, submission_id)
        succeeded = status in ("success", "submitted")
        owner_key = TaskIdentity.from_ti(context["ti"]).task_key
        hook = RayClusterHook(self.ray_conn_id, namespace=ref.namespace)
        # The trigger already stopped whatever needed stopping: a later worker on_kill (Airflow calls it
        # on AirflowTaskTimeout) has nothing left to do.
        self._submission_id = None
        if status != "submitted":
            self._release_cluster(hook, ref, succeeded=succeeded, owner_key=owner_key)
        self._ref = None
        if succeeded:
            self.log.info("Ray job %s %s", submission_id, event.get("job_status", status))
            return {
                "job_id": submission_id,
                "status": event.get("job_status"),
                "cluster_name": ref.name,
                "namespace": ref.namespace,
                "dashboard_url": dashboard_url,
            }
        lines = event.get("log_tail") or []
        message = event.get("reason") or f"Ray job {submission_id} ended with {status}"
        if lines:
            message += f"\n--- last {len(lines)} lines of the Ray job's log ---\n" + "\n".join(lines)
        if status == "timeout":
            raise AirflowTaskTimeout(f"timeout: {message}")
        raise AirflowException(message)

    def _release_cluster(self, hook: RayClusterHook, ref: ClusterRef, *, succeeded: bool, owner_key: str) -> None:
        if not ref.owned:
            return
        action = self.lifecycle.on_finish_action
        delete = action is OnFinishAction.DELETE_CLUSTER or (
            action is OnFinishAction.DELETE_SUCCEEDED_CLUSTER and succeeded
        )
        if not delete:
            self.log.info("Keeping %s (on_finish_action=%s)", ref.describe(), action.value)
            return
        try:
            hook.delete_cluster(ref, owner_key)
            self.log.info("Released %s", ref.describe())
        except Exception:
            self.log.exception("Could not delete %s: delete it by hand", ref.describe())
            raise

    def on_kill(self) -> None:
        """Worker killed (non-deferrable wait, or before deferral): stop the job, apply the policy."""
        ref, submission_id = self._ref, self._submission_id
        if ref is None:
            return
        hook = RayClusterHook(self.ray_conn_id, namespace=ref.namespace)
        if submission_id:
            try:
                hook.stop_job(hook.dashboard_endpoint(ref), submission_id)
            except Exception as exc:
                self.log.warning("Could not stop Ray job %s: %s", submission_id, exc)
        if ref.owned and self.lifecycle.on_finish_action is not OnFinishAction.KEEP_CLUSTER:
            try:
                hook.delete_cluster(ref)
            except Exception as exc:
                self.log.warning("Could not delete %s: %s", ref.describe(), exc)


async def _first_event(trigger: RayJobTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return dict(event.payload)
    raise AirflowException("RayJobTrigger ended without an event")
