"""``@task.ray`` DAGs on the KubeRay control plane (tests/integration/test_decorator_kuberay.py), run
with `airflow dags test`.

``flyray_decorator_kube_sa``: a transient RayCluster made, used and deleted through the connection
``ray_kube_sa`` (the test's tenant: a ServiceAccount token, the dashboard through the API server's
service proxy). The function reports where it ran (the pod's hostname is the pod's name) and what its
Ray tasks computed.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_flyray import HeadNodeConfig, RayJobConfig

START = pendulum.datetime(2026, 1, 1, tz="UTC")
HEAD = RayJobConfig(
    head_node_config=HeadNodeConfig(
        requests={"cpu": "1", "memory": "1Gi"}, ray_start_params={"num-cpus": "1", "object-store-memory": "100000000"}
    )
)

with DAG("flyray_decorator_kube_sa", schedule=None, start_date=START, catchup=False, default_args={"retries": 0}):

    @task.ray(ray_conn_id="ray_kube_sa", ray_job_config=HEAD, poll_interval=2, startup_timeout=240)
    def where_it_ran(n: int) -> dict[str, Any]:
        import socket

        import ray

        @ray.remote
        def cube(x: int) -> int:
            return x**3

        return {"host": socket.gethostname(), "cubes": ray.get([cube.remote(i) for i in range(n)])}

    where_it_ran(4)
