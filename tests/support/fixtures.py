"""pytest fixtures used across test directories: a pytest plugin, registered by tests/conftest.py (with
the control plane's ``kube_control_plane``, tests/infra/kube/fixtures.py)."""

from __future__ import annotations

import pytest
from kubernetes import client


@pytest.fixture(scope="module")
def core(kube_control_plane) -> client.CoreV1Api:
    """The core API of the control plane, as cluster admin."""
    return client.CoreV1Api(kube_control_plane.api_client())


@pytest.fixture(scope="module")
def custom(kube_control_plane) -> client.CustomObjectsApi:
    """The custom-objects API (RayClusters) of the control plane, as cluster admin."""
    return client.CustomObjectsApi(kube_control_plane.api_client())
