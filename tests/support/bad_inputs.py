"""The bad-input catalogue (fault matrix row B): malformed inputs a DAG author or an admin can write.

Each case is an input the provider must refuse with a message naming the field and what is expected,
before anything is created. Two kinds, as a user meets them:

* ``parse``: the operator refuses it while the DAG file is parsed (what the dag-processor shows as an
  import error): ``dag_file(case)`` is a DAG file holding just that task.
* ``run``: the DAG parses; the task fails when it runs: a bad connection (``conn`` replaces extras of a
  valid connection), or a templated value that renders bad. ``run_dag()`` is one DAG with one task per
  case; each task records its exception through ``on_failure_callback``.

Used by tests/faults/test_bad_inputs.py; the generated DAG files import this module.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from typing import Any

import pendulum

DAG_ID = "flyray_bad_inputs"
GOOD_CONN = "bad_good"  # a valid connection (set by the test): the service account through the API proxy
START = pendulum.datetime(2026, 1, 1, tz="UTC")
SMALL_HEAD = {
    "requests": {"cpu": "1", "memory": "1Gi"},
    "ray_start_params": {"num-cpus": "1", "object-store-memory": "100000000"},
}
PARAMS = {
    "empty": "",
    "bad_ns": "Team_A",
    "env_text": "pip=numpy",
    "long_name": "c" * 60,
    "bad_address": "ray-head:8265",
}
# Filled by on_failure_callback in the process that runs the tasks (dag.test() runs them in-process).
FAILURES: dict[str, BaseException | None] = {}


@dataclass
class Case:
    id: str
    kind: str  # "parse" | "run"
    field: str  # the field the message must name
    expected: str  # words saying what is expected
    op: dict[str, Any] = field(default_factory=dict)  # operator kwargs over the defaults
    conn: dict[str, Any] | None = None  # run cases: connection extras over the good ones (None: good connection)
    what: str = ""
    conn_text: str | None = None  # run cases: the connection's whole `extra` text instead (e.g. not JSON)
    # @task.ray cases: the decorated function (a name in FUNCTIONS) and the call's arguments; ``op`` holds
    # the decorator's kwargs then.
    function: str | None = None
    call: tuple[tuple[Any, ...], dict[str, Any]] = ((), {})

    @property
    def task_id(self) -> str:
        return self.id.replace("-", "_")

    @property
    def conn_id(self) -> str:
        return f"bad_{self.task_id}" if self.conn is not None or self.conn_text is not None else GOOD_CONN


def worker(**kwargs: Any) -> dict[str, Any]:
    return {"worker_node_config": [{"group_name": "cpu", **kwargs}], "head_node_config": SMALL_HEAD}


# One line a case, as a table.
# fmt: off
CASES: list[Case] = [
    # ---- names ------------------------------------------------------------------------------------
    Case("group-upper", "parse", "group_name", "lowercase", {"ray_job_config": worker(group_name="CPU_Workers")}),
    Case("group-too-long", "parse", "group_name", "1-63", {"ray_job_config": worker(group_name="g" * 64)}),
    Case("group-dup", "parse", "group_name", "unique", {"ray_job_config": {"worker_node_config": [{"group_name": "a"}, {"group_name": "a"}]}}),
    Case("cluster-name-too-long", "run", "cluster_name", "1-53 lowercase", {"cluster_name": "{{ params.long_name }}"}),
    Case("cluster-name-invalid", "run", "cluster_name", "starting with a letter", {"cluster_name": "My_Cluster"}),
    Case("cluster-name-empty", "run", "cluster_name", "leave it unset", {"cluster_name": "{{ params.empty }}"}),
    Case("cluster-name-missing", "run", "cluster_name", "does not exist", {"cluster_name": "no-such-cluster"}),
    # ---- replicas ----------------------------------------------------------------------------------
    Case("replicas-negative", "parse", "replicas", "0 or more", {"ray_job_config": worker(replicas=-1)}),
    Case("min-gt-max", "parse", "min_replicas", "greater than max_replicas", {"ray_job_config": worker(replicas=2, min_replicas=3, max_replicas=1)}),
    Case("replicas-outside", "parse", "replicas", "between min_replicas", {"ray_job_config": worker(replicas=5, max_replicas=2)}),
    Case("replicas-string", "parse", "replicas", "whole number", {"ray_job_config": worker(replicas="2")}),
    # ---- quantities and resources ------------------------------------------------------------------
    Case("cpu-2-cores", "parse", "requests['cpu']", "not a valid non-negative Kubernetes quantity", {"ray_job_config": worker(requests={"cpu": "2 cores"})}),
    Case("memory-negative", "parse", "limits['memory']", "non-negative Kubernetes quantity", {"ray_job_config": worker(limits={"memory": "-1Gi"})}),
    Case("resource-unknown", "parse", "requests['cpus']", "unknown resource", {"ray_job_config": {"head_node_config": {"requests": {"cpus": "1"}}}}),
    Case("ray-start-dashes", "parse", "ray_start_params['--num-cpus']", "without dashes", {"ray_job_config": {"head_node_config": {"ray_start_params": {"--num-cpus": "1"}}}}),
    Case("image-space", "parse", "head_node_config.image", "image reference", {"ray_job_config": {"head_node_config": {"image": "ray latest"}}}),
    Case("pod-template-path", "parse", "pod_template", "pod template dict", {"ray_job_config": {"head_node_config": {"pod_template": "pod.yaml"}}}),
    # ---- unknown fields and wrong types in dict configs ----------------------------------------------
    Case("config-unknown-key", "parse", "ray_job_config", "unknown keys ['workers']", {"ray_job_config": {"workers": []}}),
    Case("worker-unknown-key", "parse", "worker_node_config[0]", "unknown keys ['replica']", {"ray_job_config": {"worker_node_config": [{"group_name": "a", "replica": 2}]}}),
    Case("head-unknown-key", "parse", "head_node_config", "unknown keys ['cpu']", {"ray_job_config": {"head_node_config": {"cpu": "1"}}}),
    Case("config-wrong-type", "parse", "ray_job_config", "RayJobConfig or a dict", {"ray_job_config": "big"}),
    Case("autoscaling-yes", "parse", "enable_autoscaling", "True or False", {"ray_job_config": {"enable_autoscaling": "yes"}}),
    Case("cpus-negative", "parse", "entrypoint_num_cpus", "number >= 0", {"entrypoint_num_cpus": -1}),
    Case("memory-fraction", "parse", "entrypoint_memory", "whole number >= 0", {"entrypoint_memory": 1.5}),
    Case("poll-zero", "parse", "poll_interval", "seconds > 0", {"poll_interval": 0}),
    Case("startup-text", "parse", "startup_timeout", "seconds > 0", {"startup_timeout": "10m"}),
    # ---- entrypoint ----------------------------------------------------------------------------------
    Case("entrypoint-empty", "parse", "entrypoint", "non-empty shell command", {"entrypoint": "  "}),
    Case("entrypoint-renders-empty", "run", "entrypoint", "rendered to an empty command", {"entrypoint": "{{ params.empty }}"}),
    # ---- runtime_env ---------------------------------------------------------------------------------
    Case("runtime-env-list", "parse", "runtime_env", "expected a dict", {"ray_job_config": {"runtime_env": ["numpy"]}}),
    Case("runtime-env-renders-text", "run", "runtime_env", "expected a dict like", {"runtime_env": "{{ params.env_text }}"}),
    Case("runtime-env-unknown-key", "run", "runtime_env", "unknown keys ['pipp']", {"runtime_env": {"pipp": ["numpy"]}}),
    Case("runtime-env-vars-int", "run", "runtime_env.env_vars", "string to string", {"runtime_env": {"env_vars": {"A": 1}}}),
    Case("runtime-env-twice", "run", "runtime_env", "keep one of them", {"runtime_env": {"pip": ["x"]}, "ray_job_config": {"runtime_env": {"pip": ["y"]}, "head_node_config": SMALL_HEAD}}),
    Case("config-runtime-env-text", "parse", "ray_job_config.runtime_env", "got a str", {"ray_job_config": {"runtime_env": "{{ params.env_text }}"}}),
    Case("working-dir-missing", "run", "runtime_env.working_dir", "does not exist on the Airflow worker", {"runtime_env": {"working_dir": "no_such_project"}}),
    Case("py-module-wrong-kind", "run", "runtime_env.py_modules[1]", "a directory, a .py, .zip or .whl file", {"runtime_env": {"py_modules": ["s3://bucket/ok.zip", "/etc/hostname"]}}),
    Case("metadata-reserved", "run", "metadata", "reserved", {"metadata": {"airflow_dag_id": "x"}}),
    # ---- lifecycle -----------------------------------------------------------------------------------
    Case("on-finish-unknown", "parse", "on_finish_action", "expected one of 'delete_cluster'", {"on_finish_action": "delete"}),
    Case("keep-vs-shutdown", "parse", "on_finish_action", "contradicts", {"on_finish_action": "keep_cluster", "ray_job_config": {"shutdown_after_job_finishes": True}}),
    Case("ttl-vs-keep-forever", "parse", "ttl_seconds_after_finished", "set only one", {"ray_job_config": {"shutdown_after_job_finishes": False, "ttl_seconds_after_finished": 60}}),
    Case("no-wait-transient", "run", "wait_for_completion", "on_finish_action='keep_cluster'", {"wait_for_completion": False}),
    # ---- pools (reuse=) ------------------------------------------------------------------------------
    Case("reuse-scope", "parse", "reuse.scope", "expected one of ['dag_run', 'global']", {"reuse": {"scope": "run"}}),
    Case("reuse-ttl-negative", "parse", "reuse.idle_ttl", "seconds >= 0", {"reuse": {"idle_ttl": -5}}),
    Case("reuse-unknown-field", "parse", "reuse", "unknown fields ['ttl']", {"reuse": {"ttl": 60}}),
    Case("reuse-and-on-finish", "parse", "on_finish_action", "cannot be set with reuse", {"reuse": {}, "on_finish_action": "keep_cluster"}),
    Case("reuse-and-cluster-name", "run", "reuse", "remove reuse or cluster_name", {"reuse": {}, "cluster_name": "existing"}),
    Case("reuse-no-wait", "run", "wait_for_completion", "nothing would hold the pool's cluster", {"reuse": {}, "wait_for_completion": False}),
    # ---- RayJob mode (kuberay_resource=) -------------------------------------------------------------
    Case("kuberay-resource-unknown", "parse", "kuberay_resource", "'RayCluster' (default) or 'RayJob'", {"kuberay_resource": "RayService"}),
    Case("submission-mode-unknown", "parse", "submission_mode", "expected one of 'InteractiveMode'", {"kuberay_resource": "RayJob", "submission_mode": "SidecarMode"}),
    Case("submission-mode-raycluster", "parse", "submission_mode", "applies to kuberay_resource='RayJob' only", {"kuberay_resource": "RayCluster", "submission_mode": "HTTPMode"}),
    Case("rayjob-and-reuse", "run", "reuse", "KubeRay owns that cluster's lifecycle", {"kuberay_resource": "RayJob", "reuse": {}}),
    Case("rayjob-and-address", "run", "address", "KubeRay owns that cluster's lifecycle", {"kuberay_resource": "RayJob", "address": "http://ray-head:8265"}),
    Case("conn-kuberay-resource", "run", "connection.extra.kuberay_resource", "'RayCluster' (default) or 'RayJob'", conn={"kuberay_resource": "RayService"}),
    # ---- where: address, namespace -------------------------------------------------------------------
    Case("address-no-scheme", "run", "address", "http(s) URL", {"address": "{{ params.bad_address }}"}),
    Case("address-and-cluster", "run", "cluster_name", "not both", {"address": "http://ray-head:8265", "cluster_name": "existing"}),
    Case("address-empty", "run", "address", "leave it unset", {"address": "{{ params.empty }}"}),
    Case("namespace-renders-bad", "run", "namespace", "not a valid Kubernetes namespace", {"namespace": "{{ params.bad_ns }}"}),
    Case("namespace-no-rbac", "run", "namespace", "Role", {"namespace": "{{ params.other_ns }}"}),
    # ---- the connection ------------------------------------------------------------------------------
    Case("conn-backend", "run", "connection.extra.backend", "'kubernetes' or 'local'", conn={"backend": "kuberay"}),
    Case("conn-access", "run", "connection.extra.dashboard_access", "expected one of 'service'", conn={"dashboard_access": "ingress"}),
    Case("conn-address-missing", "run", "connection.extra.dashboard_address", "required when dashboard_access is 'address'", conn={"dashboard_access": "address"}),
    Case("conn-address-bad", "run", "connection.extra.dashboard_address", "http(s) URL", conn={"dashboard_access": "address", "dashboard_address": "ray:8265"}),
    Case("conn-template", "run", "connection.extra.dashboard_url_template", "unknown placeholders ['pod']", conn={"dashboard_url_template": "https://ray.example.com/{pod}"}),
    Case("conn-verify-tls", "run", "connection.extra.verify_tls", "true or false", conn={"verify_tls": "maybe"}),
    Case("conn-namespace", "run", "connection.extra.namespace", "not a valid Kubernetes namespace", conn={"namespace": "Team_A"}),
    Case("conn-token-number", "run", "connection.extra.dashboard_token", "expected a string", conn={"dashboard_token": 12345}),
    Case("conn-typo", "run", "connection.extra.dashbaord_access", "did you mean 'dashboard_access'", conn={"dashbaord_access": "proxy"}),
    Case("conn-kubeconfig-missing", "run", "connection.extra.kube_config_path", "expected the path of a kubeconfig", conn={"kube_config_path": "/nonexistent/kubeconfig"}),
    Case("conn-undefined", "run", "conn_id `no_such_flyray_conn`", "isn't defined", {"ray_conn_id": "no_such_flyray_conn"}),
    # Airflow reads extra text that is not JSON as {}: it used to select the Kubernetes backend silently.
    Case("conn-extra-not-json", "run", "connection.extra", "is not valid JSON", conn_text="{backend: local}"),
    # @task.ray ------------------------------------------------------------------------------------------
    Case("task-lambda", "parse", "python_callable", "define the function with `def`", function="lambda"),
    Case("task-async", "parse", "python_callable", "is `async def`", function="async"),
    Case("task-closure", "parse", "python_callable", "variables of its enclosing function (scale)", function="closure"),
    Case("task-entrypoint", "parse", "entrypoint", "it takes no entrypoint", {"entrypoint": "echo hi"}, function="plain"),
    Case("task-arg-datetime", "run", "op_args[0]", "argument 'value' (datetime.datetime) cannot be sent to the Ray job as JSON", function="plain", call=((datetime.datetime(2026, 1, 2),), {})),
    Case("task-arg-set", "run", "op_kwargs['other']", "argument 'other'['tags'] (set) cannot be sent", function="plain", call=((1,), {"other": {"tags": {"a"}}})),
    Case("task-arg-int-key", "run", "op_kwargs['other']", "a key of type int: JSON keys are strings", function="plain", call=((), {"other": {1: "one"}})),
    Case("task-args-too-big", "run", "op_args/op_kwargs", "fit in a Ray job's environment", function="plain", call=(("x" * 130_000,), {})),
    Case("task-env-clash", "run", "runtime_env.env_vars", "are set by @task.ray; rename them", {"runtime_env": {"env_vars": {"FLYRAY_RESULT_MARKER": "mine"}}}, function="plain"),
]
# fmt: on

for case in CASES:
    case.what = case.what or case.id.replace("-", " ")
assert len({c.id for c in CASES}) == len(CASES)


# @task.ray cases' functions (module level, as in a DAG file).
def plain(value: Any = None, other: Any = None) -> Any:
    return value


async def async_function() -> None:
    pass


def closure() -> Any:
    scale = 2

    def scaled(value: int) -> int:
        return value * scale

    return scaled


FUNCTIONS: dict[str, Any] = {
    "plain": plain,
    "lambda": lambda: None,
    "async": async_function,
    "closure": closure(),
}


def connections(good_extra: dict[str, Any]) -> dict[str, str]:
    """AIRFLOW_CONN_* variables: the good connection and one per bad-connection case."""
    env = {f"AIRFLOW_CONN_{GOOD_CONN.upper()}": json.dumps({"conn_type": "flyray", "extra": good_extra})}
    for case in CASES:
        if case.conn is not None or case.conn_text is not None:
            extra: Any = case.conn_text if case.conn_text is not None else {**good_extra, **(case.conn or {})}
            env[f"AIRFLOW_CONN_{case.conn_id.upper()}"] = json.dumps({"conn_type": "flyray", "extra": extra})
    return env


def record_failure(context: Any) -> None:
    FAILURES[context["ti"].task_id] = context.get("exception")


def operator(case: Case) -> Any:
    from airflow_provider_flyray import FlyteRayOperator

    kwargs: dict[str, Any] = {
        "task_id": case.task_id,
        "entrypoint": "echo should-never-run",
        "ray_job_config": {"head_node_config": SMALL_HEAD},
        "ray_conn_id": case.conn_id,
        "deferrable": True,
        "startup_timeout": 30,
        "retries": 0,
        "on_failure_callback": record_failure,
    }
    kwargs.update(case.op)
    if case.function is not None:
        from airflow_provider_flyray import ray_task

        del kwargs["entrypoint"]
        kwargs.update(case.op)  # a case's own entrypoint stays: the decorator must refuse it
        args, call_kwargs = case.call
        return ray_task(**kwargs)(FUNCTIONS[case.function])(*args, **call_kwargs)
    return FlyteRayOperator(**kwargs)


def parse_dag(case_id: str) -> Any:
    """The DAG file of a parse case: its only task is the bad operator."""
    from airflow.sdk import DAG

    case = next(c for c in CASES if c.id == case_id)
    with DAG(f"bad_parse_{case.task_id}", schedule=None, start_date=START, catchup=False) as dag:
        operator(case)
    return dag


def run_dag(other_namespace: str = "default") -> Any:
    """One DAG with a task per run case (independent tasks, no retries)."""
    from airflow.sdk import DAG

    params = {**PARAMS, "other_ns": other_namespace}
    with DAG(DAG_ID, schedule=None, start_date=START, catchup=False, params=params) as dag:
        for case in CASES:
            if case.kind == "run":
                operator(case)
    return dag


def dag_file(case: Case | None) -> str:
    """Source of a DAG file: one parse case, or (None) the run DAG (its namespace comes from the env)."""
    header = "# An airflow DAG file (the DagBag's safe mode parses only files that say so).\n"
    if case is None:
        return header + (
            "import os\nfrom tests.support.bad_inputs import run_dag\n"
            "dag = run_dag(os.environ.get('FLYRAY_BAD_OTHER_NS', 'default'))\n"
        )
    return header + f"from tests.support.bad_inputs import parse_dag\ndag = parse_dag({case.id!r})\n"
