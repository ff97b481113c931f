from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_provider_flyray.backends.address import AddressBackend
from airflow_provider_flyray.backends.local_process import local_cluster_pids, start_local_cluster, stop_local_cluster
from airflow_provider_flyray.cluster import ClusterRef
from tests.support.waits import wait_for_dashboard


@pytest.fixture(scope="module")
def local_head() -> Iterator[ClusterRef]:
    """A real local Ray head (2 CPUs) shared by a module's tests; stopped and checked for leaks after."""
    ref = start_local_cluster("shared-test-head", num_cpus=2, object_store_memory=100_000_000)
    try:
        wait_for_dashboard(ref.address)
        yield ref
    finally:
        stop_local_cluster(ref)
        assert local_cluster_pids(ref) == [], "Ray processes outlived the local cluster"


@pytest.fixture
def address_ref(local_head: ClusterRef) -> ClusterRef:
    """The shared head used as an existing Ray address (not owned: tests can't delete it)."""
    return AddressBackend.ref_for(local_head.address)
