"""The configuration model: validation names the field, manifests have what KubeRay needs."""

from __future__ import annotations

import pytest

from airflow_provider_flyray.config import (
    DEFAULT_RAY_IMAGE,
    HeadNodeConfig,
    OnFinishAction,
    RayJobConfig,
    WorkerNodeConfig,
    cpu_quantity,
    ray_job_config_from,
    validate_runtime_env,
)
from airflow_provider_flyray.errors import ConfigError
from airflow_provider_flyray.manifest import build_raycluster_manifest

LABELS = {"app.kubernetes.io/managed-by": "airflow-provider-flyray", "dag_id": "d"}

BAD_INPUTS = [
    # (factory, field named in the error, words the message must contain)
    (lambda: WorkerNodeConfig(group_name="CPU"), "group_name", "lowercase"),
    (lambda: WorkerNodeConfig(group_name="a" * 64), "group_name", "1-63"),
    (lambda: WorkerNodeConfig(group_name="-cpu"), "group_name", "starting and ending"),
    (lambda: WorkerNodeConfig(group_name="cpu", replicas=-1), "replicas", "0 or more"),
    (lambda: WorkerNodeConfig(group_name="cpu", replicas=1.5), "replicas", "whole number"),
    (lambda: WorkerNodeConfig(group_name="cpu", replicas=True), "replicas", "whole number"),
    (
        lambda: WorkerNodeConfig(group_name="cpu", replicas=2, min_replicas=3, max_replicas=1),
        "min_replicas",
        "greater than",
    ),
    (lambda: WorkerNodeConfig(group_name="cpu", replicas=5, max_replicas=2), "replicas", "between"),
    (lambda: WorkerNodeConfig(group_name="cpu", replicas=1, min_replicas=2), "replicas", "between"),
    (lambda: WorkerNodeConfig(group_name="cpu", requests={"cpu": "two"}), "requests['cpu']", "quantity"),
    (lambda: WorkerNodeConfig(group_name="cpu", requests={"cpu": "-1"}), "requests['cpu']", "non-negative"),
    (lambda: WorkerNodeConfig(group_name="cpu", requests={"cpu": -1}), "requests['cpu']", "non-negative"),
    (lambda: WorkerNodeConfig(group_name="cpu", limits={"memory": "4GB"}), "limits['memory']", "quantity"),
    (lambda: WorkerNodeConfig(group_name="cpu", requests={"cpus": "1"}), "requests['cpus']", "unknown resource"),
    (lambda: WorkerNodeConfig(group_name="cpu", requests=["cpu"]), "requests", "dict"),
    (
        lambda: WorkerNodeConfig(group_name="cpu", ray_start_params={"--num-cpus": "1"}),
        "ray_start_params",
        "without dashes",
    ),
    (lambda: WorkerNodeConfig(group_name="cpu", ray_start_params={"num-cpus": [1]}), "ray_start_params", "string"),
    (lambda: WorkerNodeConfig(group_name="cpu", image="ray image"), "image", "image reference"),
    (lambda: HeadNodeConfig(pod_template={"spec": {}, "specs": {}}), "pod_template", "unknown keys"),
    (lambda: HeadNodeConfig(pod_template={"spec": {"containers": "ray"}}), "pod_template.spec.containers", "list"),
    (lambda: HeadNodeConfig(pod_template="pod.yaml"), "pod_template", "dict"),
    (lambda: HeadNodeConfig(requests={"memory": "1.5.2Gi"}), "head_node_config.requests['memory']", "quantity"),
    (lambda: RayJobConfig(worker_node_config=[WorkerNodeConfig("a"), WorkerNodeConfig("a")]), "group_name", "unique"),
    (lambda: RayJobConfig(worker_node_config=["cpu"]), "worker_node_config[0]", "WorkerNodeConfig"),
    (
        lambda: RayJobConfig(worker_node_config=[{"group_name": "a", "replica": 2}]),
        "worker_node_config[0]",
        "unknown keys",
    ),
    (lambda: RayJobConfig(head_node_config="big"), "head_node_config", "HeadNodeConfig"),
    (lambda: RayJobConfig(enable_autoscaling="yes"), "enable_autoscaling", "True or False"),
    (lambda: RayJobConfig(autoscaler_options={"idleTimeoutSeconds": 60}), "autoscaler_options", "enable_autoscaling"),
    (lambda: RayJobConfig(runtime_env=["numpy"]), "runtime_env", "dict"),
    (lambda: RayJobConfig(runtime_env="{{ params.env }}"), "ray_job_config.runtime_env", "got a str"),
    (lambda: RayJobConfig(runtime_env={"pipp": ["numpy"]}), "runtime_env", "unknown keys"),
    (lambda: RayJobConfig(runtime_env={"env_vars": {"A": 1}}), "runtime_env.env_vars", "string to string"),
    (lambda: RayJobConfig(runtime_env={"pip": [1, 2]}), "runtime_env.pip", "requirement"),
    (lambda: RayJobConfig(runtime_env={"working_dir": 3}), "runtime_env.working_dir", "string"),
    (lambda: RayJobConfig(address=""), "address", "URL"),
    (lambda: RayJobConfig(ttl_seconds_after_finished=-5), "ttl_seconds_after_finished", ">= 0"),
    (
        lambda: RayJobConfig(shutdown_after_job_finishes=False, ttl_seconds_after_finished=60),
        "ttl_seconds_after_finished",
        "contradicts",
    ),
    (lambda: RayJobConfig(shutdown_after_job_finishes="no"), "shutdown_after_job_finishes", "True or False"),
    (lambda: RayJobConfig(address="http://h:8265", shutdown_after_job_finishes=True), "address", "lifecycle"),
    (lambda: RayJobConfig(ray_cluster_spec={"workerGroupSpecs": []}), "ray_cluster_spec", "headGroupSpec"),
    (
        lambda: RayJobConfig(ray_cluster_spec={"headGroupSpec": {}}, head_node_config=HeadNodeConfig()),
        "ray_cluster_spec",
        "not both",
    ),
    (lambda: ray_job_config_from(42), "ray_job_config", "RayJobConfig"),
    (lambda: ray_job_config_from({"workers": []}), "ray_job_config", "unknown keys"),
    (lambda: OnFinishAction.parse("delete"), "on_finish_action", "delete_cluster"),
]


