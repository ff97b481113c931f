from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.conftest import REPO
from tests.integration.test_rbac import grant_provider_role, write_kubeconfig
from tests.kube.api_proxy import ApiProxy
from tests.stack import AirflowStack


@pytest.fixture(scope="module")
def kube_proxy(kube_control_plane) -> Iterator[ApiProxy]:
    """A `kubectl proxy` stand-in: the UI links point through it, as a user's browser would."""
    proxy = kube_control_plane.api_proxy(as_admin=True).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def e2e_namespace(kube_control_plane) -> Iterator[str]:
    core = client.CoreV1Api(kube_control_plane.api_client())
    name = f"flyray-e2e-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


@pytest.fixture(scope="module")
def service_account_kubeconfig(kube_control_plane, e2e_namespace, tmp_path_factory) -> str:
    """docker/rbac.yaml applied in the e2e namespace; a kubeconfig holding only its ServiceAccount's token.
    The provider runs with it: least privilege, not cluster admin."""
    admin = kube_control_plane.api_client()
    token = grant_provider_role(admin, e2e_namespace, seconds=7200)
    return write_kubeconfig(
        tmp_path_factory.mktemp("sa") / "airflow-flyray.kubeconfig",
        kube_control_plane.server,
        kube_control_plane.ca_file,
        token,
        e2e_namespace,
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory, service_account_kubeconfig, kube_proxy, e2e_namespace) -> Iterator[AirflowStack]:
    """A real Airflow (api-server, scheduler, dag-processor, triggerer) with the example and e2e DAGs and a
    `ray_kube`/`ray_default` connection to the control plane as the `airflow-flyray` service account
    (pod-IP dashboard access; UI links through the proxy, as a user's browser would use `kubectl proxy`)."""
    home = tmp_path_factory.mktemp("airflow-e2e")
    dags = home / "dags"
    dags.mkdir()
    for source in [*sorted((REPO / "dags").glob("*.py")), REPO / "tests" / "dags" / "flyray_e2e_dags.py"]:
        shutil.copy(source, dags / source.name)
    template = kube_proxy.url + "/api/v1/namespaces/{namespace}/services/{service}:dashboard/proxy"
    conn = json.dumps(
        {
            "conn_type": "flyray",
            "extra": {
                "kube_config_path": service_account_kubeconfig,
                "namespace": e2e_namespace,
                "dashboard_access": "pod",
                "dashboard_url_template": template,
            },
        }
    )
    stack = AirflowStack(
        home=home, dags_folder=dags, extra_env={"AIRFLOW_CONN_RAY_KUBE": conn, "AIRFLOW_CONN_RAY_DEFAULT": conn}
    )
    stack.startup_seconds = stack.start()  # type: ignore[attr-defined]
    print(f"Airflow stack started in {stack.startup_seconds:.1f}s at {stack.base_url}")  # type: ignore[attr-defined]
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def custom(kube_control_plane) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube_control_plane.api_client())


@pytest.fixture(scope="module")
def core(kube_control_plane) -> client.CoreV1Api:
    return client.CoreV1Api(kube_control_plane.api_client())


def output_dir() -> Path:
    path = REPO / "test-output"
    path.mkdir(exist_ok=True)
    return path
