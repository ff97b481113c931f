"""The ways of getting a Ray cluster, one module each, and the registry that picks one.

========================  =====================================================================
``rayjob``                ``kuberay_resource="RayJob"``: a RayJob per task try, its cluster owned by KubeRay
``shared``                the DAG run's cluster made by its setup task (``cluster=``): used, not owned
``address``               an existing Ray dashboard address: no Kubernetes, no lifecycle
``existing_raycluster``   an existing RayCluster by name: never created or deleted
``local``                 a Ray head on the Airflow machine (connection ``backend: local``)
``pool``                  ``reuse=``: the pool's RayCluster, shared by the tasks of one config, leased
``raycluster``            a transient RayCluster per task instance (the default)
========================  =====================================================================

A request goes to the first registered backend that claims it, so the order below is the precedence
of the operator's parameters. Adding a backend is one module implementing
:class:`~airflow_provider_flyray.backends.base.ClusterBackend` and one :func:`register` line here.
"""

from __future__ import annotations

from airflow_provider_flyray.backends.address import AddressBackend
from airflow_provider_flyray.backends.base import ClusterBackend, ClusterRequest
from airflow_provider_flyray.backends.existing import ExistingRayClusterBackend
from airflow_provider_flyray.backends.local import LocalBackend
from airflow_provider_flyray.backends.pool import PoolBackend
from airflow_provider_flyray.backends.rayjob import RayJobBackend
from airflow_provider_flyray.backends.shared import SharedClusterBackend
from airflow_provider_flyray.backends.transient import TransientRayClusterBackend
from airflow_provider_flyray.cluster import ClusterRef

_REGISTRY: dict[str, ClusterBackend] = {}


def register(backend: ClusterBackend) -> None:
    _REGISTRY[backend.name] = backend


for _backend in (
    RayJobBackend(),
    SharedClusterBackend(),
    AddressBackend(),
    ExistingRayClusterBackend(),
    LocalBackend(),
    PoolBackend(),
    TransientRayClusterBackend(),
):
    register(_backend)


def select(request: ClusterRequest) -> ClusterBackend:
    """The backend serving ``request`` (a ConfigError when the request contradicts itself)."""
    for backend in _REGISTRY.values():
        if backend.claims(request):
            return backend
    raise LookupError(f"no backend serves the connection backend {request.settings.backend!r}")


def backend_for(ref: ClusterRef) -> ClusterBackend:
    """The backend that made ``ref`` (and knows how to wait for, reach and release it)."""
    try:
        return _REGISTRY[ref.backend]
    except KeyError:
        raise LookupError(f"unknown cluster backend {ref.backend!r}; known: {sorted(_REGISTRY)}") from None


__all__ = ["ClusterBackend", "ClusterRequest", "backend_for", "register", "select"]
