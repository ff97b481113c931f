"""Bad inputs the fault matrix (tests/faults/test_bad_inputs.py) found accepted or explained poorly."""

from __future__ import annotations

import json

import pytest

from airflow_provider_flyray import FlyteRayOperator
from airflow_provider_flyray.connection import parse_connection_extras
from airflow_provider_flyray.errors import ConfigError
from airflow_provider_flyray.hooks.ray_cluster import RayClusterHook
from airflow_provider_flyray.naming import check_cluster_name


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("cluster_name", "", "leave it unset"),
        ("cluster_name", "  ", "leave it unset"),
        ("address", "", "leave it unset"),
        ("namespace", "", "leave it unset"),
        ("cluster_name", "My_Cluster", "not a RayCluster name"),
        ("cluster_name", "c" * 54, "1-53"),
    ],
)
def test_rendered_names_that_are_empty_or_invalid_are_refused(field, value, words):
    # An empty cluster_name/address used to fall through to creating a transient cluster.
    op = FlyteRayOperator(task_id="t", entrypoint="echo", **{field: "{{ params.x }}"})
    setattr(op, field, value)  # as rendered
    with pytest.raises(ConfigError) as info:
        op._check_rendered_names()
    assert info.value.field == field and words in str(info.value)


def test_valid_and_unset_names_pass():
    op = FlyteRayOperator(task_id="t", entrypoint="echo", cluster_name="shared-ray-1", namespace="ml")
    op._check_rendered_names()
    assert check_cluster_name("a" * 53) == "a" * 53


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [("dashbaord_access", "dashboard_access"), ("namepsace", "namespace"), ("verify_tsl", "verify_tls")],
)
def test_misspelt_connection_fields_are_refused(key, suggestion):
    with pytest.raises(ConfigError) as info:
        parse_connection_extras({key: "x"})
    assert info.value.field == f"connection.extra.{key}" and f"did you mean {suggestion!r}" in str(info.value)


def test_unrelated_extras_are_left_alone():
    settings = parse_connection_extras(
        {"extra__kubernetes__namespace": "x", "team": "ml", "kube_config_path": "/k", "disable_verify_ssl": True}
    )
    assert settings.namespace == "default"


def test_missing_kubeconfig_file_names_the_field(monkeypatch, tmp_path):
    extra = {"kube_config_path": str(tmp_path / "missing.kubeconfig")}
    monkeypatch.setenv("AIRFLOW_CONN_RAY_MISSING_KC", json.dumps({"conn_type": "flyray", "extra": extra}))
    with pytest.raises(ConfigError) as info:
        RayClusterHook("ray_missing_kc").validate()
    assert info.value.field == "connection.extra.kube_config_path" and "missing.kubeconfig" in str(info.value)
    (tmp_path / "missing.kubeconfig").write_text("apiVersion: v1\n")
    assert RayClusterHook("ray_missing_kc").validate().namespace == "default"


def test_certificate_failures_are_recognised_and_never_retried():
    # Both transports of the core are aiohttp (kubernetes_asyncio too): these are the errors they raise.
    import ssl

    import aiohttp
    from aiohttp.client_reqrep import ConnectionKey

    from airflow_provider_flyray.core.errors import dashboard_tls_error, tls_failure
    from airflow_provider_flyray.jobs_api import DashboardEndpoint

    verify = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    key = ConnectionKey("ray.example.com", 443, True, True, None, None, None)
    certificate = aiohttp.ClientConnectorCertificateError(key, verify)
    assert "CERTIFICATE_VERIFY_FAILED" in (tls_failure(certificate) or "")
    wrapped = OSError("connect failed")
    wrapped.__cause__ = verify
    assert "CERTIFICATE_VERIFY_FAILED" in (tls_failure(wrapped) or "")
    assert tls_failure(aiohttp.ClientConnectorError(key, ConnectionRefusedError())) is None
    assert tls_failure(aiohttp.ClientConnectionError("reset")) is None
    error = dashboard_tls_error(DashboardEndpoint("https://ray.example.com"), certificate)
    assert "https://ray.example.com" in str(error) and "verify_tls: false" in str(error)
