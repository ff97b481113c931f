"""Real-path latencies on the KubeRay control plane (a benchmark: measures and prints, asserts nothing).

For N runs: create a transient RayCluster through the hook, let RayJobTrigger wait for it, submit a
short job and report. Prints per run and the medians of:
  create -> ready      RayCluster created -> the trigger's watch sees it ready
  ready -> submitted   ready seen -> the job accepted by the Jobs API
  ready -> job start   ready seen -> Ray's job start_time
  job end -> event     Ray's job end_time -> the trigger's event

    python -m benchmarks.kuberay_latency [--runs 5] [--job-seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid

from kubernetes import client

from airflow_provider_flyray.cluster import Backend, ClusterRef
from airflow_provider_flyray.config import HeadNodeConfig, RayJobConfig
from airflow_provider_flyray.hooks.ray_cluster import RayClusterHook
from airflow_provider_flyray.jobs_api import JobSubmission
from airflow_provider_flyray.manifest import task_cluster_manifest
from airflow_provider_flyray.naming import (
    TaskIdentity,
    submission_id_for,
)
from airflow_provider_flyray.triggers.ray_job import RayJobTrigger

HEAD = HeadNodeConfig(
    requests={"cpu": "1", "memory": "1Gi"}, ray_start_params={"num-cpus": "1", "object-store-memory": "100000000"}
)


async def first_event(trigger: RayJobTrigger) -> dict:
    async for event in trigger.run():
        return dict(event.payload)
    raise RuntimeError("no event")


def one_run(hook: RayClusterHook, namespace: str, job_seconds: float) -> dict[str, float]:
    identity = TaskIdentity("bench", "latency", uuid.uuid4().hex)
    manifest = task_cluster_manifest(RayJobConfig(head_node_config=HEAD), identity, namespace)
    created = time.time()
    hook.create_or_adopt_cluster(manifest, identity.task_key)
    ref = ClusterRef(Backend.KUBERNETES, name=manifest["metadata"]["name"], namespace=namespace, owned=True)
    try:
        trigger = RayJobTrigger(
            ray_conn_id="ray_bench",
            cluster=ref.to_dict(),
            submission=JobSubmission(submission_id_for(identity), f"sleep {job_seconds}").to_dict(),
            owner_key=identity.task_key,
            poll_interval=5,
            startup_deadline=time.time() + 300,
            get_logs=True,
        )
        event = asyncio.run(first_event(trigger))
    finally:
        hook.delete_cluster(ref, identity.task_key)
    if event["status"] != "success":
        raise RuntimeError(f"run failed: {event['reason']}")
    t = event["timings"]
    return {
        "create_to_ready": t["cluster_ready"] - created,
        "ready_to_submitted": t["submitted"] - t["cluster_ready"],
        "ready_to_job_start": event["start_time"] / 1000 - t["cluster_ready"],
        "job_end_to_event": t["event"] - event["end_time"] / 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--job-seconds", type=float, default=3)
    args = parser.parse_args()

    from tests.kube import cluster as control_plane

    started_here = not control_plane.is_up()
    kubeconfig = control_plane.up()
    api = client.CoreV1Api(client.ApiClient(_config(kubeconfig)))
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    api.create_namespace({"metadata": {"name": namespace}})
    os.environ["AIRFLOW_CONN_RAY_BENCH"] = json.dumps(
        {
            "conn_type": "flyray",
            "extra": {"kube_config_path": kubeconfig, "namespace": namespace, "dashboard_access": "pod"},
        }
    )
    hook = RayClusterHook("ray_bench")
    rows = []
    try:
        for i in range(args.runs):
            row = one_run(hook, namespace, args.job_seconds)
            rows.append(row)
            print(f"run {i + 1}: " + ", ".join(f"{k}={v:.2f}s" for k, v in row.items()), flush=True)
    finally:
        api.delete_namespace(namespace)
        if started_here:
            control_plane.down()
    print(f"\nmedians over {len(rows)} runs (python -m benchmarks.kuberay_latency --runs {args.runs}):")
    for key in rows[0]:
        print(f"  {key:20s} {statistics.median(r[key] for r in rows):6.2f}s")


def _config(kubeconfig: str) -> client.Configuration:
    from kubernetes import config

    configuration = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return configuration


if __name__ == "__main__":
    main()