@pytest.mark.parametrize(("factory", "field", "words"), BAD_INPUTS)
def test_bad_input_names_the_field_and_the_fix(factory, field, words):
    with pytest.raises(ConfigError) as info:
        factory()
    assert field in info.value.field, info.value
    assert words in str(info.value), info.value


def test_flyte_style_config_renders_a_kuberay_manifest():
    config = RayJobConfig(
        head_node_config=HeadNodeConfig(requests={"cpu": "1", "memory": "2Gi"}),
        worker_node_config=[WorkerNodeConfig(group_name="cpu", replicas=2, requests={"cpu": "2", "gpu": 1})],
        runtime_env={"pip": ["numpy"], "env_vars": {"MODE": "full"}},
    )
    manifest = build_raycluster_manifest(config, name="c1", namespace="ns", labels=LABELS, annotations={"a": "b"})
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayCluster"
    assert manifest["metadata"] == {"name": "c1", "namespace": "ns", "labels": LABELS, "annotations": {"a": "b"}}
    head = manifest["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["include-dashboard"] == "true"
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    container = head["template"]["spec"]["containers"][0]
    assert container["image"] == DEFAULT_RAY_IMAGE
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}}
    assert {"name": "dashboard", "containerPort": 8265} in container["ports"]
    # A head that exits at once carries the end of its output in its status (no pods/log rights needed).
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert head["template"]["metadata"]["labels"] == LABELS
    (group,) = manifest["spec"]["workerGroupSpecs"]
    assert (group["groupName"], group["replicas"], group["minReplicas"], group["maxReplicas"]) == ("cpu", 2, 2, 2)
    worker = group["template"]["spec"]["containers"][0]
    assert worker["terminationMessagePolicy"] == "FallbackToLogsOnError"
    # GPUs are an extended resource: Kubernetes wants the limit equal to the request.
    assert worker["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert worker["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert manifest["spec"]["rayVersion"] == DEFAULT_RAY_IMAGE.split(":")[1]


def test_user_pod_template_values_win_and_sidecars_survive():
    template = {
        "metadata": {"labels": {"team": "ml"}},
        "spec": {
            "nodeSelector": {"pool": "gpu"},
            "containers": [
                {"name": "ray-head", "image": "my/ray:1", "env": [{"name": "A", "value": "1"}]},
                {"name": "sidecar", "image": "busybox"},
            ],
        },
    }
    manifest = build_raycluster_manifest(
        RayJobConfig(
            head_node_config=HeadNodeConfig(pod_template=template, image="ignored/ray:2", limits={"cpu": "3"})
        ),
        name="c",
        namespace="n",
        labels=LABELS,
    )
    spec = manifest["spec"]["headGroupSpec"]["template"]
    assert spec["metadata"]["labels"]["team"] == "ml" and spec["metadata"]["labels"]["dag_id"] == "d"
    head, sidecar = spec["spec"]["containers"]
    assert head["image"] == "my/ray:1"  # the user's explicit container image wins over the field default
    assert head["resources"] == {"limits": {"cpu": "3"}}
    assert sidecar == {"name": "sidecar", "image": "busybox"}
    assert spec["spec"]["nodeSelector"] == {"pool": "gpu"}
    assert template["spec"]["containers"][0].get("resources") is None  # input not mutated


def test_autoscaling_defaults_min_to_zero_and_passes_options():
    config = RayJobConfig(
        worker_node_config=[WorkerNodeConfig(group_name="w", replicas=1, max_replicas=4)],
        enable_autoscaling=True,
        autoscaler_options={"idleTimeoutSeconds": 30},
    )
    spec = build_raycluster_manifest(config, name="c", namespace="n", labels=LABELS)["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"] == {"idleTimeoutSeconds": 30}
    group = spec["workerGroupSpecs"][0]
    assert (group["minReplicas"], group["replicas"], group["maxReplicas"]) == (0, 1, 4)


def test_raw_ray_cluster_spec_is_used_with_dashboard_forced_on():
    raw = {
        "headGroupSpec": {"rayStartParams": {"include-dashboard": "false"}, "template": {"spec": {"containers": []}}}
    }
    spec = build_raycluster_manifest(RayJobConfig(ray_cluster_spec=raw), name="c", namespace="n", labels=LABELS)["spec"]
    assert spec["headGroupSpec"]["rayStartParams"]["include-dashboard"] == "true"
    assert spec["headGroupSpec"]["template"]["metadata"]["labels"] == LABELS
    assert raw["headGroupSpec"]["rayStartParams"]["include-dashboard"] == "false"  # input not mutated


def test_dicts_are_accepted_like_dataclasses():
    config = ray_job_config_from(
        {"head_node_config": {"requests": {"cpu": 1}}, "worker_node_config": [{"group_name": "w", "replicas": 0}]}
    )
    assert isinstance(config.head_node_config, HeadNodeConfig)
    assert config.head_node_config.requests == {"cpu": "1"}
    assert config.worker_node_config[0].replicas == 0


def test_quantities_and_runtime_env_shapes_that_are_fine():
    assert HeadNodeConfig(requests={"cpu": "500m", "memory": "1.5Gi", "ephemeral-storage": "1e9"}).requests
    assert validate_runtime_env({"pip": {"packages": ["x"]}, "conda": "env", "env_vars": {}}) is not None
    assert validate_runtime_env(None) is None
    assert cpu_quantity("500m") == 0.5 and cpu_quantity("2") == 2.0
