"""Connection fields, dashboard URLs, Jobs API requests and lifecycle resolution (pure parts)."""

from __future__ import annotations

import pytest

from airflow_provider_flyray import jobs_api
from airflow_provider_flyray.backends.raycluster import (
    cluster_token_secret_name,
    direct_dashboard_url,
    kube_auth_endpoint,
    proxy_dashboard_url,
)
from airflow_provider_flyray.cluster import ClusterRef
from airflow_provider_flyray.config import OnFinishAction, RayJobConfig
from airflow_provider_flyray.connection import DashboardAccess, browser_dashboard_url, parse_connection_extras
from airflow_provider_flyray.errors import ConfigError
from airflow_provider_flyray.jobs_api import token_headers
from airflow_provider_flyray.operators.ray import Lifecycle, resolve_lifecycle
from airflow_provider_flyray.owners import deletion_refusal

REF = ClusterRef("raycluster", name="c1", namespace="ml", owned=True)
CLUSTER = {"status": {"head": {"podIP": "10.244.0.7"}, "endpoints": {"dashboard": "8265"}}, "spec": {}}


@pytest.mark.parametrize(
    ("extras", "field", "words"),
    [
        ({"backend": "docker"}, "backend", "'kubernetes' or 'local'"),
        ({"namespace": "ML_team"}, "namespace", "not a valid Kubernetes namespace"),
        ({"dashboard_access": "ingress"}, "dashboard_access", "'proxy'"),
        ({"dashboard_access": "address"}, "dashboard_address", "required"),
        ({"dashboard_address": "ray-head:8265"}, "dashboard_address", "http(s) URL"),
        ({"dashboard_url_template": "https://ray/{ns}/{cluster}"}, "dashboard_url_template", "unknown placeholders"),
        ({"dashboard_url_template": "ray.example.com"}, "dashboard_url_template", "http(s) URL"),
        ({"verify_tls": "maybe"}, "verify_tls", "true or false"),
        ({"dashboard_token": 12345}, "dashboard_token", "string"),
    ],
)
def test_bad_connection_fields(extras, field, words):
    with pytest.raises(ConfigError) as info:
        parse_connection_extras(extras)
    assert field in info.value.field and words in str(info.value)


def test_connection_defaults_and_repr_hides_the_token():
    settings = parse_connection_extras({"dashboard_token": "CANARY-123", "verify_tls": "false"})
    assert settings.backend == "kubernetes" and settings.namespace == "default"
    assert settings.dashboard_access is DashboardAccess.SERVICE and settings.verify_tls is False
    assert "CANARY" not in repr(settings)


def test_dashboard_urls_per_access_mode():
    service = parse_connection_extras({})
    assert direct_dashboard_url(service, REF, CLUSTER) == "http://c1-head-svc.ml.svc.cluster.local:8265"
    pod = parse_connection_extras({"dashboard_access": "pod"})
    assert direct_dashboard_url(pod, REF, CLUSTER) == "http://10.244.0.7:8265"
    assert direct_dashboard_url(pod, REF, {"status": {}}) is None
    addr = parse_connection_extras({"dashboard_access": "address", "dashboard_address": "https://ray.corp/"})
    assert direct_dashboard_url(addr, REF, None) == "https://ray.corp"
    assert proxy_dashboard_url("https://127.0.0.1:6443", REF) == (
        "https://127.0.0.1:6443/api/v1/namespaces/ml/services/c1-head-svc:dashboard/proxy"
    )


def test_browser_links_only_for_reachable_urls():
    template = parse_connection_extras({"dashboard_url_template": "https://ray.example.com/{namespace}/{cluster}"})
    assert (
        browser_dashboard_url(template, namespace="ml", cluster="c1", service="c1-head-svc", direct_url=None)
        == "https://ray.example.com/ml/c1"
    )
    service = parse_connection_extras({})
    assert (
        browser_dashboard_url(service, namespace="ml", cluster="c1", service="s", direct_url="http://s.svc:8265")
        is None
    )
    pod = parse_connection_extras({"dashboard_access": "pod"})
    assert browser_dashboard_url(pod, namespace="ml", cluster="c1", service="s", direct_url="http://10.1.1.1:8265/")


def test_token_goes_where_kubernetes_does_not_need_it():
    assert token_headers("t", DashboardAccess.POD) == {"Authorization": "Bearer t"}
    assert token_headers("t", DashboardAccess.PROXY) == {"X-Ray-Authorization": "Bearer t"}
    assert token_headers(None, DashboardAccess.POD) == {}
    from kubernetes.client import Configuration

    # The layout kubernetes' kubeconfig / in-cluster loaders produce: "BearerToken", already prefixed.
    configuration = Configuration(host="https://api")
    configuration.api_key = {"BearerToken": "Bearer kube-token"}
    configuration.ssl_ca_cert = "/ca.crt"
    endpoint = kube_auth_endpoint(configuration, "https://api/x", {"X-Ray-Authorization": "Bearer t"})
    assert endpoint.headers == {"X-Ray-Authorization": "Bearer t", "Authorization": "Bearer kube-token"}
    assert "kube-token" not in repr(endpoint)
    assert endpoint.ws_url("/api/jobs/a/logs/tail") == "wss://api/x/api/jobs/a/logs/tail"


