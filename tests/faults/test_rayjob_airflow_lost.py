"""Fault-matrix row R1 (issue 13), the reason for RayJob mode: the whole Airflow stack (scheduler with
its LocalExecutor workers, triggerer, api-server, dag-processor) is SIGKILLed while a RayJob-mode job
runs, and is not restarted. KubeRay alone finishes the job and deletes its cluster within the RayJob's
TTL; the pods, their network namespaces and every process are gone. What KubeRay keeps is the RayJob
record (no pods); the next run of the task, from a new Airflow with a new metadata DB, deletes it."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_flyray.rayjob import RAYJOB_TTL_MARGIN
from tests.support import TEST_DAGS
from tests.support.airflow_runs import airflow_stack, dags_test, home_with_test_dags, wait_for_state
from tests.support.job_counter import JobCounter
from tests.support.leftovers import leftovers, rayjobs_in
from tests.support.tenants import RAYJOB_RBAC, Tenant, provider_tenant

pytestmark = [pytest.mark.kube, pytest.mark.airflow, pytest.mark.ray]

DAG_ID = "fault_rayjob_airflow_lost"
DAG_FILE = TEST_DAGS / "flyray_rayjob_fault_dags.py"


@pytest.fixture
def tenant(kube_control_plane, tmp_path) -> Iterator[Tenant]:
    """docker/rbac-rayjob.yaml (RayJob mode's least privilege) in a fresh namespace."""
    (tmp_path / "sa").mkdir()
    with provider_tenant(kube_control_plane, tmp_path / "sa", "flyray-lost", rbac=RAYJOB_RBAC) as tenant:
        yield tenant


def processes_of(home: Path) -> list[int]:
    """Every process started for the Airflow home ``home`` (its environment names it)."""
    mark = f"AIRFLOW_HOME={home}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if mark in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                    found.append(int(entry))
    return found


def rayjob_status(custom, namespace: str) -> dict:
    (rayjob,) = rayjobs_in(custom, namespace, f"dag_id={DAG_ID}")
    return rayjob.get("status") or {}


def wait_for(what: str, cond, timeout: float) -> float:
    started = time.monotonic()
    while not cond():
        assert time.monotonic() - started < timeout, f"{what}: not within {timeout:.0f}s"
        time.sleep(0.5)
    return time.monotonic() - started


@pytest.mark.scenario("R1", "RayJob mode: the whole Airflow stack SIGKILLed mid-job, not restarted")
def test_kuberay_finishes_the_job_and_deletes_its_cluster_when_airflow_is_lost(
    scenario, tenant, core, custom, tmp_path, airflow_db, metadata_db
):
    scenario.expect("the job completes; KubeRay deletes its cluster within the TTL; nothing left; 1 job")
    namespace = tenant.namespace
    counter = JobCounter(core, custom, namespace, f"dag_id={DAG_ID}")
    counter.start()
    home = tmp_path / "airflow-lost"
    try:
        with airflow_stack(home, [DAG_FILE], {"AIRFLOW_CONN_RAY_KUBE": tenant.conn("pod")}, metadata_db) as stack:
            run_id = stack.trigger(DAG_ID)
            task_key = f"{DAG_ID}|job|{run_id}|-1"
            # Deferred (the triggerer follows it) and its job running on the cluster KubeRay made.
            assert wait_for_state(stack, DAG_ID, run_id, {"deferred", "success", "failed"})["state"] == "deferred"
            counter.wait_for_job(task_key, "RUNNING")
            assert stack.task_instance(DAG_ID, run_id, "job")["state"] == "deferred"
            # Airflow is lost: every process of the deployment, at once, and nothing restarts it.
            for proc in stack.processes.values():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            for pid in processes_of(home):  # anything that left its process group goes too
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            wait_for("the Airflow processes to exit", lambda: not processes_of(home), 30)
            # (Ray said RUNNING before the kill; KubeRay's own status follows Ray's a few seconds late.)

            job_done = killed + wait_for(
                "KubeRay to finish the job",
                lambda: rayjob_status(custom, namespace).get("jobDeploymentStatus") == "Complete",
                300,
            )
            status = rayjob_status(custom, namespace)
            assert status.get("jobStatus") == "SUCCEEDED", status
            # KubeRay deletes the cluster ttlSecondsAfterFinished (the margin: on_finish_action
            # delete_cluster) after the job; the pods' graceful deletion follows.
            gone = wait_for(
                "KubeRay to delete the cluster",
                lambda: (
                    not core.list_namespaced_pod(namespace).items
                    and not custom.list_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters")["items"]
                ),
                RAYJOB_TTL_MARGIN + 90,
            )
            assert gone >= RAYJOB_TTL_MARGIN - 5, f"deleted {gone:.0f}s after the job: before its TTL?"
            jobs = counter.jobs_for(task_key)
            assert len(jobs) == 1, jobs
            (record,) = rayjobs_in(custom, namespace, f"dag_id={DAG_ID}")
            name = record["metadata"]["name"]
            # Only KubeRay's record of the RayJob is left (no pod, netns or process of the task).
            assert leftovers(core, custom, namespace, f"dag_id={DAG_ID}", counter.pod_uids, 5) == [f"RayJob {name}"]
            assert not processes_of(home)
    finally:
        counter.stop()

    # A new Airflow (a new metadata DB) runs the task again: it deletes the old record, runs, and cleans up.
    env = home_with_test_dags(tmp_path / "next", {"AIRFLOW_CONN_RAY_KUBE": tenant.conn("pod")})
    output = dags_test(DAG_ID, env, conf={"seconds": 1})
    assert "state=success" in output and "state=failed" not in output, output[-6000:]
    swept = f"Deleted RayJob {namespace}/{name} of an earlier try or run (Complete)"
    assert swept in output, output[-6000:]
    left = leftovers(core, custom, namespace, f"dag_id={DAG_ID}", counter.pod_uids, 90)
    scenario.jobs = len(jobs)
    scenario.leaks = left
    scenario.observe(
        f"job SUCCEEDED {job_done - killed:.0f}s after the kill; cluster deleted {gone:.0f}s after the job "
        f"(TTL {RAYJOB_TTL_MARGIN}s); RayJob record deleted by the next run; 1 job"
    )
    assert left == [], left
