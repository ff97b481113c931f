from airflow_provider_flyray.links.ray import RayDashboardLink, RayJobLink

__all__ = ["RayDashboardLink", "RayJobLink"]
