"""pytest fixtures used across test directories: a pytest plugin, registered by tests/conftest.py (with
the control plane's ``kube_control_plane``, tests/infra/kube/fixtures.py): the admin Kubernetes clients,
and the session's PostgreSQL server with a metadata database per Airflow stack."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from kubernetes import client

from tests.infra.postgres import PostgresServer, postgres_server


@pytest.fixture(scope="module")
def core(kube_control_plane) -> client.CoreV1Api:
    """The core API of the control plane, as cluster admin."""
    return client.CoreV1Api(kube_control_plane.api_client())


@pytest.fixture(scope="module")
def custom(kube_control_plane) -> client.CustomObjectsApi:
    """The custom-objects API (RayClusters) of the control plane, as cluster admin."""
    return client.CustomObjectsApi(kube_control_plane.api_client())


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (tests/infra/postgres.py), started on first use, stopped at the end."""
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="module")
def metadata_db(postgres: PostgresServer, request: pytest.FixtureRequest) -> str:
    """A fresh PostgreSQL database for one module's Airflow stack: its URL (``airflow_stack(database_url=)``)."""
    module = request.module.__name__.rsplit(".", 1)[-1]
    name = re.sub(r"[^a-z0-9_]", "_", f"airflow_{module}".lower())[:63]
    return postgres.create_database(name)
