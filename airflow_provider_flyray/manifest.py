"""RayJobConfig -> ``ray.io/v1`` RayCluster manifest. Pure: no I/O, deterministic output."""

from __future__ import annotations

import copy
from typing import Any

from airflow_provider_flyray.config import (
    DEFAULT_RAY_IMAGE,
    DEFAULT_RAY_VERSION,
    HeadNodeConfig,
    RayJobConfig,
    WorkerNodeConfig,
)
from airflow_provider_flyray.naming import TaskIdentity
from airflow_provider_flyray.owners import Owner, TaskInstanceOwner, owner_annotations

RAY_API_GROUP = "ray.io"
RAY_API_VERSION = "v1"
RAYCLUSTER_PLURAL = "rayclusters"

HEAD_CONTAINER = "ray-head"
WORKER_CONTAINER = "ray-worker"
DASHBOARD_PORT = 8265
HEAD_PORTS = [
    {"name": "gcs-server", "containerPort": 6379},
    {"name": "dashboard", "containerPort": DASHBOARD_PORT},
    {"name": "client", "containerPort": 10001},
]
# Extended resources must have limits equal to requests in Kubernetes.
_EXTENDED_RESOURCE_PREFIXES = ("nvidia.com/", "amd.com/", "google.com/", "habana.ai/", "aws.amazon.com/")


def head_service_name(cluster_name: str) -> str:
    return f"{cluster_name}-head-svc"


def _resources(requests: dict[str, str] | None, limits: dict[str, str] | None) -> dict[str, dict[str, str]]:
    requests = dict(requests or {})
    limits = dict(limits or {})
    for name, quantity in requests.items():
        if name.startswith(_EXTENDED_RESOURCE_PREFIXES):
            limits.setdefault(name, quantity)
    out: dict[str, dict[str, str]] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _pod_template(
    *,
    container_name: str,
    user_template: dict[str, Any] | None,
    image: str,
    resources: dict[str, dict[str, str]],
    labels: dict[str, str],
    ports: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Merge the user's pod template with the Ray container this provider needs.

    The user's container named like ours (or their first container) is the Ray container: values the
    user set win, the provider only fills what is missing.
    """
    template = copy.deepcopy(user_template) if user_template else {}
    template.setdefault("metadata", {})
    template["metadata"]["labels"] = {**labels, **template["metadata"].get("labels", {})}
    spec = template.setdefault("spec", {})
    containers: list[dict[str, Any]] = spec.setdefault("containers", [])
    primary = next((c for c in containers if c.get("name") == container_name), containers[0] if containers else None)
    if primary is None:
        primary = {}
        containers.insert(0, primary)
    primary.setdefault("name", container_name)
    primary.setdefault("image", image)
    # A Ray container that exits at once then explains itself in its status (kubelet copies the end of
    # its output there), so a startup failure message has the cause without needing `pods/log` rights.
    primary.setdefault("terminationMessagePolicy", "FallbackToLogsOnError")
    if resources:
        primary["resources"] = _deep_merge(resources, primary.get("resources", {}))
    if ports and not primary.get("ports"):
        primary["ports"] = copy.deepcopy(ports)
    return template


def _head_group(head: HeadNodeConfig, labels: dict[str, str]) -> dict[str, Any]:
    params = {"dashboard-host": "0.0.0.0", **(head.ray_start_params or {})}
    # The dashboard serves the Jobs API this provider talks to: it is always on.
    params["include-dashboard"] = "true"
    params["dashboard-host"] = params.get("dashboard-host") or "0.0.0.0"
    return {
        "serviceType": "ClusterIP",
        "rayStartParams": params,
        "template": _pod_template(
            container_name=HEAD_CONTAINER,
            user_template=head.pod_template,
            image=head.image or DEFAULT_RAY_IMAGE,
            resources=_resources(head.requests, head.limits),
            labels=labels,
            ports=HEAD_PORTS,
        ),
    }


def _worker_group(worker: WorkerNodeConfig, labels: dict[str, str], autoscaling: bool) -> dict[str, Any]:
    min_replicas = worker.min_replicas if worker.min_replicas is not None else (0 if autoscaling else worker.replicas)
    max_replicas = worker.max_replicas if worker.max_replicas is not None else max(worker.replicas, min_replicas)
    return {
        "groupName": worker.group_name,
        "replicas": worker.replicas,
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
        "rayStartParams": dict(worker.ray_start_params or {}),
        "template": _pod_template(
            container_name=WORKER_CONTAINER,
            user_template=worker.pod_template,
            image=worker.image or DEFAULT_RAY_IMAGE,
            resources=_resources(worker.requests, worker.limits),
            labels=labels,
        ),
    }


def build_raycluster_manifest(
    config: RayJobConfig,
    *,
    name: str,
    namespace: str,
    labels: dict[str, str],
    annotations: dict[str, str] | None = None,
    ray_version: str = DEFAULT_RAY_VERSION,
) -> dict[str, Any]:
    """The RayCluster object to create for ``config``."""
    if config.ray_cluster_spec is not None:
        spec = copy.deepcopy(config.ray_cluster_spec)
        head = spec["headGroupSpec"]
        params = head.setdefault("rayStartParams", {})
        params["include-dashboard"] = "true"
        params.setdefault("dashboard-host", "0.0.0.0")
        head.setdefault("serviceType", "ClusterIP")
        for group in [head, *spec.get("workerGroupSpecs", [])]:
            template = group.setdefault("template", {})
            template.setdefault("metadata", {})
            template["metadata"]["labels"] = {**labels, **template["metadata"].get("labels", {})}
        spec.setdefault("rayVersion", ray_version)
    else:
        head = config.head_node_config or HeadNodeConfig()
        spec = {
            "rayVersion": ray_version,
            "enableInTreeAutoscaling": bool(config.enable_autoscaling),
            "headGroupSpec": _head_group(head, labels),
            "workerGroupSpecs": [
                _worker_group(w, labels, config.enable_autoscaling) for w in config.worker_node_config
            ],
        }
        if config.enable_autoscaling and config.autoscaler_options:
            spec["autoscalerOptions"] = copy.deepcopy(config.autoscaler_options)
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {
        "apiVersion": f"{RAY_API_GROUP}/{RAY_API_VERSION}",
        "kind": "RayCluster",
        "metadata": metadata,
        "spec": spec,
    }


def owned_cluster_manifest(
    config: RayJobConfig, owner: Owner, namespace: str, on_finish_action: str | None = None
) -> dict[str, Any]:
    """The RayCluster created for ``owner``: its name, labels and annotations come from the owner."""
    return build_raycluster_manifest(
        config,
        name=owner.cluster_name(),
        namespace=namespace,
        labels=owner.labels(),
        annotations=owner_annotations(owner, on_finish_action),
    )


def task_cluster_manifest(
    config: RayJobConfig, identity: TaskIdentity, namespace: str, on_finish_action: str | None = None
) -> dict[str, Any]:
    """The transient RayCluster of one task try."""
    return owned_cluster_manifest(config, TaskInstanceOwner(identity), namespace, on_finish_action)
