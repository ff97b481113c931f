"""Operator conventions: templated fields verbatim, no I/O in __init__, defaults, mapping, trigger kwargs."""

from __future__ import annotations

import inspect
import json

import pendulum
import pytest
from airflow.providers.common.compat.sdk import conf
from airflow.sdk import DAG

from airflow_provider_flyray import FlyteRayOperator, RayJobConfig, RayJobTrigger
from airflow_provider_flyray.cluster import ClusterRef
from airflow_provider_flyray.errors import ConfigError
from airflow_provider_flyray.jobs_api import JobSubmission


def test_templated_fields_are_assigned_verbatim():
    op = FlyteRayOperator(
        task_id="t",
        entrypoint="python train.py --epochs {{ params.epochs }}",
        runtime_env={"env_vars": {"RUN": "{{ run_id }}"}},
        metadata={"k": "{{ ds }}"},
        cluster_name="{{ params.cluster }}",
        namespace="{{ params.ns }}",
        address=None,
        cluster="{{ ti.xcom_pull('ray_cluster') }}",
    )
    assert set(FlyteRayOperator.template_fields) == {
        "entrypoint",
        "runtime_env",
        "metadata",
        "cluster_name",
        "namespace",
        "address",
        "cluster",
    }
    assert op.cluster == "{{ ti.xcom_pull('ray_cluster') }}"
    assert op.entrypoint == "python train.py --epochs {{ params.epochs }}"
    assert op.runtime_env == {"env_vars": {"RUN": "{{ run_id }}"}}
    assert op.metadata == {"k": "{{ ds }}"}
    assert (op.cluster_name, op.namespace) == ("{{ params.cluster }}", "{{ params.ns }}")


def test_init_makes_no_connection_lookups_or_network_calls():
    # An id that exists nowhere: looking it up (or calling Kubernetes) would raise here.
    op = FlyteRayOperator(task_id="t", entrypoint="echo", ray_conn_id="no_such_connection_anywhere")
    assert op.ray_conn_id == "no_such_connection_anywhere"


def test_deferrable_defaults_to_the_operators_setting():
    default = inspect.signature(FlyteRayOperator.__init__).parameters["deferrable"].default
    assert default == conf.getboolean("operators", "default_deferrable", fallback=False)


def test_config_section_defaults():
    op = FlyteRayOperator(task_id="t", entrypoint="echo")
    assert op.poll_interval == conf.getfloat("flyray", "poll_interval", fallback=5.0)
    assert op.startup_timeout == conf.getfloat("flyray", "startup_timeout", fallback=600.0)
    assert op.lifecycle.on_finish_action.value == "delete_cluster"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"entrypoint": ""}, "entrypoint"),
        ({"entrypoint": "   "}, "entrypoint"),
        ({"entrypoint_num_cpus": -1}, "entrypoint_num_cpus"),
        ({"entrypoint_num_gpus": "1"}, "entrypoint_num_gpus"),
        ({"entrypoint_memory": 1.5}, "entrypoint_memory"),
        ({"entrypoint_resources": {"TPU": -2}}, "entrypoint_resources['TPU']"),
        ({"entrypoint_resources": ["TPU"]}, "entrypoint_resources"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"startup_timeout": -1}, "startup_timeout"),
        ({"on_finish_action": "delete"}, "on_finish_action"),
        ({"ray_job_config": 42}, "ray_job_config"),
        ({"ray_conn_id": ""}, "ray_conn_id"),
        (
            {"ray_job_config": RayJobConfig(shutdown_after_job_finishes=False), "on_finish_action": "delete_cluster"},
            "on_finish_action",
        ),
        ({"wait_for_completion": "no"}, "wait_for_completion"),
    ],
)
def test_bad_operator_arguments_fail_at_parse_time(kwargs, field):
    kwargs = {"task_id": "t", "entrypoint": "echo", **kwargs}
    with pytest.raises(ConfigError) as info:
        FlyteRayOperator(**kwargs)
    assert info.value.field == field


def test_dynamic_task_mapping_builds_a_mapped_operator():
    with DAG("mapped", schedule=None, start_date=pendulum.datetime(2026, 1, 1)):
        mapped = FlyteRayOperator.partial(task_id="m", ray_conn_id="ray_local").expand(entrypoint=["echo 1", "echo 2"])
    assert type(mapped).__name__ == "MappedOperator"
    assert mapped.operator_class is FlyteRayOperator or mapped.operator_class.__name__ == "FlyteRayOperator"


def test_extra_links_are_declared():
    names = {link.name for link in FlyteRayOperator.operator_extra_links}
    assert names == {"Ray Dashboard", "Ray Job"}


def test_trigger_kwargs_round_trip_and_hold_no_credentials():
    ref = ClusterRef("raycluster", name="c", namespace="ns", owned=True)
    trigger = RayJobTrigger(
        ray_conn_id="ray_default",
        cluster=ref.to_dict(),
        submission=JobSubmission("s", "echo", runtime_env={"env_vars": {"A": "1"}}).to_dict(),
        owner_key="d|t|r|-1",
        deadline=123.0,
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_flyray.triggers.ray_job.RayJobTrigger"
    assert RayJobTrigger(**kwargs).serialize() == (classpath, kwargs)
    text = json.dumps(kwargs)  # plain JSON: nothing the metadata DB cannot store
    for secret_field in ("dashboard_token", "kube_config", "Authorization", "Bearer"):
        assert secret_field not in text
