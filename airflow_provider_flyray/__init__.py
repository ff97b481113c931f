"""Run Ray jobs on transient KubeRay clusters from Apache Airflow (Flyte's Ray integration, for Airflow).

Imports are lazy so that ``get_provider_info`` (read by every ``airflow`` command) stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any


def _version() -> str:
    """The installed distribution's version: pyproject.toml is the one place it is written."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("airflow-provider-flyray")
    except PackageNotFoundError:  # the source tree on sys.path, never installed
        return "0+unknown"


__version__ = _version()

_EXPORTS = {
    "FlyteRayOperator": "airflow_provider_flyray.operators.ray",
    "ray_task": "airflow_provider_flyray.decorators.ray",
    "RayDecoratedOperator": "airflow_provider_flyray.decorators.ray",
    "RayCreateClusterOperator": "airflow_provider_flyray.operators.ray_cluster",
    "RayDeleteClusterOperator": "airflow_provider_flyray.operators.ray_cluster",
    "ray_cluster_for_run": "airflow_provider_flyray.operators.ray_cluster",
    "RaySweepPoolsOperator": "airflow_provider_flyray.operators.ray_pool",
    "ReusePolicy": "airflow_provider_flyray.reuse",
    "RayClusterHook": "airflow_provider_flyray.hooks.ray_cluster",
    "RayJobTrigger": "airflow_provider_flyray.triggers.ray_job",
    "RayJobConfig": "airflow_provider_flyray.config",
    "HeadNodeConfig": "airflow_provider_flyray.config",
    "WorkerNodeConfig": "airflow_provider_flyray.config",
    "RayDashboardLink": "airflow_provider_flyray.links.ray",
    "RayJobLink": "airflow_provider_flyray.links.ray",
}

__all__ = [*_EXPORTS, "__version__"]

if TYPE_CHECKING:
    from airflow_provider_flyray.config import HeadNodeConfig, RayJobConfig, WorkerNodeConfig
    from airflow_provider_flyray.decorators.ray import RayDecoratedOperator, ray_task
    from airflow_provider_flyray.hooks.ray_cluster import RayClusterHook
    from airflow_provider_flyray.links.ray import RayDashboardLink, RayJobLink
    from airflow_provider_flyray.operators.ray import FlyteRayOperator
    from airflow_provider_flyray.operators.ray_cluster import (
        RayCreateClusterOperator,
        RayDeleteClusterOperator,
        ray_cluster_for_run,
    )
    from airflow_provider_flyray.operators.ray_pool import RaySweepPoolsOperator
    from airflow_provider_flyray.reuse import ReusePolicy
    from airflow_provider_flyray.triggers.ray_job import RayJobTrigger


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'airflow_provider_flyray' has no attribute {name!r}")
