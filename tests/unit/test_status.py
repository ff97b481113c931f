"""Startup and job status interpretation from real-shaped Kubernetes/Ray objects."""

from __future__ import annotations

from airflow_provider_flyray.status import (
    JobStatus,
    Startup,
    dashboard_port_of,
    interpret_startup,
    job_status_of,
    summarize_events,
)


def cluster(state=None, conditions=(), deleting=False, endpoints=None):
    meta = {"name": "c"}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-28T00:00:00Z"
    status = {"conditions": [{"type": t, "status": s, "reason": r, "message": m} for t, s, r, m in conditions]}
    if state:
        status["state"] = state
    if endpoints:
        status["endpoints"] = endpoints
    return {"metadata": meta, "status": status}


def pod(name="c-head", node_type="head", phase="Pending", conditions=(), container_statuses=(), requests=None):
    return {
        "metadata": {"name": name, "labels": {"ray.io/node-type": node_type}},
        "spec": {"containers": [{"name": "ray", "resources": {"requests": requests or {}}}]},
        "status": {
            "phase": phase,
            "conditions": [{"type": t, "status": s, "reason": r, "message": m} for t, s, r, m in conditions],
            "containerStatuses": list(container_statuses),
        },
    }


def test_ready_by_state_or_conditions():
    assert interpret_startup(cluster("ready"), []).state is Startup.READY
    both = [("HeadPodReady", "True", "", ""), ("RayClusterProvisioned", "True", "", "")]
    assert interpret_startup(cluster(None, both), []).state is Startup.READY
    head_only = [("HeadPodReady", "True", "", ""), ("RayClusterProvisioned", "False", "", "")]
    assert interpret_startup(cluster(None, head_only), [pod(phase="Running")]).state is Startup.PENDING


def test_gone_and_deleting():
    assert interpret_startup(None, []).state is Startup.GONE
    assert interpret_startup(cluster(deleting=True), []).state is Startup.GONE


def test_unschedulable_worker_fails_fast_with_what_it_asked_for():
    p = pod(
        "c-worker-x",
        "worker",
        conditions=[("PodScheduled", "False", "Unschedulable", "0/1 nodes are available: 1 Insufficient cpu.")],
        requests={"cpu": "64"},
    )
    verdict = interpret_startup(cluster(), [pod(phase="Running"), p])
    assert verdict.state is Startup.FAILED
    assert "Unschedulable" in verdict.reason and "Insufficient cpu" in verdict.reason and "cpu=64" in verdict.reason


def test_crash_loop_and_image_pull_and_repeated_crashes():
    waiting = {
        "name": "ray",
        "restartCount": 1,
        "state": {"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}},
    }
    assert "ImagePullBackOff" in interpret_startup(cluster(), [pod(container_statuses=[waiting])]).reason
    crashed = {
        "name": "ray",
        "restartCount": 2,
        "state": {"running": {}},
        "lastState": {"terminated": {"exitCode": 3, "reason": "Error"}},
    }
    verdict = interpret_startup(cluster(), [pod(container_statuses=[crashed])])
    assert verdict.state is Startup.FAILED and "exit code 3" in verdict.reason
    once = dict(crashed, restartCount=1)
    assert interpret_startup(cluster(), [pod(container_statuses=[once])]).state is Startup.PENDING


def test_head_problem_reported_before_worker_problem():
    worker = pod("w", "worker", conditions=[("PodScheduled", "False", "Unschedulable", "no")])
    head = pod("h", "head", container_statuses=[{"name": "ray", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}])
    assert "pod h" in interpret_startup(cluster(), [worker, head]).reason


def test_replica_failure_condition_and_suspension():
    failed = interpret_startup(cluster(conditions=[("ReplicaFailure", "True", "FailedCreateHeadPod", "forbidden")]), [])
    assert failed.state is Startup.FAILED and "forbidden" in failed.reason
    assert interpret_startup(cluster("suspended"), []).state is Startup.FAILED


def test_pending_reason_summarises_pods():
    verdict = interpret_startup(cluster(), [pod(phase="Running")])
    assert verdict.state is Startup.PENDING and "c-head=Running" in verdict.reason


def test_job_status_and_helpers():
    assert job_status_of({"status": "SUCCEEDED"}).is_terminal
    assert not job_status_of({"status": "RUNNING"}).is_terminal
    assert job_status_of({}) is JobStatus.PENDING
    assert dashboard_port_of(cluster(endpoints={"dashboard": "31000"})) == 31000
    assert dashboard_port_of(cluster()) == 8265
    events = [
        {"type": "Normal", "reason": "Created", "involvedObject": {"kind": "Pod", "name": "p"}},
        {
            "type": "Warning",
            "reason": "FailedScheduling",
            "message": "no cpu",
            "involvedObject": {"kind": "Pod", "name": "p"},
        },
    ]
    assert summarize_events(events) == "Pod/p: FailedScheduling: no cpu"
