"""``@task.ray`` DAGs on the KubeRay control plane (tests/integration/test_decorator_kuberay.py), run
with `airflow dags test`.

``flyray_decorator_kube_sa``: a transient RayCluster made, used and deleted through the connection
``ray_kube_sa`` (the test's tenant: a ServiceAccount token, the dashboard through the API server's
service proxy). The head runs Ray with token authentication (``RAY_AUTH_MODE=token``, the token from the
Secret ``ray-dashboard-token`` the test creates, as in tests/faults/dags/flyray_security_dags.py); the
connection's ``dashboard_token`` goes through the proxy as ``X-Ray-Authorization``. The function reports
where it ran (the pod's hostname is the pod's name) and what its Ray tasks computed.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_flyray import HeadNodeConfig, RayJobConfig

START = pendulum.datetime(2026, 1, 1, tz="UTC")
TOKEN_SECRET = "ray-dashboard-token"
TOKEN_AUTH_ENV = [
    {"name": "RAY_AUTH_MODE", "value": "token"},
    {"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": TOKEN_SECRET, "key": "auth_token"}}},
]
TOKEN_HEAD = RayJobConfig(
    head_node_config=HeadNodeConfig(
        requests={"cpu": "1", "memory": "1Gi"},
        ray_start_params={"num-cpus": "1", "object-store-memory": "100000000"},
        pod_template={"spec": {"containers": [{"name": "ray-head", "env": TOKEN_AUTH_ENV}]}},
    )
)

with DAG("flyray_decorator_kube_sa", schedule=None, start_date=START, catchup=False, default_args={"retries": 0}):

    @task.ray(ray_conn_id="ray_kube_sa", ray_job_config=TOKEN_HEAD, poll_interval=2, startup_timeout=240)
    def where_it_ran(n: int) -> dict[str, Any]:
        import socket

        import ray

        @ray.remote
        def cube(x: int) -> int:
            return x**3

        return {"host": socket.gethostname(), "cubes": ray.get([cube.remote(i) for i in range(n)])}

    where_it_ran(4)
