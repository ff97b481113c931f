"""The local Kubernetes control plane for a test session or a benchmark: ``ControlPlane`` (its address,
CA, admin client, API proxies), ``session()`` (start it if it is down, stop it after only if started here)
and the pytest fixture ``kube_control_plane`` (a pytest plugin: tests/conftest.py registers it)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from . import paths


@dataclass
class ControlPlane:
    kubeconfig: str
    started_here: bool
    state_dir: Path = field(default_factory=lambda: paths.STATE_DIR)
    server: str = f"https://127.0.0.1:{paths.APISERVER_PORT}"
    node_name: str = paths.NODE_NAME

    @property
    def ca_file(self) -> str:
        return str(self.state_dir / "pki" / "ca.crt")

    @property
    def client_cert(self) -> tuple[str, str]:
        """(cert, key) of the admin client certificate (O=system:masters)."""
        return str(self.state_dir / "pki" / "admin.crt"), str(self.state_dir / "pki" / "admin.key")

    def api_proxy(self, *, as_admin: bool = False):
        """A counting, fault-injecting loopback proxy to this API server (not started). ``as_admin``:
        a `kubectl proxy` stand-in that needs no credentials from its caller."""
        from .api_proxy import ApiProxy

        return ApiProxy(self.server, self.ca_file, self.client_cert if as_admin else None, as_admin=as_admin)

    def api_client(self):
        from kubernetes import config

        return config.new_client_from_config(self.kubeconfig)


@contextlib.contextmanager
def session(*, keep: bool = False) -> Iterator[ControlPlane]:
    """Start (or reuse) the control plane; stop it at the end if this call started it (unless ``keep``)."""
    from . import cluster

    already = cluster.is_up()
    kc = cluster.up()
    cp = ControlPlane(kubeconfig=kc, started_here=not already)
    try:
        yield cp
    finally:
        if cp.started_here and not keep:
            cluster.down()


@pytest.fixture(scope="session")
def kube_control_plane() -> Iterator[ControlPlane]:
    """Start (or reuse) the control plane; stop it at session end if this fixture started it
    (unless FLYRAY_KUBE_KEEP=1)."""
    if os.geteuid() != 0:
        pytest.skip("the flyray test control plane needs root (network namespaces)")
    with session(keep=os.environ.get("FLYRAY_KUBE_KEEP") == "1") as cp:
        yield cp
