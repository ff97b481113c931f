"""RayJob mode: KubeRay owns the cluster's lifecycle, so nothing keeps running even if Airflow is lost.

``kuberay_resource="RayJob"`` (or the connection's ``kuberay_resource`` extra) makes the task create a
KubeRay ``RayJob`` instead of a ``RayCluster``: KubeRay creates the cluster from the same
``ray_job_config``, deletes it after the job (``shutdownAfterJobFinishes``) and stops it at
``activeDeadlineSeconds`` (from ``execution_timeout``), server-side. The task still submits the job
itself (``InteractiveMode``: exactly once, after uploading its local code), streams its log and returns
the function's result as XCom, and deletes the RayJob when it ends.

Needs a ``flyray`` connection ``ray_default`` to a Kubernetes cluster with the KubeRay operator (RayJob
mode has no local equivalent: on a ``local`` connection the tasks run on a local head, and say so).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_flyray import FlyteRayOperator, HeadNodeConfig, RayJobConfig

RAY_CONFIG = RayJobConfig(
    head_node_config=HeadNodeConfig(
        requests={"cpu": "1", "memory": "1Gi"}, ray_start_params={"num-cpus": "1", "object-store-memory": "100000000"}
    )
)

with DAG(
    dag_id="example_flyray_rayjob",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "ray", "kuberay"],
):
    hello = FlyteRayOperator(
        task_id="hello",
        entrypoint="python -c \"import ray; ray.init(); print('RAYJOB hello from', ray.get_runtime_context().get_job_id())\"",
        ray_job_config=RAY_CONFIG,
        kuberay_resource="RayJob",
        execution_timeout=timedelta(minutes=10),
        poll_interval=2,
    )

    @task.ray(
        ray_job_config=RAY_CONFIG,
        kuberay_resource="RayJob",
        runtime_env={"py_modules": ["flyray_example_helpers"]},
        execution_timeout=timedelta(minutes=10),
        poll_interval=2,
    )
    def shout(words: list[str]) -> list[str]:
        import flyray_example_helpers as helpers

        return [helpers.shout(w) for w in words]

    @task
    def report(shouted: list[str]) -> None:
        print("RAYJOB result:", shouted)

    hello >> report(shout(["ray", "job"]))
