"""A Ray cluster as this provider sees it: where it is, who owns it, and which backend handles it.

A ``ClusterRef`` is plain data that travels from the operator to the trigger and back (trigger kwargs and
the trigger event), so it holds no secrets: credentials are looked up from the connection id each time.
``backend`` names the module of :mod:`airflow_provider_flyray.backends` that made it and that the trigger
asks about it (readiness, dashboard, release); ``owned`` says whether this provider may delete it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ClusterRef:
    """A cluster as plain, secret-free data: its backend, name, namespace and whether this provider owns it."""

    # The registered name of the backend handling this cluster (see backends/__init__.py).
    backend: str
    name: str
    namespace: str | None = None
    # True when this provider created the cluster for its owner and may delete it.
    owned: bool = False
    # Fixed dashboard address, when known without asking Kubernetes (local backend, explicit address).
    address: str | None = None
    # Local backend only: the process group of the Ray head, its temp dir and its cgroup (None: none).
    local_pgid: int | None = None
    local_temp_dir: str | None = None
    local_cgroup: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClusterRef:
        return cls(**data)

    def describe(self) -> str:
        """How messages name the cluster: a Kubernetes object, a local head, or an address."""
        if self.namespace:
            return f"{self.extra.get('kind', 'RayCluster')} {self.namespace}/{self.name}"
        if self.local_pgid:
            return f"local Ray cluster {self.name} at {self.address}"
        return f"Ray cluster at {self.address}"
