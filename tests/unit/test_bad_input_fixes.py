"""Bad inputs the fault matrix (tests/faults/test_bad_inputs.py) found accepted or explained poorly."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace

import pendulum
import pytest
from airflow import __version__ as airflow_version
from airflow.exceptions import AirflowNotFoundException

from airflow_provider_flyray import FlyteRayOperator
from airflow_provider_flyray.connection import extras_from_text, kube_credentials_error, parse_connection_extras
from airflow_provider_flyray.core.session import RaySession
from airflow_provider_flyray.errors import ConfigError
from airflow_provider_flyray.hooks.ray_cluster import RayClusterHook
from airflow_provider_flyray.jobs_api import JobSubmission, message_without_logs
from airflow_provider_flyray.naming import check_cluster_name
from airflow_provider_flyray.operators.arguments import WORKER_TIMEOUT_MARGIN, seconds_of, worker_deadline
from tests.support import bad_inputs


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


# ---- issue 15: errors that pointed the wrong way ------------------------------------------------------


@contextlib.contextmanager
def unless_airflow_refuses_it() -> Iterator[None]:
    """Airflow 3.0 and 3.1.0's own connection lookup outside a task runner refuses an extra that is not
    JSON (3.0: as "not defined"; 3.1.0: with an ImportError): the provider never sees it, so there is
    nothing of ours to check there (tests/compat runs these on each Airflow line)."""
    try:
        yield
    except AirflowNotFoundException as error:
        pytest.skip(f"Airflow {airflow_version} refuses the connection itself: {error}")
    except ImportError as error:
        if "SUPERVISOR_COMMS" not in str(error):
            raise
        # 3.1.0: its environment-variable backend refuses it, then the lookup falls through to the task
        # runner's channel, which a test process does not have.
        pytest.skip(f"Airflow {airflow_version} refuses the connection itself (then: {error})")


@pytest.mark.parametrize("case", [c for c in bad_inputs.CASES if c.conn_text is not None], ids=lambda c: c.id)
def test_catalogue_connections_that_are_not_json_are_refused_before_anything(monkeypatch, case):
    for name, value in bad_inputs.connections({"namespace": "default"}).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info, unless_airflow_refuses_it():
        RayClusterHook(case.conn_id).validate()
    assert info.value.field == case.field and case.expected in str(info.value)
    assert '{"backend": "local"}' in str(info.value)  # what a valid extra looks like


async def test_the_trigger_refuses_extra_text_that_is_not_json(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_RAY_NOT_JSON", json.dumps({"conn_type": "flyray", "extra": "backend=local"}))
    with pytest.raises(ConfigError) as info, unless_airflow_refuses_it():
        async with RaySession("ray_not_json"):
            pass
    assert info.value.field == "connection.extra" and "not valid JSON" in str(info.value)


@pytest.mark.parametrize("text", ["[1, 2]", '"local"'])
def test_extra_that_is_json_but_not_an_object_is_refused(text):
    with pytest.raises(ConfigError, match="expected a JSON object"):
        extras_from_text(text)


def test_empty_extra_text_is_no_fields():
    assert extras_from_text(None) == {} and extras_from_text("  ") == {}
    assert extras_from_text('{"backend": "local"}') == {"backend": "local"}


@pytest.fixture
def no_kube_credentials(monkeypatch, tmp_path):
    """A machine without ~/.kube/config, KUBECONFIG or a pod's service account."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)


def test_kubernetes_backend_without_credentials_names_the_fields_that_fix_it(monkeypatch, no_kube_credentials):
    monkeypatch.setenv("AIRFLOW_CONN_RAY_NO_CREDS", json.dumps({"conn_type": "flyray", "extra": {}}))
    with pytest.raises(ConfigError) as info:
        RayClusterHook("ray_no_creds").list_clusters("default", "")
    message = str(info.value)
    assert info.value.field == "connection.extra" and "no Kubernetes credentials" in message
    assert all(name in message for name in ("kube_config_path", "kube_config", "in_cluster", "backend 'local'"))


