"""The Ray jobs a task submitted, counted on the clusters themselves.

Jobs are counted on the cluster itself (the Jobs API of every managed head, polled from the host through
the pod network), so the count includes anything a retry or a restarted triggerer might have submitted
and survives the cluster's deletion at the end of the task.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.request
from collections import defaultdict
from typing import Any

from kubernetes import client

from tests.support.leftovers import head_pod, managed_clusters


class JobCounter(threading.Thread):
    """Polls the Jobs API of every managed RayCluster in a namespace and remembers every submission.

    ``jobs_for(task_key)`` is the number of distinct Ray jobs a task (``airflow_task_key`` metadata)
    submitted over all its tries; ``clusters`` every cluster name (with uid) seen.
    """

    def __init__(
        self,
        core: client.CoreV1Api,
        custom: client.CustomObjectsApi,
        namespace: str,
        selector: str = "",
        headers: dict[str, str] | None = None,
        period: float = 0.3,
    ) -> None:
        super().__init__(daemon=True, name=f"job-counter-{namespace}")
        self.core, self.custom, self.namespace, self.selector = core, custom, namespace, selector
        self.headers = headers or {}
        self.period = period
        self.jobs: dict[str, dict[str, Any]] = {}  # submission_id -> latest job info
        self.clusters: dict[str, set[str]] = defaultdict(set)  # name -> uids
        self.pod_uids: set[str] = set()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            with contextlib.suppress(Exception):
                self.poll_once()
            self._halt.wait(self.period)

    def poll_once(self) -> None:
        for pod in self.core.list_namespaced_pod(self.namespace, label_selector=self.selector).items:
            self.pod_uids.add(pod.metadata.uid)
        for cluster in managed_clusters(self.custom, self.namespace, self.selector):
            name = cluster["metadata"]["name"]
            self.clusters[name].add(cluster["metadata"]["uid"])
            pod = head_pod(self.core, self.namespace, name)
            if pod is None or not pod.status.pod_ip:
                continue
            request = urllib.request.Request(f"http://{pod.status.pod_ip}:8265/api/jobs/", headers=self.headers)
            with contextlib.suppress(OSError, ValueError):
                for job in json.loads(urllib.request.urlopen(request, timeout=2).read()):
                    if job.get("submission_id"):
                        self.jobs[job["submission_id"]] = job

    def jobs_for(self, task_key_part: str) -> list[str]:
        """Submission ids whose ``airflow_task_key`` contains ``task_key_part`` (e.g. the dag id)."""
        return sorted(
            sid
            for sid, job in self.jobs.items()
            if task_key_part in str((job.get("metadata") or {}).get("airflow_task_key", ""))
        )

    def wait_for_job(self, task_key_part: str, status: str = "RUNNING", timeout: float = 240) -> str:
        """The submission id of the task's first job seen in ``status``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for sid in self.jobs_for(task_key_part):
                if self.jobs[sid].get("status") == status:
                    return sid
            time.sleep(0.3)
        raise TimeoutError(
            f"no {status} Ray job of {task_key_part} within {timeout:.0f}s (seen: {self.jobs_for(task_key_part)})"
        )

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)
        with contextlib.suppress(Exception):
            self.poll_once()

    def __enter__(self) -> JobCounter:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
