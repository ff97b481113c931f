from airflow_provider_flyray.core.session import RaySession
from airflow_provider_flyray.hooks.ray_cluster import RayClusterHook

# The async session's name before the core moved to airflow_provider_flyray.core.
AsyncRaySession = RaySession

__all__ = ["AsyncRaySession", "RayClusterHook", "RaySession"]
