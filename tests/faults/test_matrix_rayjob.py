"""The fault matrix's applicable rows again in RayJob mode (issue 13): the same DAGs, the same faults and
the same checks as tests/faults/test_matrix.py, with the connection's ``kuberay_resource: RayJob``
default, so every task creates a KubeRay RayJob whose cluster KubeRay makes and deletes; the service
account has docker/rbac-rayjob.yaml only (RayClusters read-only). Rows are numbered J<row>.

    make faults-rayjob    # about 15 minutes; not part of `make test` (CI's time limit), see docs/reliability.md

Not repeated here: rows 1/1b (the worker killed before deferral: in RayJob mode the retry adopts the
RayJob, unit- and integration-tested), 6b (delete_succeeded_cluster keeps the cluster: KubeRay 1.5 cannot
tell a failed job from a succeeded one without an alpha feature gate, docs/rayjob-mode.md), 10a/10b
(the dashboard path is the same code as RayCluster mode), 12 (RayJob names are checked by the same
create-or-adopt rule), 14 (the same trigger path).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.faults.test_matrix import (  # noqa: F401  (fixtures and the rows themselves, collected again here)
    fault_proxy,
    namespace,
    start,
    test_cluster_deleted,
    test_execution_timeout,
    test_head_crashes,
    test_job_fails,
    test_kube_api_faults,
    test_triggerer_killed,
    test_two_runs_at_once,
    test_unschedulable,
    test_user_marks_failed,
    test_worker_killed_after_submission,
)
from tests.infra.stack import AirflowStack
from tests.support.airflow_runs import FAULT_DAGS, airflow_stack
from tests.support.tenants import RAYJOB_RBAC, Tenant, provider_tenant

pytestmark = [
    pytest.mark.kube,
    pytest.mark.airflow,
    pytest.mark.ray,
    pytest.mark.skipif(
        not os.environ.get("FLYRAY_RAYJOB_MATRIX"),
        reason="the RayJob-mode rows of the fault matrix run by `make faults-rayjob` (about 15 min)",
    ),
]
SCENARIO_PREFIX = ("J", "RayJob mode: ")


@pytest.fixture(scope="module")
def tenant(kube_control_plane, tmp_path_factory) -> Iterator[Tenant]:
    """docker/rbac-rayjob.yaml alone in a fresh namespace: RayJob mode's least privilege."""
    workdir = tmp_path_factory.mktemp("faults-rayjob-sa")
    with provider_tenant(
        kube_control_plane, workdir, "flyray-faults-rj", token_seconds=7200, rbac=RAYJOB_RBAC
    ) as tenant:
        yield tenant


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tenant, fault_proxy, metadata_db) -> Iterator[AirflowStack]:  # noqa: F811
    home = tmp_path_factory.mktemp("airflow-faults-rayjob")
    faulty = tenant.write_kubeconfig(home / "sa-proxy.kubeconfig", fault_proxy.url, tenant.ca_file)
    env = {
        "AIRFLOW_CONN_RAY_KUBE": tenant.conn("pod", kuberay_resource="RayJob"),
        "AIRFLOW_CONN_RAY_FAULTY": tenant.conn("pod", kubeconfig=faulty, kuberay_resource="RayJob"),
        "AIRFLOW__CORE__PARALLELISM": "8",
    }
    with airflow_stack(home, [FAULT_DAGS], env, metadata_db) as stack:
        yield stack
