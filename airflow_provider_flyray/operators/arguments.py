"""The operator's arguments, checked: pure functions that name the field and what is expected."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from airflow_provider_flyray.cluster import ClusterRef
from airflow_provider_flyray.config import OnFinishAction, RayJobConfig, validate_runtime_env
from airflow_provider_flyray.connection import KUBERNETES_BACKEND, ConnectionSettings, check_http_url
from airflow_provider_flyray.errors import ConfigError
from airflow_provider_flyray.naming import check_cluster_name
from airflow_provider_flyray.operators.rayjob_mode import check_rayjob_arguments
from airflow_provider_flyray.reuse import ReusePolicy


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


def check_number(name: str, value: Any, *, whole: bool = False) -> None:
    if value is None:
        return
    kinds = (int,) if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < 0:
        raise ConfigError(name, f"expected a {'whole ' if whole else ''}number >= 0, got {value!r}")


def check_seconds(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(name, f"expected seconds > 0, got {value!r}")


def check_rendered_names(**names: Any) -> None:
    """``None`` means unset; a value that rendered empty is an error, never a silent fallback (an
    empty ``cluster_name`` or ``address`` would otherwise create a transient cluster instead)."""
    for name, value in names.items():
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigError(name, f"rendered to {value!r}; give a value or leave it unset (None)")
    if names.get("cluster_name") is not None:
        check_cluster_name(names["cluster_name"])


def rendered_runtime_env(own: Any, config: RayJobConfig) -> dict[str, Any] | None:
    """The job's runtime_env: the operator's or the config's, never both."""
    checked = validate_runtime_env(own, "runtime_env")
    from_config = config.runtime_env  # checked when the config was built
    if checked is not None and from_config is not None:
        raise ConfigError("runtime_env", "set on both the operator and ray_job_config; keep one of them")
    return checked if checked is not None else from_config


def rendered_metadata(metadata: Any) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise ConfigError("metadata", "expected a dict of string to string")
    reserved = sorted(k for k in metadata if k.startswith("airflow_"))
    if reserved:
        raise ConfigError("metadata", f"keys starting with 'airflow_' are reserved: {reserved}")
    return dict(metadata)


def shared_cluster(value: Any, *, cluster_name: str | None, address: str | None) -> ClusterRef | None:
    """``cluster=``, rendered: the XCom of a RayCreateClusterOperator (a ClusterRef as a dict), or None."""
    if value is None:
        return None
    expected = "the output of a RayCreateClusterOperator (cluster=create.output)"
    if isinstance(value, ClusterRef):
        ref = value
    elif isinstance(value, Mapping) and isinstance(value.get("backend"), str) and isinstance(value.get("name"), str):
        try:
            ref = ClusterRef.from_dict(dict(value))
        except TypeError as exc:
            raise ConfigError("cluster", f"expected {expected}: {exc}") from None
    else:
        raise ConfigError("cluster", f"expected {expected}, got {type(value).__name__} {str(value)[:80]!r}")
    if cluster_name or address:
        raise ConfigError("cluster", "set either cluster (the DAG run's cluster) or cluster_name/address, not both")
    return ref


def pool_request(
    reuse: ReusePolicy | None, settings: ConnectionSettings, op: Any, *, shared: ClusterRef | None, address: str | None
) -> ReusePolicy | None:
    """``reuse=``, checked against the rendered arguments: the pool applies to a cluster this provider
    makes on Kubernetes (the local backend starts a head per task, and says so)."""
    if reuse is None:
        return None
    if shared is not None or address or op.cluster_name:
        given = "cluster" if shared is not None else "address" if address else "cluster_name"
        raise ConfigError("reuse", f"a pool makes its own cluster; remove reuse or {given}")
    if not op.wait_for_completion:
        raise ConfigError("wait_for_completion", "False with reuse: nothing would hold the pool's cluster for the job")
    if settings.backend != KUBERNETES_BACKEND:
        op.log.warning(
            "reuse= is for the Kubernetes backend; the %s backend starts a cluster for this task", settings.backend
        )
        return None
    return reuse


def check_reuse_lifecycle(op: Any) -> None:
    """A pool's cluster is deleted by its idle rule alone (Flyte refuses these with reuse too)."""
    if op.reuse is None:
        return
    config = op.ray_job_config
    for name, value in (
        ("on_finish_action", op.on_finish_action),
        ("ray_job_config.shutdown_after_job_finishes", config.shutdown_after_job_finishes),
        ("ray_job_config.ttl_seconds_after_finished", config.ttl_seconds_after_finished),
    ):
        if value is not None:
            raise ConfigError(name, "cannot be set with reuse: the pool deletes its cluster after reuse.idle_ttl")


def existing_address(own: str | None, config: RayJobConfig, cluster_name: str | None) -> str | None:
    """The Ray address the task names (``address=`` or ``RayJobConfig.address``), or None."""
    own, from_config = own or None, config.address
    if own and from_config and own.rstrip("/") != from_config.rstrip("/"):
        raise ConfigError("address", f"{own!r} differs from ray_job_config.address {from_config!r}; set one")
    address = own or from_config
    if address is None:
        return None
    if cluster_name:
        raise ConfigError("cluster_name", "set either cluster_name (a KubeRay cluster) or address, not both")
    return check_http_url(address, "address")


# deferrable=False: the trigger runs on the worker under Airflow's execution_timeout alarm, which says only
# "Timeout, PID: ...". Its own deadline comes this much earlier (at most a quarter of the timeout), so it
# stops the job, reads its last lines and the cluster is released before the alarm, as in the triggerer.
WORKER_TIMEOUT_MARGIN = 8.0


def seconds_of(timeout: timedelta | float | None) -> float:
    """An ``execution_timeout`` in seconds (0 when unset). Pure."""
    if not timeout:
        return 0.0
    return timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)


def worker_deadline(deadline: float | None, timeout_seconds: float) -> float | None:
    """The trigger's deadline when it runs on the worker (see WORKER_TIMEOUT_MARGIN). Pure."""
    if deadline is None:
        return None
    return deadline - min(WORKER_TIMEOUT_MARGIN, max(0.0, timeout_seconds) / 4)


def check_static_arguments(op: Any) -> None:
    """The operator's arguments that are not templated, checked in ``__init__`` (a bad DAG fails at
    parse time with the field's name)."""
    if not isinstance(op.entrypoint, str) or not op.entrypoint.strip():
        raise ConfigError("entrypoint", "expected a non-empty shell command, e.g. 'python train.py'")
    for name in ("entrypoint_num_cpus", "entrypoint_num_gpus"):
        check_number(name, getattr(op, name))
    check_number("entrypoint_memory", op.entrypoint_memory, whole=True)
    if op.entrypoint_resources is not None:
        if not isinstance(op.entrypoint_resources, Mapping):
            raise ConfigError("entrypoint_resources", "expected a dict of resource name to amount")
        for key, amount in op.entrypoint_resources.items():
            check_number(f"entrypoint_resources[{key!r}]", amount)
    for name in ("poll_interval", "startup_timeout", "dashboard_unreachable_timeout"):
        check_seconds(name, getattr(op, name))
    if not isinstance(op.ray_conn_id, str) or not op.ray_conn_id:
        raise ConfigError("ray_conn_id", "expected a connection id")
    if not isinstance(op.wait_for_completion, bool):
        raise ConfigError("wait_for_completion", "expected True or False")
    check_reuse_lifecycle(op)
    check_rayjob_arguments(op)
