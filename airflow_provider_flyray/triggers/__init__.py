from airflow_provider_flyray.triggers.ray_job import RayJobTrigger

__all__ = ["RayJobTrigger"]
