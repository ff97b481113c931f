"""The fault matrix (issue #5): a real Airflow (scheduler, triggerer, api-server, dag-processor) runs the
DAGs of tests/dags/flyray_fault_dags.py on the KubeRay control plane as the least-privilege service
account, and each scenario injects one fault. Every row checks the task's final state and message, that
nothing is left behind (RayClusters, pods, their network namespaces, local Ray processes), and how many
Ray jobs the task submitted, counted on the cluster itself.

    make faults        # this matrix and the security/bad-input rows, then the table
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from kubernetes import client

from airflow_provider_flyray.naming import TaskIdentity, cluster_name_for
from tests.infra.kube.api_proxy import ApiProxy
from tests.infra.stack import AirflowStack
from tests.support.airflow_runs import FAULT_DAGS, airflow_stack, wait_for_state
from tests.support.fault_matrix import Scenario
from tests.support.job_counter import JobCounter
from tests.support.leftovers import head_pod, leftovers, managed_clusters
from tests.support.pod_network import host_link_of, set_link
from tests.support.tenants import Tenant, provider_tenant

pytestmark = [pytest.mark.kube, pytest.mark.airflow, pytest.mark.ray]


# ---- the stack -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tenant(kube_control_plane, tmp_path_factory) -> Iterator[Tenant]:
    """docker/rbac.yaml applied in a fresh namespace: the fault DAGs run as its service account."""
    workdir = tmp_path_factory.mktemp("faults-sa")
    with provider_tenant(kube_control_plane, workdir, "flyray-faults", token_seconds=7200) as tenant:
        yield tenant


@pytest.fixture(scope="module")
def namespace(tenant) -> str:
    return tenant.namespace


@pytest.fixture(scope="module")
def fault_proxy(kube_control_plane) -> Iterator[ApiProxy]:
    """The only test double of the matrix: a proxy in front of the real API server that injects faults."""
    with kube_control_plane.api_proxy() as proxy:
        yield proxy


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tenant, fault_proxy, metadata_db) -> Iterator[AirflowStack]:
    home = tmp_path_factory.mktemp("airflow-faults")
    faulty = tenant.write_kubeconfig(home / "sa-proxy.kubeconfig", fault_proxy.url, tenant.ca_file)
    env = {
        "AIRFLOW_CONN_RAY_KUBE": tenant.conn("pod"),
        "AIRFLOW_CONN_RAY_FAULTY": tenant.conn("pod", kubeconfig=faulty),
        "AIRFLOW__CORE__PARALLELISM": "8",
    }
    with airflow_stack(home, [FAULT_DAGS], env, metadata_db) as stack:
        yield stack


@dataclass
class Run:
    """One DAG run under observation: its jobs counted on the cluster while it runs."""

    stack: AirflowStack
    core: client.CoreV1Api
    custom: client.CustomObjectsApi
    namespace: str
    dag_id: str
    run_id: str
    counter: JobCounter

    @property
    def task_key(self) -> str:
        return f"{self.dag_id}|job|{self.run_id}|-1"

    def state(self) -> str:
        return str(self.stack.task_instance(self.dag_id, self.run_id, "job")["state"])

    def wait_state(self, states: set[str], timeout: float = 300) -> str:
        return str(wait_for_state(self.stack, self.dag_id, self.run_id, states, timeout, task_id="job")["state"])

    def finish(self, timeout: float = 400) -> str:
        return self.stack.wait_for_run(self.dag_id, self.run_id, timeout=timeout)

    def log(self, try_number: int = 1) -> str:
        return self.stack.task_log(self.dag_id, self.run_id, "job", try_number)

    def jobs(self) -> list[str]:
        return self.counter.jobs_for(self.task_key)

    def cluster(self) -> dict:
        (cluster,) = managed_clusters(self.custom, self.namespace, f"dag_id={self.dag_id}")
        return cluster

    def head(self) -> client.V1Pod:
        pod = head_pod(self.core, self.namespace, self.cluster()["metadata"]["name"])
        assert pod is not None and pod.status.pod_ip
        return pod

    def head_ip(self) -> str:
        return str(self.head().status.pod_ip)

    def leaks(self, timeout: float = 60) -> list[str]:
        self.counter.poll_once()
        return leftovers(
            self.core, self.custom, self.namespace, f"dag_id={self.dag_id}", self.counter.pod_uids, timeout
        )


@pytest.fixture
def start(stack, core, custom, namespace) -> Iterator:
    """``start(dag_id)`` triggers a run of a fault DAG and starts counting its Ray jobs."""
    counters: list[JobCounter] = []

    def _start(dag_id: str, run_id: str | None = None, conf: dict | None = None) -> Run:
        counter = JobCounter(core, custom, namespace, f"dag_id={dag_id}")
        counter.start()
        counters.append(counter)
        return Run(stack, core, custom, namespace, dag_id, stack.trigger(dag_id, conf, run_id=run_id), counter)

    yield _start
    for counter in counters:
        counter.stop()


def record(scenario: Scenario, run: Run, observed: str, *, expect_leaks: list[str] | None = None) -> None:
    scenario.observe(short(observed, 240))
    scenario.jobs = len(run.jobs())
    scenario.leaks = run.leaks()
    assert scenario.leaks == (expect_leaks or []), scenario.leaks


def first_line_with(text: str, *needles: str) -> str:
    for line in text.splitlines():
        if all(n in line for n in needles):
            return line.strip()
    return ""


def short(line: str, limit: int = 200) -> str:
    return line if len(line) <= limit else line[: limit - 3] + "..."


# ---- the scenarios ---------------------------------------------------------------------------------------


@pytest.mark.scenario("1", "worker SIGKILLed after cluster create, before deferral")
def test_worker_killed_before_deferral(scenario, start):
    scenario.expect("retry reattaches to the same cluster; success; 1 cluster, 1 job")
    run = start("fault_kill_before_defer")
    assert run.finish() == "success"
    ti = run.stack.task_instance(run.dag_id, run.run_id, "job")
    assert ti["try_number"] == 2, ti
    retry_log = run.log(2)
    assert "Reattaching to RayCluster" in retry_log, retry_log[-3000:]
    assert len(run.counter.clusters) == 1 and all(len(uids) == 1 for uids in run.counter.clusters.values())
    assert len(run.jobs()) == 1, run.jobs()
    record(scenario, run, f"success on try 2, {first_line_with(retry_log, 'Reattaching')}; clusters: 1")


@pytest.mark.scenario("1b", "worker SIGKILLed before deferral, no retry left")
def test_orphan_swept_by_the_next_run(scenario, start):
    scenario.expect("the cluster outlives the failed task; the next run of the task deletes it")
    killed = start("fault_orphan_sweep", conf={"kill": True})
    assert killed.finish() == "failed"
    (orphan,) = managed_clusters(killed.custom, killed.namespace, "dag_id=fault_orphan_sweep")
    name = orphan["metadata"]["name"]
    sweeper = start("fault_orphan_sweep", conf={"kill": False})
    assert sweeper.finish() == "success"
    line = first_line_with(sweeper.log(), f"Deleted RayCluster {killed.namespace}/{name}", "left behind")
    assert line, sweeper.log()[-3000:]
    record(scenario, sweeper, f"run 1 killed, {name} left up; run 2: {line}")
    assert scenario.jobs == 1


@pytest.mark.scenario("2", "worker SIGKILLed after the job is submitted")
def test_worker_killed_after_submission(scenario, start):
    scenario.expect("retry finds the same running job; success; 1 job")
    run = start("fault_kill_after_submit")
    first = run.counter.wait_for_job(run.task_key, "RUNNING")
    pid = int((run.stack.home / f"{run.dag_id}.try1.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    assert run.finish() == "success"
    retry_log = run.log(2)
    # RayCluster mode finds the earlier try's job; in RayJob mode the adopted RayJob carries its jobId.
    followed = (f"Reattaching to Ray job {first}", f"Ray job {first} already submitted; following it")
    assert any(line in retry_log for line in followed), retry_log[-3000:]
    assert run.jobs() == [first], run.jobs()
    record(scenario, run, f"try 1 killed (pid {pid}); try 2 followed {first}; success")


@pytest.mark.scenario("2b", "@task.ray worker SIGKILLed after the job is submitted")
def test_decorated_worker_killed_after_submission(scenario, start):
    scenario.expect("the retry follows the same job and returns that job's value as XCom; success; 1 job")
    run = start("fault_decorator_kill_after_submit")
    first = run.counter.wait_for_job(run.task_key, "RUNNING")
    # The value the job will return: the token it printed first, read from the job's own log.
    logs_url = f"http://{run.head_ip()}:8265/api/jobs/{first}/logs"
    deadline = time.monotonic() + 60
    while "FAULT_TOKEN " not in (text := json.loads(urllib.request.urlopen(logs_url, timeout=5).read())["logs"]):
        assert time.monotonic() < deadline, text[-2000:]
        time.sleep(0.5)
    token = text.split("FAULT_TOKEN ", 1)[1].split()[0]
    pid = int((run.stack.home / f"{run.dag_id}.try1.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    assert run.finish() == "success"
    ti = run.stack.task_instance(run.dag_id, run.run_id, "job")
    assert ti["try_number"] == 2, ti
    retry_log = run.log(2)
    # RayCluster mode finds the earlier try's job; in RayJob mode the adopted RayJob carries its jobId.
    followed = (f"Reattaching to Ray job {first}", f"Ray job {first} already submitted; following it")
    assert any(line in retry_log for line in followed), retry_log[-3000:]
    value = run.stack.xcom(run.dag_id, run.run_id, "job")
    assert value == {"token": token, "ticks": 30}, value
    assert "##flyray:" not in retry_log  # the frames were read, not shown
    assert run.jobs() == [first], run.jobs()
    record(
        scenario, run, f"try 1 killed (pid {pid}); try 2 followed {first}; XCom is that job's value ({token[:8]}...)"
    )


@pytest.mark.scenario("3", "triggerer SIGKILLed mid-wait and restarted")
def test_triggerer_killed(scenario, start):
    scenario.expect("the wait resumes in the new triggerer; success; 1 job")
    run = start("fault_triggerer_killed")
    run.counter.wait_for_job(run.task_key, "RUNNING")
    time.sleep(3)
    run.stack.restart("triggerer", kill=True)
    assert run.finish() == "success"
    assert "FLYRAY_RESULT ticked" in run.log()
    assert len(run.jobs()) == 1, run.jobs()
    record(scenario, run, "triggerer killed while the job ran; resumed; success")


@pytest.mark.scenario("4", "user marks the deferred task failed")
def test_user_marks_failed(scenario, start):
    scenario.expect("job stopped, cluster deleted, task failed")
    run = start("fault_user_kill")
    submission = run.counter.wait_for_job(run.task_key, "RUNNING")
    run.stack.api("PATCH", f"/api/v2/dags/{run.dag_id}/dagRuns/{run.run_id}/taskInstances/job", {"new_state": "failed"})
    killed = time.monotonic()
    while managed_clusters(run.custom, run.namespace, f"dag_id={run.dag_id}") and time.monotonic() - killed < 30:
        time.sleep(0.2)
    gone = time.monotonic() - killed
    assert f"Stopped Ray job {submission} (task killed)" in run.stack.trigger_logs(run.dag_id)
    assert run.state() == "failed"
    record(scenario, run, f"job stopped (trigger's on_kill); cluster gone {gone:.1f}s after the kill")


@pytest.mark.scenario("5", "execution_timeout reached while deferred")
def test_execution_timeout(scenario, start):
    scenario.expect('job stopped, cluster deleted, task failed with "timeout"')
    run = start("fault_timeout")
    submission = run.counter.wait_for_job(run.task_key, "RUNNING")
    assert run.finish() == "failed"
    log = run.log()
    assert "AirflowTaskTimeout" in log and "execution_timeout reached" in log, log[-3000:]
    line = first_line_with(log, "execution_timeout reached")
    assert f"Ray job {submission} stopped" in line, line
    record(scenario, run, line)


@pytest.mark.scenario("6a", "Ray job exits non-zero")
def test_job_fails(scenario, start):
    scenario.expect("task failed with the job's last log lines; cluster deleted")
    run = start("fault_job_fails")
    assert run.finish() == "failed"
    log = run.log()
    assert "FAILED" in log and "lines of the Ray job's log" in log and "FLYRAY_FAIL division went wrong" in log
    record(scenario, run, first_line_with(log, "FAILED"))


@pytest.mark.scenario("6b", "Ray job exits non-zero, delete_succeeded_cluster")
def test_job_fails_cluster_kept(scenario, start):
    scenario.expect("task failed; the failed job's cluster is kept for inspection")
    run = start("fault_job_fails_keep")
    assert run.finish() == "failed"
    name = run.cluster()["metadata"]["name"]
    assert "Keeping" in run.log()
    kept = [f"RayCluster {name}"]
    scenario.observe(f"failed; {name} kept (on_finish_action=delete_succeeded_cluster)")
    scenario.jobs = len(run.jobs())
    assert run.leaks(timeout=0)[:1] == kept
    run.custom.delete_namespaced_custom_object("ray.io", "v1", run.namespace, "rayclusters", name)
    scenario.leaks = run.leaks()
    assert scenario.leaks == []


@pytest.mark.scenario("7", "head container exits at once")
def test_head_crashes(scenario, start):
    scenario.expect("fails within startup_timeout with the container's reason; cluster deleted")
    run = start("fault_head_crash")
    started = time.monotonic()
    assert run.finish() == "failed"
    log = run.log()
    line = first_line_with(log, "did not start")
    assert "CrashLoopBackOff" in line and "last exit code" in line, log[-3000:]
    # The container's own last words (FallbackToLogsOnError): Ray's complaint about the bad parameter.
    assert "Resource quantities must be nonnegative" in log, log[-3000:]
    took = time.monotonic() - started
    assert took < 180
    record(scenario, run, f"failed after {took:.0f}s: {line}")
    assert scenario.jobs == 0


@pytest.mark.scenario("8", "worker group larger than the node")
def test_unschedulable(scenario, start):
    scenario.expect('fails fast with "Unschedulable" and the resources asked for')
    run = start("fault_unschedulable")
    started = time.monotonic()
    assert run.finish() == "failed"
    log = run.log()
    assert "Unschedulable" in log and "cpu=64" in log, log[-3000:]
    record(scenario, run, f"failed after {time.monotonic() - started:.0f}s: {first_line_with(log, 'Unschedulable')}")
    assert scenario.jobs == 0


KUBE_API_FAULTS = {
    "500": ("9a", "Kubernetes API answers 500 (x4 on RayCluster calls)"),
    "429": ("9b", "Kubernetes API answers 429 Retry-After: 2 (x3)"),
    "drop": ("9c", "Kubernetes API drops every connection for 8 s mid-job"),
}


@pytest.mark.parametrize("fault", list(KUBE_API_FAULTS))
@pytest.mark.scenario("9", "Kubernetes API faults")
def test_kube_api_faults(scenario, start, fault_proxy, fault):
    number, name = KUBE_API_FAULTS[fault]
    # Keep the prefixes a module that runs these rows again adds to the row (test_matrix_rayjob.py).
    scenario.number = scenario.number.removesuffix("9") + number
    scenario.name = scenario.name.removesuffix("Kubernetes API faults") + name
    scenario.expect("retried with backoff; success; 1 job")
    before = time.monotonic()
    if fault == "500":
        fault_proxy.fail(500, count=4, path_contains="rayclusters")
    elif fault == "429":
        fault_proxy.fail(429, count=3, retry_after="2")
    run = start("fault_kube_api")
    try:
        if fault == "drop":
            run.counter.wait_for_job(run.task_key, "RUNNING")
            fault_proxy.drop(seconds=8)
        assert run.finish() == "success"
    finally:
        fault_proxy.clear_faults()
    counts = fault_proxy.counts(since=before)
    assert counts["faulted"] >= {"500": 4, "429": 3, "drop": 1}[fault], counts
    assert len(run.jobs()) == 1, run.jobs()
    record(
        scenario, run, f"success; {counts['faulted']} requests faulted of {sum(counts.values()) - counts['faulted']}"
    )


@pytest.mark.scenario("10a", "dashboard unreachable for 20 s mid-job (head pod link cut)")
def test_dashboard_cut_then_back(scenario, start):
    scenario.expect("the trigger retries; success; 1 job")
    run = start("fault_dashboard_cut")
    run.counter.wait_for_job(run.task_key, "RUNNING")
    link = host_link_of(run.head())
    set_link(link, up=False)
    try:
        time.sleep(20)
    finally:
        set_link(link, up=True)
    assert run.finish() == "success"
    warned = run.stack.trigger_logs(run.dag_id).count("Ray dashboard unreachable")
    assert warned >= 1
    assert len(run.jobs()) == 1, run.jobs()
    record(scenario, run, f"link down 20 s; {warned} unreachable warnings; success")


@pytest.mark.scenario("10b", "dashboard unreachable for good (bound 20 s)")
def test_dashboard_cut_for_good(scenario, start):
    scenario.expect("task fails with 'unreachable' after the bound; cluster deleted")
    run = start("fault_dashboard_gone")
    run.counter.wait_for_job(run.task_key, "RUNNING")
    link = host_link_of(run.head())
    set_link(link, up=False)
    cut = time.monotonic()
    try:
        assert run.finish() == "failed"
    finally:
        with contextlib.suppress(Exception):
            set_link(link, up=True)
    log = run.log()
    line = first_line_with(log, "unreachable for")
    assert line, log[-3000:]
    record(scenario, run, f"failed {time.monotonic() - cut:.0f}s after the cut: {line}")


@pytest.mark.scenario("11", "RayCluster deleted by someone else mid-job")
def test_cluster_deleted(scenario, start):
    scenario.expect("task fails at once, saying the cluster was deleted")
    run = start("fault_cluster_deleted")
    run.counter.wait_for_job(run.task_key, "RUNNING")
    run.custom.delete_namespaced_custom_object(
        "ray.io", "v1", run.namespace, "rayclusters", run.cluster()["metadata"]["name"]
    )
    deleted = time.monotonic()
    run.wait_state({"failed", "success"}, timeout=60)
    took = time.monotonic() - deleted
    assert run.state() == "failed" and took < 20, took
    line = first_line_with(run.log(), "was deleted while the Ray job was running")
    assert line
    record(scenario, run, f"failed {took:.1f}s after the delete: {line}")


@pytest.mark.scenario("12", "RayCluster with the computed name exists, not ours")
def test_name_taken_by_someone_else(scenario, stack, start, custom, namespace):
    scenario.expect("refused, the other cluster untouched, nothing created")
    dag_id, run_id = "fault_not_ours", f"manual__{uuid.uuid4().hex[:8]}"
    name = cluster_name_for(TaskIdentity(dag_id=dag_id, task_id="job", run_id=run_id))
    theirs = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": name, "labels": {"owner": "someone-else"}},
        "spec": {
            "suspend": True,
            "headGroupSpec": {
                "rayStartParams": {},
                "template": {"spec": {"containers": [{"name": "ray-head", "image": "rayproject/ray:2.60.0"}]}},
            },
        },
    }
    created = custom.create_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters", theirs)
    try:
        run = start(dag_id, run_id=run_id)
        assert run.finish() == "failed"
        line = first_line_with(run.log(), "already exists and was not created by this task")
        assert line, run.log()[-3000:]
        after = custom.get_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters", name)
        assert after["metadata"]["uid"] == created["metadata"]["uid"]
        assert not after["metadata"].get("deletionTimestamp")
        assert after["metadata"]["labels"] == {"owner": "someone-else"} and after["spec"] == created["spec"]
        record(scenario, run, f"refused: {line}")
        assert scenario.jobs == 0
    finally:
        custom.delete_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters", name)


@pytest.mark.scenario("13", "two runs of the same DAG at once")
def test_two_runs_at_once(scenario, start):
    scenario.expect("two clusters, two jobs, both succeed, no collision")
    first, second = start("fault_two_runs"), start("fault_two_runs")
    assert first.finish() == "success" and second.finish() == "success"
    names = set(first.counter.clusters) | set(second.counter.clusters)
    assert len(names) == 2, names
    assert len(first.jobs()) == 1 and len(second.jobs()) == 1 and first.jobs() != second.jobs()
    scenario.observe(f"both succeeded on {sorted(names)}")
    scenario.jobs = len(first.jobs()) + len(second.jobs())
    scenario.leaks = first.leaks() + second.leaks()
    assert scenario.leaks == []


@pytest.mark.scenario("14", "job stopped from the Ray dashboard")
def test_stopped_in_dashboard(scenario, start):
    scenario.expect('task fails with "stopped"; cluster deleted')
    run = start("fault_stopped_in_dashboard")
    submission = run.counter.wait_for_job(run.task_key, "RUNNING")
    # What the dashboard's Stop button does.
    request = urllib.request.Request(f"http://{run.head_ip()}:8265/api/jobs/{submission}/stop", method="POST")
    assert json.loads(urllib.request.urlopen(request, timeout=10).read())["stopped"] is True
    stopped = time.monotonic()
    assert run.finish() == "failed"
    line = first_line_with(run.log(), "STOPPED")
    assert "stopped" in line.lower(), run.log()[-3000:]
    record(scenario, run, f"failed {time.monotonic() - stopped:.1f}s after the stop: {line}")
