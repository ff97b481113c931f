"""What the tests (and the benchmarks) share, one module per concept. Test modules import from here and
from the infrastructure (``tests.infra``), never from one another.

- ``tenants``: namespaces, the provider's service-account tenants (docker/rbac.yaml), kubeconfigs, connections
- ``airflow_runs``: ``airflow db migrate`` / ``airflow dags test``, dags folders, a real Airflow stack for the
  length of a block, waiting for a task's state
- ``ray_jobs``: the provider's hook and RayJobTrigger driven without Airflow; the Ray Jobs REST API
- ``waits``: waiting for a Ray dashboard, or any URL, to answer
- ``leftovers``: what a run left behind (RayClusters, pods, their netns, local Ray processes)
- ``pod_network``: a pod's netns and host veth on the test node; cutting a pod off
- ``job_counter``: the Ray jobs a task submitted, counted on the clusters themselves
- ``fault_matrix``: the fault matrix's rows and table (``python -m tests.support.fault_matrix``)
- ``bad_inputs``: the bad-input catalogue (fault matrix row B)
- ``recorded_ray``: a test double of the Ray 2.60 Jobs API replaying ``recorded/`` (bodies of a real Ray)
- ``fixtures``: pytest fixtures used across test directories (a plugin that tests/conftest.py registers)
"""

from __future__ import annotations

from pathlib import Path

from tests.infra import REPO as REPO

TEST_DAGS = REPO / "tests" / "dags"


def output_dir() -> Path:
    """test-output/ of the checkout (screenshots, the fault matrix table, the bad-input table)."""
    path = REPO / "test-output"
    path.mkdir(exist_ok=True)
    return path
