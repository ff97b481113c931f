"""A Ray cluster as this provider sees it: where it is, who owns it, and how long it lives.

A ``ClusterRef`` is plain data that travels from the operator to the trigger and back (trigger kwargs and
the trigger event), so it holds no secrets: credentials are looked up from the connection id each time.
Keeping ownership explicit (``owned``) is what lets the same code serve a transient cluster, an existing
one, and later a cluster shared by several tasks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Backend(StrEnum):
    KUBERNETES = "kubernetes"  # a RayCluster custom resource managed by the KubeRay operator
    LOCAL = "local"  # a Ray head started on the Airflow machine, for development
    ADDRESS = "address"  # an existing Ray dashboard address: no cluster lifecycle at all


@dataclass(frozen=True)
class ClusterRef:
    backend: Backend
    name: str
    namespace: str | None = None
    # True when this provider created the cluster for the task and may delete it.
    owned: bool = False
    # Fixed dashboard address, when known without asking Kubernetes (local backend, explicit address).
    address: str | None = None
    # Local backend only: the process group of the Ray head and its temp dir.
    local_pgid: int | None = None
    local_temp_dir: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["backend"] = self.backend.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClusterRef:
        values = dict(data)
        values["backend"] = Backend(values["backend"])
        return cls(**values)

    def describe(self) -> str:
        if self.backend is Backend.KUBERNETES:
            return f"RayCluster {self.namespace}/{self.name}"
        if self.backend is Backend.LOCAL:
            return f"local Ray cluster {self.name} at {self.address}"
        return f"Ray cluster at {self.address}"
