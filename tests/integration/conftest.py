from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator

import pytest

from airflow_provider_flyray.cluster import Backend, ClusterRef
from airflow_provider_flyray.hooks.local_ray import local_cluster_pids, start_local_cluster, stop_local_cluster


def wait_for_dashboard(url: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(url + "/api/version", timeout=2).read()
            return
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def rest(url: str, method: str = "GET", body: dict | None = None) -> dict | list:
    request = urllib.request.Request(
        url,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
    )
    return json.loads(urllib.request.urlopen(request, timeout=30).read())


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
    return ClusterRef(Backend.ADDRESS, name="address", address=local_head.address)
