"""DAGs of the fault matrix (tests/faults/test_matrix.py), run by a real Airflow against the control plane.

Two operators here inject a fault from inside the worker, because no outside signal can hit the
0.1 s between "cluster created" and "deferred" (scenario 1) or name the worker process (scenario 2);
the fault itself is a real SIGKILL of the real task process.
"""

from __future__ import annotations

import os
import signal
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_flyray import FlyteRayOperator, HeadNodeConfig, RayJobConfig, WorkerNodeConfig

START = pendulum.datetime(2026, 1, 1, tz="UTC")
SMALL = {"requests": {"cpu": "1", "memory": "1Gi"}}
HEAD = HeadNodeConfig(**SMALL, ray_start_params={"num-cpus": "1", "object-store-memory": "100000000"})
CONFIG = RayJobConfig(head_node_config=HEAD)


def ticks(seconds: int) -> str:
    return f"bash -c 'for i in $(seq {seconds}); do echo tick $i; sleep 1; done; echo FLYRAY_RESULT ticked'"


class KillBeforeDeferral(FlyteRayOperator):
    """Fault injection (scenario 1): on the first try, SIGKILL this worker after the cluster exists and
    just before it would defer, as an OOM kill or a lost node would."""

    def execute(self, context: Any) -> Any:
        self._kill = context["ti"].try_number == 1 and context["dag_run"].conf.get("kill", True)
        return super().execute(context)

    def defer(self, **kwargs: Any) -> Any:  # type: ignore[override]
        if self._kill:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().defer(**kwargs)


class TellsItsPid(FlyteRayOperator):
    """Test aid (scenario 2): writes the worker's pid where the test finds it, so the test can SIGKILL
    the real task process while it waits for the job."""

    def execute(self, context: Any) -> Any:
        ti = context["ti"]
        Path(os.environ["AIRFLOW_HOME"], f"{ti.dag_id}.try{ti.try_number}.pid").write_text(str(os.getpid()))
        return super().execute(context)


def tell_pid(context: Any) -> None:
    """Test aid (scenario 2b), the ``on_execute_callback`` of a ``@task.ray`` task (the same process as
    its ``execute``): TellsItsPid's pid file, for a decorated task."""
    ti = context["ti"]
    Path(os.environ["AIRFLOW_HOME"], f"{ti.dag_id}.try{ti.try_number}.pid").write_text(str(os.getpid()))


def fault_dag(dag_id: str, operator: type[FlyteRayOperator] = FlyteRayOperator, **kwargs: Any) -> DAG:
    defaults = {
        "task_id": "job",
        "entrypoint": ticks(20),
        "ray_job_config": CONFIG,
        "ray_conn_id": "ray_kube",
        "deferrable": True,
        "poll_interval": 2,
        "startup_timeout": 240,
        "retries": 0,
    }
    with DAG(dag_id, schedule=None, start_date=START, catchup=False, max_active_runs=4) as dag:
        operator(**{**defaults, **kwargs})
    return dag


# 1, 2: the worker is SIGKILLed; the retry must reattach (no second cluster, no second job).
fault_dag("fault_kill_before_defer", KillBeforeDeferral, retries=1, retry_delay=timedelta(seconds=1))
# 1b: the same with no retry left: the cluster stays up until the next run of the task sweeps it.
fault_dag("fault_orphan_sweep", KillBeforeDeferral, entrypoint=ticks(5))
fault_dag(
    "fault_kill_after_submit",
    TellsItsPid,
    deferrable=False,
    entrypoint=ticks(30),
    retries=1,
    retry_delay=timedelta(seconds=1),
)
# 2b: the same for a @task.ray function: the retry must return the first try's job's value.
with DAG("fault_decorator_kill_after_submit", schedule=None, start_date=START, catchup=False, max_active_runs=4):

    @task.ray(
        task_id="job",
        ray_job_config=CONFIG,
        ray_conn_id="ray_kube",
        deferrable=False,
        poll_interval=2,
        startup_timeout=240,
        retries=1,
        retry_delay=timedelta(seconds=1),
        on_execute_callback=tell_pid,
    )
    def ticking_function(seconds: int) -> dict[str, Any]:
        import time
        import uuid

        token = uuid.uuid4().hex  # new in every job: the value says which job made it
        print(f"FAULT_TOKEN {token}", flush=True)
        for i in range(seconds):
            print(f"tick {i + 1}", flush=True)
            time.sleep(1)
        return {"token": token, "ticks": seconds}

    ticking_function(30)
# 3: the triggerer is SIGKILLed mid-wait and started again.
fault_dag("fault_triggerer_killed", entrypoint=ticks(30))
# 4, 5: the user marks the deferred task failed; execution_timeout while deferred.
fault_dag("fault_user_kill", entrypoint="sleep 600")
fault_dag("fault_timeout", entrypoint="sleep 600", execution_timeout=timedelta(seconds=60))
# 6: the job exits non-zero (deleted by default; kept by delete_succeeded_cluster).
FAILING = "bash -c 'echo preparing; echo FLYRAY_FAIL division went wrong >&2; exit 3'"
fault_dag("fault_job_fails", entrypoint=FAILING)
fault_dag("fault_job_fails_keep", entrypoint=FAILING, on_finish_action="delete_succeeded_cluster")
# 7: the head's command exits at once (an invalid ray start parameter).
fault_dag(
    "fault_head_crash",
    ray_job_config=RayJobConfig(head_node_config=HeadNodeConfig(**SMALL, ray_start_params={"num-cpus": "-1"})),
    startup_timeout=180,
)
# 8: a worker group larger than the node.
fault_dag(
    "fault_unschedulable",
    ray_job_config=RayJobConfig(
        head_node_config=HEAD,
        worker_node_config=[WorkerNodeConfig(group_name="huge", replicas=1, requests={"cpu": "64", "memory": "1Gi"})],
    ),
)
# 9: the Kubernetes API (through the fault proxy) answers 500 / 429 or drops connections.
fault_dag("fault_kube_api", ray_conn_id="ray_faulty", entrypoint=ticks(15))
# 10: the head pod's network link is cut for a while (a) or for good (b).
fault_dag("fault_dashboard_cut", entrypoint=ticks(45))
fault_dag("fault_dashboard_gone", entrypoint=ticks(120), dashboard_unreachable_timeout=20)
# 11: someone deletes the RayCluster mid-job.
fault_dag("fault_cluster_deleted", entrypoint="sleep 600")
# 12: a RayCluster with the computed name exists and is not ours.
fault_dag("fault_not_ours")
# 13: two runs at once.
fault_dag("fault_two_runs", entrypoint=ticks(10))
# 14: the job is stopped from the Ray dashboard.
fault_dag("fault_stopped_in_dashboard", entrypoint="sleep 600")
