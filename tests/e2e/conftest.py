from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.conftest import REPO
from tests.e2e.kube_proxy import KubeProxy
from tests.stack import AirflowStack


@pytest.fixture(scope="module")
def kube_proxy(kube_control_plane) -> Iterator[KubeProxy]:
    proxy = KubeProxy(kube_control_plane.server, kube_control_plane.ca_file, kube_control_plane.client_cert).start()
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
def stack(tmp_path_factory, kube_control_plane, kube_proxy, e2e_namespace) -> Iterator[AirflowStack]:
    """A real Airflow (api-server, scheduler, dag-processor, triggerer) with the example and e2e DAGs and a
    `ray_kube`/`ray_default` connection to the control plane (pod-IP access; UI links via the proxy)."""
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
                "kube_config_path": kube_control_plane.kubeconfig,
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