def test_in_cluster_outside_a_pod_names_in_cluster(monkeypatch, no_kube_credentials):
    extra = {"in_cluster": True}
    monkeypatch.setenv("AIRFLOW_CONN_RAY_IN_CLUSTER", json.dumps({"conn_type": "flyray", "extra": extra}))
    with pytest.raises(ConfigError) as info:
        RayClusterHook("ray_in_cluster").list_clusters("default", "")
    assert info.value.field == "connection.extra.in_cluster" and "runs in a pod" in str(info.value)


def test_kube_credentials_error_names_the_field_that_was_given():
    error = kube_credentials_error({"extra__kubernetes__kube_config": "x: 1"}, "Invalid kube-config file.")
    assert error.field == "connection.extra.kube_config" and "Invalid kube-config file." in str(error)
    assert kube_credentials_error({"in_cluster": False}, "p").field == "connection.extra"


def test_rays_failure_message_keeps_its_summary_without_the_log_lines():
    message = (
        "Job entrypoint command failed with exit code 3, last available logs (truncated to 20,000 chars):\n"
        "about to fail\n"
    )
    shown = ["starting", "about to fail"]
    assert message_without_logs(message, shown) == "Job entrypoint command failed with exit code 3"
    # Lines the shown tail lacks (the log could not be read to its end) stay in the message.
    assert message_without_logs(message, ["starting"]) == message
    assert message_without_logs("Job was intentionally stopped.", shown) == "Job was intentionally stopped."
    assert message_without_logs(None, shown) is None


def test_the_non_deferrable_wait_ends_before_airflows_timeout_alarm():
    assert worker_deadline(None, 0) is None
    assert worker_deadline(1000.0, 600) == 1000.0 - WORKER_TIMEOUT_MARGIN
    assert worker_deadline(1000.0, 20) == 995.0  # a quarter of a short timeout
    assert seconds_of(timedelta(minutes=1)) == 60.0 and seconds_of(None) == 0.0 and seconds_of(5) == 5.0


def test_non_deferrable_trigger_gets_the_earlier_deadline():
    from airflow_provider_flyray.cluster import ClusterRef
    from airflow_provider_flyray.timings import Timings

    ti = SimpleNamespace(start_date=pendulum.from_timestamp(1000.0), dag_id="d", task_id="t")
    submission = JobSubmission("sid", "echo")
    ref = ClusterRef("address", name="a", address="http://ray:8265")
    timeout = timedelta(seconds=40)
    for deferrable, deadline in ((True, 1040.0), (False, 1040.0 - WORKER_TIMEOUT_MARGIN)):
        op = FlyteRayOperator(task_id="t", entrypoint="echo", deferrable=deferrable, execution_timeout=timeout)
        trigger = op.build_trigger({"ti": ti}, ref, submission, SimpleNamespace(key="k"), Timings())  # type: ignore[arg-type]
        assert trigger.deadline == deadline


def test_an_alarm_that_interrupts_the_worker_wait_still_stops_and_reports_the_job():
    from contextlib import asynccontextmanager

    from airflow.providers.common.compat.sdk import AirflowTaskTimeout

    from airflow_provider_flyray.cluster import ClusterRef
    from airflow_provider_flyray.events import Outcome, RayJobEvent

    ref = ClusterRef("address", name="a", address="http://ray:8265")
    report = RayJobEvent(Outcome.TIMEOUT, ref, "sid", reason="execution_timeout reached; Ray job sid stopped")

    class Interrupted:
        """Airflow's SIGALRM raises AirflowTaskTimeout out of the wait."""

        async def run(self):
            raise AirflowTaskTimeout("Timeout, PID: 1")
            yield  # pragma: no cover

        @asynccontextmanager
        async def session(self):
            yield None

        async def timed_out(self, session):
            return report

    op = FlyteRayOperator(task_id="t", entrypoint="echo", deferrable=False)
    assert op._wait_on_worker(Interrupted()) == report.to_dict()  # type: ignore[arg-type]
