"""The fixed-poll baseline of the API-economy benchmark: what a naive poller does (astro-provider-ray's way).

Create the RayCluster, GET it every ``interval`` seconds until ready, submit the job through the API
server's service proxy (retrying every ``interval`` until the dashboard answers), GET the job every
``interval`` seconds until it ends, read its logs once, delete the cluster. Synchronous, as a worker-side
poller is. Same cluster spec, same job, same credentials and the same counting proxy as the provider's run.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import requests
import yaml
from kubernetes import client, config

from airflow_provider_flyray.config import RayJobConfig
from airflow_provider_flyray.manifest import (
    RAY_API_GROUP,
    RAY_API_VERSION,
    RAYCLUSTER_PLURAL,
    head_service_name,
    task_cluster_manifest,
)
from airflow_provider_flyray.naming import TaskIdentity
from airflow_provider_flyray.status import Startup, interpret_startup

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def run_fixed_poll(
    kubeconfig: str, namespace: str, ray_job_config: RayJobConfig, entrypoint: str, interval: float = 5.0
) -> dict[str, Any]:
    """One task's worth of work; returns the job's Ray ``start_time``/``end_time`` (epoch s) and its status."""
    api = config.new_client_from_config(kubeconfig)
    custom = client.CustomObjectsApi(api)
    with open(kubeconfig) as f:
        kc = yaml.safe_load(f)
    server = kc["clusters"][0]["cluster"]["server"].rstrip("/")
    token = kc["users"][0]["user"]["token"]
    identity = TaskIdentity("bench", "fixed_poll", uuid.uuid4().hex)
    manifest = task_cluster_manifest(ray_job_config, identity, namespace)
    name = manifest["metadata"]["name"]
    custom.create_namespaced_custom_object(RAY_API_GROUP, RAY_API_VERSION, namespace, RAYCLUSTER_PLURAL, manifest)
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {token}"
    base = f"{server}/api/v1/namespaces/{namespace}/services/{head_service_name(name)}:dashboard/proxy"
    submission_id = f"fixed-poll-{uuid.uuid4().hex[:8]}"
    try:
        deadline = time.monotonic() + 300
        while True:
            cluster = custom.get_namespaced_custom_object(
                RAY_API_GROUP, RAY_API_VERSION, namespace, RAYCLUSTER_PLURAL, name
            )
            if interpret_startup(cluster, []).state is Startup.READY:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"RayCluster {name} not ready")
            time.sleep(interval)
        while True:
            response = http.post(
                f"{base}/api/jobs/", json={"entrypoint": entrypoint, "submission_id": submission_id}, timeout=30
            )
            if response.ok:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not submit: {response.status_code} {response.text[:200]}")
            time.sleep(interval)
        while True:
            time.sleep(interval)
            info = http.get(f"{base}/api/jobs/{submission_id}", timeout=30).json()
            if info.get("status") in TERMINAL:
                break
        http.get(f"{base}/api/jobs/{submission_id}/logs", timeout=30)
    finally:
        custom.delete_namespaced_custom_object(RAY_API_GROUP, RAY_API_VERSION, namespace, RAYCLUSTER_PLURAL, name)
    return {
        "status": info.get("status"),
        "job_start_time": info["start_time"] / 1000,
        "job_end_time": info["end_time"] / 1000,
        "cluster": name,
    }
