"""Reading states: a Ray job's status and a RayCluster's startup health. Pure functions over API dicts.

KubeRay >= 1.2 never marks a broken cluster ``failed``: it simply never becomes ready. So a cluster's
startup is judged from its conditions *and* its pods (scheduling, container waiting reasons, crash
restarts), which is how a task fails in seconds with a reason instead of waiting out the timeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.STOPPED, JobStatus.SUCCEEDED, JobStatus.FAILED)


def job_status_of(job: dict[str, Any]) -> JobStatus:
    return JobStatus(str(job.get("status", "PENDING")).upper())


class Startup(StrEnum):
    READY = "ready"
    PENDING = "pending"
    FAILED = "failed"
    GONE = "gone"


@dataclass(frozen=True)
class StartupVerdict:
    state: Startup
    reason: str = ""


# Container waiting reasons that will not fix themselves.
FATAL_WAITING_REASONS = frozenset(
    {
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
# A container that exited with an error this many times is crash-looping even if the kubelet has not
# said CrashLoopBackOff yet.
MAX_STARTUP_RESTARTS = 2


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c.get("type", ""): c for c in (obj.get("status") or {}).get("conditions") or []}


def _requested_resources(pod: dict[str, Any]) -> str:
    asked: list[str] = []
    for container in (pod.get("spec") or {}).get("containers") or []:
        requests = (container.get("resources") or {}).get("requests") or {}
        asked.extend(f"{k}={v}" for k, v in sorted(requests.items()))
    return ", ".join(asked) or "no explicit requests"


def pod_problem(pod: dict[str, Any]) -> str | None:
    """Why this pod will never become ready, or None while it still may."""
    name = (pod.get("metadata") or {}).get("name", "?")
    status = pod.get("status") or {}
    scheduled = _conditions(pod).get("PodScheduled")
    if scheduled and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        return (
            f"pod {name} is Unschedulable: {scheduled.get('message', '').strip()} "
            f"(it asks for {_requested_resources(pod)})"
        )
    if status.get("phase") == "Failed":
        return f"pod {name} failed: {status.get('reason', '')} {status.get('message', '')}".strip()
    for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        state = cs.get("state") or {}
        waiting = state.get("waiting") or {}
        last = (cs.get("lastState") or {}).get("terminated") or (state.get("terminated") or {})
        exit_info = ""
        if last:
            message = last.get("message", "") or ""
            exit_info = f"; last exit code {last.get('exitCode')} ({last.get('reason', '')}) {message}".rstrip()
        if waiting.get("reason") in FATAL_WAITING_REASONS:
            return (
                f"container {cs.get('name')} of pod {name} is {waiting['reason']}: "
                f"{waiting.get('message', '') or ''}{exit_info}".strip()
            )
        if int(cs.get("restartCount") or 0) >= MAX_STARTUP_RESTARTS and last and last.get("exitCode", 0) != 0:
            restarts = cs.get("restartCount")
            return f"container {cs.get('name')} of pod {name} keeps crashing ({restarts} restarts){exit_info}"
    return None


def interpret_startup(cluster: dict[str, Any] | None, pods: list[dict[str, Any]]) -> StartupVerdict:
    """Judge a RayCluster during startup from the object and its pods."""
    if cluster is None:
        return StartupVerdict(Startup.GONE, "the RayCluster does not exist (deleted by someone else?)")
    name = (cluster.get("metadata") or {}).get("name", "?")
    if (cluster.get("metadata") or {}).get("deletionTimestamp"):
        return StartupVerdict(Startup.GONE, f"RayCluster {name} is being deleted")
    status = cluster.get("status") or {}
    conditions = _conditions(cluster)
    head_ready = conditions.get("HeadPodReady", {}).get("status") == "True"
    provisioned = conditions.get("RayClusterProvisioned", {}).get("status") == "True"
    if status.get("state") == "ready" or (head_ready and provisioned):
        return StartupVerdict(Startup.READY, f"RayCluster {name} is ready")
    if status.get("state") == "suspended" or conditions.get("RayClusterSuspended", {}).get("status") == "True":
        return StartupVerdict(Startup.FAILED, f"RayCluster {name} is suspended")
    replica_failure = conditions.get("ReplicaFailure", {})
    if replica_failure.get("status") == "True":
        return StartupVerdict(
            Startup.FAILED,
            f"RayCluster {name}: {replica_failure.get('reason', '')}: {replica_failure.get('message', '')}",
        )
    # Head problems first: they explain worker problems (workers wait for the head's GCS).
    ordered = sorted(
        pods, key=lambda p: ((p.get("metadata") or {}).get("labels") or {}).get("ray.io/node-type") != "head"
    )
    for pod in ordered:
        problem = pod_problem(pod)
        if problem:
            return StartupVerdict(Startup.FAILED, problem)
    return StartupVerdict(Startup.PENDING, describe_progress(cluster, pods))


def describe_progress(cluster: dict[str, Any], pods: list[dict[str, Any]]) -> str:
    """A one-line summary for a timeout message: what is still missing."""
    name = (cluster.get("metadata") or {}).get("name", "?")
    parts = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        status = pod.get("status") or {}
        ready = _conditions(pod).get("Ready", {}).get("status") == "True"
        parts.append(f"{meta.get('name')}={status.get('phase', '?')}{'/ready' if ready else ''}")
    state = (cluster.get("status") or {}).get("state") or "provisioning"
    return f"RayCluster {name} is {state}; pods: {', '.join(parts) or 'none yet'}"


def summarize_events(events: list[dict[str, Any]], limit: int = 5) -> str:
    """The latest Warning events, as one line each, for failure messages."""
    warnings = [e for e in events if e.get("type") == "Warning"]
    warnings.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    lines = [
        f"{(e.get('involvedObject') or {}).get('kind')}/{(e.get('involvedObject') or {}).get('name')}: "
        f"{e.get('reason')}: {e.get('message')}"
        for e in warnings[-limit:]
    ]
    return "; ".join(lines)


def dashboard_port_of(cluster: dict[str, Any], default: int = 8265) -> int:
    endpoints = (cluster.get("status") or {}).get("endpoints") or {}
    try:
        return int(endpoints.get("dashboard", default))
    except (TypeError, ValueError):
        return default
