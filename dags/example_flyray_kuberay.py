"""A transient KubeRay cluster per task try: created, used for one Ray job, deleted.

Needs a ``flyray`` connection ``ray_default`` that reaches a Kubernetes cluster running the KubeRay
operator (see the README). Resources are small so the example fits a laptop-sized cluster.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_flyray import FlyteRayOperator, HeadNodeConfig, RayJobConfig, WorkerNodeConfig

COUNT_NODES = (
    'python -c "import ray, socket; ray.init(); '
    "nodes = [n for n in ray.nodes() if n['Alive']]; "
    "hosts = ray.get([ray.remote(num_cpus=1)(lambda: socket.gethostname()).remote() for _ in range({{ params.tasks }})]); "
    "print('FLYRAY_RESULT alive nodes:', len(nodes), 'task hosts:', sorted(set(hosts)))\""
)

with DAG(
    dag_id="example_flyray_kuberay",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"tasks": 4},
    tags=["example", "ray", "kuberay"],
):
    FlyteRayOperator(
        task_id="train",
        entrypoint=COUNT_NODES,
        ray_job_config=RayJobConfig(
            head_node_config=HeadNodeConfig(
                requests={"cpu": "1", "memory": "1Gi"},
                ray_start_params={"num-cpus": "1", "object-store-memory": "100000000"},
            ),
            worker_node_config=[
                WorkerNodeConfig(
                    group_name="cpu",
                    replicas=1,
                    requests={"cpu": "1", "memory": "1Gi"},
                    ray_start_params={"num-cpus": "1", "object-store-memory": "100000000"},
                )
            ],
            runtime_env={"env_vars": {"MODE": "full"}},
        ),
        ray_conn_id="ray_default",
        deferrable=True,
        poll_interval=2,
        startup_timeout=300,
    )
