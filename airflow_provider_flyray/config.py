"""The configuration model: what a DAG author says about the Ray cluster and job.

Field names follow Flyte's Ray plugin (``flytekitplugins-ray``) so a Flyte task's ``RayJobConfig`` reads
the same here. Everything in this module is pure: construction validates, nothing talks to Kubernetes
or Ray. Turning a config into a RayCluster manifest is :mod:`airflow_provider_flyray.manifest`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from airflow_provider_flyray.errors import ConfigError
from airflow_provider_flyray.runtime_env import validate_runtime_env

# Ray version the default image and ``rayVersion`` follow. Kept in one place on purpose: bump it with
# the `ray` pin of the `local` extra.
DEFAULT_RAY_VERSION = "2.60.0"
DEFAULT_RAY_IMAGE = f"rayproject/ray:{DEFAULT_RAY_VERSION}"

# Kubernetes resource quantity: a non-negative decimal with an optional binary/decimal suffix or exponent.
_QUANTITY = re.compile(r"^(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$")
# DNS-1123 label (worker group names end up in pod names and label values).
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# `ray start` flag names as written in rayStartParams (without the leading dashes).
_RAY_START_PARAM = re.compile(r"^[a-z][a-z0-9-]*$")

# Short resource names a user may write; anything domain-qualified (``vendor.com/x``) passes through.
_RESOURCE_ALIASES = {
    "cpu": "cpu",
    "memory": "memory",
    "gpu": "nvidia.com/gpu",
    "ephemeral-storage": "ephemeral-storage",
}


class OnFinishAction(StrEnum):
    """What happens to a cluster this provider created once the job is over."""

    DELETE_CLUSTER = "delete_cluster"
    KEEP_CLUSTER = "keep_cluster"
    DELETE_SUCCEEDED_CLUSTER = "delete_succeeded_cluster"

    @classmethod
    def parse(cls, value: str | OnFinishAction, field_name: str = "on_finish_action") -> OnFinishAction:
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(repr(a.value) for a in cls)
            raise ConfigError(field_name, f"got {value!r}; expected one of {allowed}") from None


def _check_mapping_of_str(name: str, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(name, f"expected a dict of strings, got {type(value).__name__}")
    out: dict[str, str] = {}
    for key, val in value.items():
        if not isinstance(key, str):
            raise ConfigError(name, f"keys must be strings, got {key!r}")
        if isinstance(val, bool):
            val = "true" if val else "false"
        if not isinstance(val, str | int | float):
            raise ConfigError(f"{name}[{key!r}]", f"expected a string or number, got {type(val).__name__}")
        out[key] = str(val)
    return out


def normalize_resources(name: str, value: Any) -> dict[str, str]:
    """Validate a requests/limits dict and return it with Kubernetes resource names and string quantities."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(name, f"expected a dict like {{'cpu': '2', 'memory': '4Gi'}}, got {type(value).__name__}")
    out: dict[str, str] = {}
    for key, quantity in value.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(name, f"resource names must be non-empty strings, got {key!r}")
        resource = _RESOURCE_ALIASES.get(key, key if "/" in key else None)
        if resource is None:
            known = ", ".join(sorted(_RESOURCE_ALIASES))
            raise ConfigError(
                f"{name}[{key!r}]",
                f"unknown resource; use one of {known} or a domain-qualified name like 'nvidia.com/gpu'",
            )
        if isinstance(quantity, bool) or not isinstance(quantity, str | int | float):
            raise ConfigError(f"{name}[{key!r}]", f"expected a quantity like '2', '500m' or '4Gi', got {quantity!r}")
        text = str(quantity).strip()
        if (isinstance(quantity, int | float) and quantity < 0) or not _QUANTITY.match(text):
            raise ConfigError(
                f"{name}[{key!r}]",
                f"{quantity!r} is not a valid non-negative Kubernetes quantity (e.g. '2', '500m', '4Gi')",
            )
        out[resource] = text
    return out


def _check_ray_start_params(name: str, value: Any) -> dict[str, str]:
    params = _check_mapping_of_str(name, value)
    for key in params:
        if not _RAY_START_PARAM.match(key):
            raise ConfigError(
                f"{name}[{key!r}]",
                "expected a `ray start` flag name without dashes, e.g. 'num-cpus' or 'dashboard-host'",
            )
    return params


