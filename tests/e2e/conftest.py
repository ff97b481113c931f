from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.infra.kube.api_proxy import ApiProxy
from tests.infra.stack import AirflowStack
from tests.support.airflow_runs import E2E_DAGS, airflow_stack, example_dags
from tests.support.tenants import Tenant, dashboard_url_template, provider_tenant


@pytest.fixture(scope="module")
def kube_proxy(kube_control_plane) -> Iterator[ApiProxy]:
    """A `kubectl proxy` stand-in: the UI links point through it, as a user's browser would."""
    proxy = kube_control_plane.api_proxy(as_admin=True).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def e2e_tenant(kube_control_plane, tmp_path_factory) -> Iterator[Tenant]:
    """docker/rbac.yaml applied in the e2e namespace; a kubeconfig holding only its ServiceAccount's token.
    The provider runs with it: least privilege, not cluster admin."""
    workdir = tmp_path_factory.mktemp("sa")
    with provider_tenant(kube_control_plane, workdir, "flyray-e2e", token_seconds=7200) as tenant:
        yield tenant


@pytest.fixture(scope="module")
def e2e_namespace(e2e_tenant) -> str:
    return e2e_tenant.namespace


@pytest.fixture(scope="module")
def stack(tmp_path_factory, e2e_tenant, kube_proxy, metadata_db) -> Iterator[AirflowStack]:
    """A real Airflow (api-server, scheduler, dag-processor, triggerer) with the example and e2e DAGs and a
    `ray_kube`/`ray_default` connection to the control plane as the `airflow-flyray` service account
    (pod-IP dashboard access; UI links through the proxy, as a user's browser would use `kubectl proxy`)."""
    home = tmp_path_factory.mktemp("airflow-e2e")
    conn = e2e_tenant.conn("pod", dashboard_url_template=dashboard_url_template(kube_proxy.url))
    # test_connection: the connection form's "Test" button (tests/e2e/test_ui_browser.py).
    env = {"AIRFLOW_CONN_RAY_KUBE": conn, "AIRFLOW_CONN_RAY_DEFAULT": conn, "AIRFLOW__CORE__TEST_CONNECTION": "Enabled"}
    with airflow_stack(home, [*example_dags(), E2E_DAGS], env, metadata_db) as stack:
        print(f"Airflow stack started in {stack.startup_seconds:.1f}s at {stack.base_url}")
        yield stack