def test_token_secret_comes_from_kuberay_auth_options():
    plain = parse_connection_extras({})
    assert cluster_token_secret_name(plain, {"spec": {"authOptions": {"mode": "token"}}}, REF) == "c1"
    assert cluster_token_secret_name(plain, {"spec": {}}, REF) is None
    with_token = parse_connection_extras({"dashboard_token": "x"})
    assert cluster_token_secret_name(with_token, {"spec": {"authOptions": {"mode": "token"}}}, REF) is None


def test_jobs_api_requests_and_errors():
    sub = jobs_api.JobSubmission(
        "id/1", "python x.py", runtime_env={"pip": ["a"]}, metadata={"k": "v"}, entrypoint_num_cpus=1
    )
    request = jobs_api.submit_request(sub)
    assert (request.method, request.path) == ("POST", "/api/jobs/")
    assert request.json == {
        "entrypoint": "python x.py",
        "submission_id": "id/1",
        "runtime_env": {"pip": ["a"]},
        "entrypoint_num_cpus": 1,
        "metadata": {"k": "v"},
    }
    assert jobs_api.get_job_request("id/1").path == "/api/jobs/id%2F1"
    assert jobs_api.JobSubmission.from_dict(sub.to_dict()) == sub
    assert jobs_api.is_duplicate_submission(500, "Traceback...\nValueError: Job with submission_id x already exists.")
    assert not jobs_api.is_duplicate_submission(200, "already exists")
    assert "dashboard_token" in str(jobs_api.error_for(401, "", "submit"))
    assert "refused the token" in str(jobs_api.error_for(403, "", "submit"))
    kube_403 = '{"kind": "Status", "status": "Failure", "message": "services \\"x\\" is forbidden", "code": 403}'
    assert "Kubernetes refused the request through the API-server proxy" in str(
        jobs_api.error_for(403, kube_403, "get")
    )
    # Ray 2.60's answer to GET .../logs of a log that is not UTF-8 (the agent's traceback, then ".").
    ray_500 = (
        'Traceback (most recent call last):\n  File "job_head.py", line 591, in get_job_logs\n'
        "RuntimeError: Request failed with status code 500: Traceback (most recent call last):\n"
        '  File "<frozen codecs>", line 322, in decode\n'
        "UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 78: invalid start byte\n.\n"
    )
    assert str(jobs_api.error_for(500, ray_500, "logs")) == (
        "logs failed with HTTP 500: UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 78: "
        "invalid start byte"
    )
    assert jobs_api.last_lines("a\nb\nc\n", 2) == ["b", "c"]
    jobs = [
        {"submission_id": "b", "start_time": 2, "metadata": {"airflow_task_key": "k"}},
        {"submission_id": "a", "start_time": 1, "metadata": {"airflow_task_key": "k"}},
        {"submission_id": "z", "start_time": 0, "metadata": {"airflow_task_key": "other"}},
    ]
    assert [j["submission_id"] for j in jobs_api.jobs_of_task(jobs, "k")] == ["a", "b"]


@pytest.mark.parametrize(
    ("explicit", "config", "expected"),
    [
        (None, RayJobConfig(), Lifecycle(OnFinishAction.DELETE_CLUSTER)),
        (None, RayJobConfig(shutdown_after_job_finishes=False), Lifecycle(OnFinishAction.KEEP_CLUSTER)),
        (None, RayJobConfig(ttl_seconds_after_finished=30), Lifecycle(OnFinishAction.DELETE_CLUSTER, 30)),
        ("delete_succeeded_cluster", RayJobConfig(), Lifecycle(OnFinishAction.DELETE_SUCCEEDED_CLUSTER)),
        ("keep_cluster", RayJobConfig(), Lifecycle(OnFinishAction.KEEP_CLUSTER)),
    ],
)
def test_lifecycle_mapping(explicit, config, expected):
    assert resolve_lifecycle(explicit, config) == expected


@pytest.mark.parametrize(
    ("explicit", "config"),
    [
        ("delete_cluster", RayJobConfig(shutdown_after_job_finishes=False)),
        ("keep_cluster", RayJobConfig(shutdown_after_job_finishes=True)),
        ("keep_cluster", RayJobConfig(ttl_seconds_after_finished=10)),
        ("delete", RayJobConfig()),
    ],
)
def test_contradictory_lifecycles_are_refused(explicit, config):
    with pytest.raises(ConfigError):
        resolve_lifecycle(explicit, config)


def test_only_our_own_cluster_may_be_deleted():
    ours = {
        "metadata": {
            "labels": {"app.kubernetes.io/managed-by": "airflow-provider-flyray"},
            "annotations": {"flyray.airflow.apache.org/owner": "d|t|r|-1"},
        }
    }
    assert deletion_refusal(ours, REF, "d|t|r|-1") is None
    assert "not managed" in deletion_refusal(ours, REF, "other|t|r|-1")
    assert "not managed" in deletion_refusal({"metadata": {"labels": {}}}, REF, None)
    assert "no longer exists" in deletion_refusal(None, REF, "d|t|r|-1")
    not_owned = ClusterRef("existing_raycluster", name="c1", namespace="ml", owned=False)
    assert "not created by this task" in deletion_refusal(ours, not_owned, "d|t|r|-1")
