"""What a run left behind, on the control plane and on this host: RayClusters, pods, the network
namespaces of its pods, processes of local Ray clusters; and waiting until a namespace is empty."""

from __future__ import annotations

import os
import time
from typing import Any

from kubernetes import client

from airflow_provider_flyray.naming import MANAGED_BY_LABEL
from tests.infra.kube import net
from tests.infra.stack import local_ray_pids
from tests.support.pod_network import netns_of

__all__ = [
    "SESSION_ENV",
    "clusters_in",
    "head_pod",
    "leftovers",
    "local_ray_pids",
    "managed_clusters",
    "rayjobs_in",
    "session_ray_pids",
    "wait_until_empty",
]

# Set by tests/conftest.py for the test session; inherited by the Airflow stacks it starts, their task
# processes and the local Ray clusters those start. Other sessions on the same machine (other worktrees'
# test runs) have their own, so their local Ray clusters are not this session's leaks.
SESSION_ENV = "FLYRAY_TEST_SESSION"


def session_ray_pids() -> list[int]:
    """Processes of local Ray clusters started from this test session (all of them outside pytest)."""
    session = os.environ.get(SESSION_ENV)
    return local_ray_pids(f"{SESSION_ENV}={session}" if session else None)


def clusters_in(custom: client.CustomObjectsApi, namespace: str, selector: str = "") -> list[dict[str, Any]]:
    """Every RayCluster in ``namespace`` (matching ``selector``), the provider's or not."""
    return custom.list_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters", label_selector=selector)[
        "items"
    ]


def managed_clusters(custom: client.CustomObjectsApi, namespace: str, selector: str = "") -> list[dict[str, Any]]:
    """The RayClusters the provider made (its managed-by label) in ``namespace``, matching ``selector``."""
    return [
        c for c in clusters_in(custom, namespace, selector) if (c["metadata"].get("labels") or {}).get(MANAGED_BY_LABEL)
    ]


def rayjobs_in(custom: client.CustomObjectsApi, namespace: str, selector: str = "") -> list[dict[str, Any]]:
    """Every RayJob in ``namespace`` (matching ``selector``)."""
    return custom.list_namespaced_custom_object("ray.io", "v1", namespace, "rayjobs", label_selector=selector)["items"]


def head_pod(core: client.CoreV1Api, namespace: str, cluster: str) -> client.V1Pod | None:
    pods = core.list_namespaced_pod(namespace, label_selector=f"ray.io/cluster={cluster},ray.io/node-type=head").items
    return pods[0] if pods else None


def wait_until_empty(
    core: client.CoreV1Api, custom: client.CustomObjectsApi, namespace: str, selector: str = "", timeout: float = 60
) -> float:
    """Until no RayCluster and no pod (matching ``selector``) is left in ``namespace``; the seconds it took."""
    started = time.monotonic()
    while True:
        pods = core.list_namespaced_pod(namespace, label_selector=selector).items
        clusters = clusters_in(custom, namespace, selector) + rayjobs_in(custom, namespace, selector)
        if not pods and not clusters:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, (
            f"left behind: {[p.metadata.name for p in pods]}, {[c['metadata']['name'] for c in clusters]}"
        )
        time.sleep(0.5)


def leftovers(
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    namespace: str,
    selector: str,
    pod_uids: set[str] = frozenset(),  # type: ignore[assignment]
    timeout: float = 60,
) -> list[str]:
    """What is still there after the task ended: RayClusters, pods, the network namespaces of the pods
    that ran (``pod_uids``), this session's local Ray processes. Waits up to ``timeout`` for graceful deletion to finish
    before calling anything a leak."""
    deadline = time.monotonic() + timeout
    while True:
        found = [f"RayCluster {c['metadata']['name']}" for c in managed_clusters(custom, namespace, selector)]
        found += [f"RayJob {j['metadata']['name']}" for j in rayjobs_in(custom, namespace, selector)]
        found += [f"pod {p.metadata.name}" for p in core.list_namespaced_pod(namespace, label_selector=selector).items]
        live_netns = set(net.list_netns())
        found += [f"netns {netns_of(uid)}" for uid in sorted(pod_uids) if netns_of(uid) in live_netns]
        found += [f"local Ray pid {pid}" for pid in session_ray_pids()]
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)
