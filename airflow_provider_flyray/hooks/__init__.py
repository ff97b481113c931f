from airflow_provider_flyray.hooks.ray_cluster import AsyncRaySession, RayClusterHook

__all__ = ["AsyncRaySession", "RayClusterHook"]
