"""DAGs of tests/faults/test_security.py (copied into the security stack's dags folder).

The head runs Ray with token authentication (``RAY_AUTH_MODE=token``), the token coming from the
Kubernetes Secret ``ray-dashboard-token`` (key ``auth_token``) through ``valueFrom.secretKeyRef``: KubeRay
1.5.0 has no ``authOptions``, so the env goes into the head's pod template (the provider's public API).
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG

from airflow_provider_flyray import FlyteRayOperator, HeadNodeConfig, RayJobConfig

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
JOB = "python -c \"import ray; ray.init(); print('FLYRAY_RESULT token auth ok, nodes:', len(ray.nodes()))\""


def token_dag(dag_id: str, conn_id: str, **kwargs) -> DAG:
    with DAG(dag_id, schedule=None, start_date=START, catchup=False) as dag:
        FlyteRayOperator(
            task_id="job",
            entrypoint=JOB,
            ray_job_config=TOKEN_HEAD,
            ray_conn_id=conn_id,
            deferrable=True,
            poll_interval=1,
            startup_timeout=180,
            **kwargs,
        )
    return dag


# The right token, dashboard at the head pod's IP (`Authorization: Bearer`).
token_dag("sec_token_ok", "ray_sec")
# A wrong token: the dashboard answers 403.
token_dag("sec_token_wrong", "ray_sec_wrong")
# The right token through the API server's service proxy (`X-Ray-Authorization`); the connection says
# namespace `default`, the task names the test namespace: every request must stay in the task's.
token_dag("sec_token_proxy", "ray_sec_proxy", namespace=os.environ.get("FLYRAY_SEC_NAMESPACE", "default"))


# Local code (a working_dir on the Airflow machine) through the API server's service proxy, with token
# auth: on a transient cluster (the trigger finds the package missing, the worker uploads and defers
# again) and on an existing one (uploaded before deferral; a second run finds it there).
SHIP_DIR = os.environ.get("FLYRAY_SEC_SHIP_DIR")
if SHIP_DIR:
    for ship_dag_id, where in (
        ("sec_ship_transient", {"ray_job_config": TOKEN_HEAD}),
        ("sec_ship_existing", {"cluster_name": os.environ.get("FLYRAY_SEC_SHIP_CLUSTER", "sec-ship-existing")}),
    ):
        with DAG(ship_dag_id, schedule=None, start_date=START, catchup=False):
            FlyteRayOperator(
                task_id="job",
                entrypoint="python main.py",
                runtime_env={"working_dir": SHIP_DIR},
                ray_conn_id="ray_sec_proxy",
                namespace=os.environ.get("FLYRAY_SEC_NAMESPACE", "default"),
                deferrable=True,
                poll_interval=1,
                startup_timeout=180,
                **where,
            )