def _check_pod_template(name: str, value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if hasattr(value, "to_dict") and not isinstance(value, Mapping):
        # A kubernetes-client model (V1PodTemplateSpec / V1Pod): serialise it the way the API would.
        from kubernetes.client import ApiClient

        value = ApiClient().sanitize_for_serialization(value)
    if not isinstance(value, Mapping):
        raise ConfigError(
            name, f"expected a pod template dict {{'metadata': ..., 'spec': ...}}, got {type(value).__name__}"
        )
    unknown = set(value) - {"metadata", "spec", "apiVersion", "kind"}
    if unknown:
        raise ConfigError(name, f"unknown keys {sorted(unknown)}; a pod template has 'metadata' and 'spec'")
    spec = value.get("spec", {})
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{name}.spec", "expected a PodSpec dict")
    containers = spec.get("containers", [])
    if not isinstance(containers, list) or not all(isinstance(c, Mapping) for c in containers):
        raise ConfigError(f"{name}.spec.containers", "expected a list of container dicts")
    return {k: v for k, v in value.items() if k in ("metadata", "spec")}


def _check_image(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or any(ch.isspace() for ch in value):
        raise ConfigError(
            name, f"expected an image reference like 'rayproject/ray:{DEFAULT_RAY_VERSION}', got {value!r}"
        )
    return value


@dataclass
class HeadNodeConfig:
    """The head pod: ``ray start --head`` parameters, pod template overrides, resources and image."""

    ray_start_params: dict[str, str] | None = None
    pod_template: dict[str, Any] | None = None
    requests: dict[str, str] | None = None
    limits: dict[str, str] | None = None
    image: str | None = None

    def __post_init__(self) -> None:
        self.ray_start_params = _check_ray_start_params("head_node_config.ray_start_params", self.ray_start_params)
        self.pod_template = _check_pod_template("head_node_config.pod_template", self.pod_template)
        self.requests = normalize_resources("head_node_config.requests", self.requests)
        self.limits = normalize_resources("head_node_config.limits", self.limits)
        self.image = _check_image("head_node_config.image", self.image)


@dataclass
class WorkerNodeConfig:
    """One worker group: name, replica bounds, ``ray start`` parameters, pod template, resources, image."""

    group_name: str
    replicas: int = 1
    min_replicas: int | None = None
    max_replicas: int | None = None
    ray_start_params: dict[str, str] | None = None
    pod_template: dict[str, Any] | None = None
    requests: dict[str, str] | None = None
    limits: dict[str, str] | None = None
    image: str | None = None

    def __post_init__(self) -> None:
        where = f"worker_node_config[{self.group_name!r}]"
        if (
            not isinstance(self.group_name, str)
            or not _DNS1123_LABEL.match(self.group_name)
            or len(self.group_name) > 63
        ):
            raise ConfigError(
                "worker_node_config.group_name",
                f"{self.group_name!r} is not a valid group name: use 1-63 lowercase letters, digits and '-', "
                "starting and ending with a letter or digit",
            )
        for name in ("replicas", "min_replicas", "max_replicas"):
            value = getattr(self, name)
            if value is None and name != "replicas":
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{where}.{name}", f"expected a whole number, got {value!r}")
            if value < 0:
                raise ConfigError(f"{where}.{name}", f"must be 0 or more, got {value}")
        low = self.min_replicas if self.min_replicas is not None else 0
        high = self.max_replicas if self.max_replicas is not None else None
        if high is not None and low > high:
            raise ConfigError(f"{where}.min_replicas", f"min_replicas ({low}) is greater than max_replicas ({high})")
        if self.replicas < low or (high is not None and self.replicas > high):
            raise ConfigError(
                f"{where}.replicas",
                f"replicas ({self.replicas}) must lie between min_replicas ({low}) and max_replicas ({high})",
            )
        self.ray_start_params = _check_ray_start_params(f"{where}.ray_start_params", self.ray_start_params)
        self.pod_template = _check_pod_template(f"{where}.pod_template", self.pod_template)
        self.requests = normalize_resources(f"{where}.requests", self.requests)
        self.limits = normalize_resources(f"{where}.limits", self.limits)
        self.image = _check_image(f"{where}.image", self.image)

    @property
    def effective_min_replicas(self) -> int:
        return self.min_replicas if self.min_replicas is not None else self.replicas

    @property
    def effective_max_replicas(self) -> int:
        return self.max_replicas if self.max_replicas is not None else max(self.replicas, self.effective_min_replicas)


@dataclass
class RayJobConfig:
    """A Ray job's cluster and environment, as in Flyte's ``RayJobConfig``.

    ``ray_cluster_spec`` is the escape hatch: a raw ``RayCluster.spec`` dict used as-is (the provider
    still forces the dashboard on and adds its labels) for anything the dataclasses do not cover.
    """

    worker_node_config: list[WorkerNodeConfig] = field(default_factory=list)
    head_node_config: HeadNodeConfig | None = None
    enable_autoscaling: bool = False
    autoscaler_options: dict[str, Any] | None = None
    runtime_env: dict[str, Any] | None = None
    address: str | None = None
    shutdown_after_job_finishes: bool | None = None
    ttl_seconds_after_finished: int | None = None
    ray_cluster_spec: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.worker_node_config, WorkerNodeConfig):
            self.worker_node_config = [self.worker_node_config]
        if not isinstance(self.worker_node_config, list):
            raise ConfigError("worker_node_config", "expected a list of WorkerNodeConfig")
        converted: list[WorkerNodeConfig] = []
        for i, worker in enumerate(self.worker_node_config):
            if isinstance(worker, Mapping):
                worker = _from_mapping(WorkerNodeConfig, worker, f"worker_node_config[{i}]")
            if not isinstance(worker, WorkerNodeConfig):
                raise ConfigError(
                    f"worker_node_config[{i}]", f"expected a WorkerNodeConfig, got {type(worker).__name__}"
                )
            converted.append(worker)
        self.worker_node_config = converted
        names = [w.group_name for w in converted]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError("worker_node_config.group_name", f"group names must be unique; repeated: {duplicates}")
        if isinstance(self.head_node_config, Mapping):
            self.head_node_config = _from_mapping(HeadNodeConfig, self.head_node_config, "head_node_config")
        if self.head_node_config is not None and not isinstance(self.head_node_config, HeadNodeConfig):
            raise ConfigError(
                "head_node_config", f"expected a HeadNodeConfig, got {type(self.head_node_config).__name__}"
            )
        if not isinstance(self.enable_autoscaling, bool):
            raise ConfigError("enable_autoscaling", f"expected True or False, got {self.enable_autoscaling!r}")
        if self.autoscaler_options is not None and not isinstance(self.autoscaler_options, Mapping):
            raise ConfigError("autoscaler_options", "expected a dict of KubeRay autoscalerOptions")
        if self.autoscaler_options and not self.enable_autoscaling:
            raise ConfigError(
                "autoscaler_options", "is set but enable_autoscaling is False; set enable_autoscaling=True"
            )
        # RayJobConfig is not a templated field: a string here would never be rendered, so it is refused
        # now (a bad DAG fails at parse time); templates belong in the operator's own runtime_env.
        if isinstance(self.runtime_env, str):
            raise ConfigError(
                "ray_job_config.runtime_env",
                "expected a dict like {'pip': ['numpy']}, got a str; a templated runtime_env belongs in the "
                "operator's runtime_env= (a templated field)",
            )
        self.runtime_env = validate_runtime_env(self.runtime_env, "ray_job_config.runtime_env")
        if self.address is not None and (not isinstance(self.address, str) or not self.address.strip()):
            raise ConfigError(
                "address", f"expected a Ray dashboard URL like 'http://ray-head:8265', got {self.address!r}"
            )
        if self.shutdown_after_job_finishes is not None and not isinstance(self.shutdown_after_job_finishes, bool):
            raise ConfigError(
                "shutdown_after_job_finishes", f"expected True or False, got {self.shutdown_after_job_finishes!r}"
            )
        if self.ttl_seconds_after_finished is not None:
            ttl = self.ttl_seconds_after_finished
            if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 0:
                raise ConfigError("ttl_seconds_after_finished", f"expected a whole number of seconds >= 0, got {ttl!r}")
            if self.shutdown_after_job_finishes is False:
                raise ConfigError(
                    "ttl_seconds_after_finished",
                    "contradicts shutdown_after_job_finishes=False (keep forever); set only one of them",
                )
        if self.ray_cluster_spec is not None:
            if not isinstance(self.ray_cluster_spec, Mapping) or not isinstance(
                self.ray_cluster_spec.get("headGroupSpec"), Mapping
            ):
                raise ConfigError("ray_cluster_spec", "expected a RayCluster spec dict with a 'headGroupSpec'")
            if self.head_node_config is not None or self.worker_node_config:
                raise ConfigError(
                    "ray_cluster_spec", "set either ray_cluster_spec or head_node_config/worker_node_config, not both"
                )
        if self.address and (
            self.shutdown_after_job_finishes is not None or self.ttl_seconds_after_finished is not None
        ):
            raise ConfigError(
                "address", "an existing Ray address has no cluster lifecycle; drop shutdown_after_job_finishes/ttl"
            )


def _from_mapping(cls: type, data: Mapping[str, Any], where: str) -> Any:
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(where, f"unknown keys {unknown}; allowed: {sorted(allowed)}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ConfigError(where, str(exc)) from None


def ray_job_config_from(value: Any) -> RayJobConfig:
    """Accept a RayJobConfig, a dict of its fields, or None (a default single-head cluster)."""
    if value is None:
        return RayJobConfig()
    if isinstance(value, RayJobConfig):
        return value
    if isinstance(value, Mapping):
        return _from_mapping(RayJobConfig, value, "ray_job_config")
    raise ConfigError("ray_job_config", f"expected a RayJobConfig or a dict, got {type(value).__name__}")


def cpu_quantity(value: str | float) -> float:
    """'500m' -> 0.5, '2' -> 2.0 (for `ray start --num-cpus` on the local backend)."""
    text = str(value).strip()
    if text.endswith("m"):
        return float(text[:-1]) / 1000
    return float(text)
