from airflow_provider_flyray.operators.ray import FlyteRayOperator

__all__ = ["FlyteRayOperator"]
