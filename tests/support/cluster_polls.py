"""Status requests of many RayJobTriggers waiting on one Ray head, counted where the dashboard receives them.

A counting loopback proxy (:class:`~tests.infra.kube.api_proxy.ApiProxy`, plain HTTP to the head's
dashboard, WebSockets passed through) stands in front of a real local Ray head; the triggers' cluster
is the proxy's address, so every request they send is recorded with its instant. The status requests
counted are ``GET /api/jobs/`` (the shared list) and ``GET /api/jobs/{id}`` of the jobs run, within the
steady window: from a poll interval after the last job was submitted to the first job's end (Ray's own
start and end times). Outside it: the submission's checks, each job's first check (a list from before
its submission cannot answer it) and the final confirmations; ``whole_run`` has them all. Used by
tests/integration/test_cluster_polls_local.py and benchmarks/cluster_polls.py.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from airflow_provider_flyray.backends.address import AddressBackend
from airflow_provider_flyray.jobs_api import JobSubmission
from airflow_provider_flyray.naming import TaskIdentity, job_metadata_for, submission_id_for
from airflow_provider_flyray.triggers.ray_job import RayJobTrigger
from tests.infra.kube.api_proxy import ApiProxy, Record
from tests.support.ray_jobs import first_event

LIST = "/api/jobs/"
JOB = "sleep {seconds}; echo finished-{number}"


def counting_proxy(head_address: str) -> ApiProxy:
    """A started proxy to the head's dashboard (``ca_file=""``: the upstream is plain HTTP)."""
    return ApiProxy(head_address, ca_file="").start()


@dataclass
class PollCount:
    jobs: int
    poll_interval: float
    window_seconds: float  # a poll interval after the last submission to the first end
    lists: int  # GET /api/jobs/ in the window
    job_gets: int  # GET /api/jobs/{id} of these jobs in the window
    whole_run: dict[str, int]  # every request of the run, by kind
    events: list[dict[str, Any]]

    @property
    def polls(self) -> float:
        return self.window_seconds / self.poll_interval

    @property
    def requests_per_poll(self) -> float:
        return (self.lists + self.job_gets) / self.polls if self.polls else 0.0

    @property
    def per_job_per_poll(self) -> float:
        return self.requests_per_poll / self.jobs

    def to_dict(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "poll_interval": self.poll_interval,
            "window_seconds": round(self.window_seconds, 2),
            "lists": self.lists,
            "job_gets": self.job_gets,
            "requests_per_poll": round(self.requests_per_poll, 3),
            "per_job_per_poll": round(self.per_job_per_poll, 3),
            "whole_run": self.whole_run,
            "statuses": sorted(Counter(e["status"] for e in self.events).items()),
        }


def trigger_for(address: str, number: int, seconds: float, poll_interval: float) -> RayJobTrigger:
    identity = TaskIdentity("polls", f"job{number}", uuid.uuid4().hex)
    submission = JobSubmission(
        submission_id_for(identity), JOB.format(seconds=seconds, number=number), metadata=job_metadata_for(identity)
    )
    return RayJobTrigger(
        ray_conn_id=None,
        cluster=AddressBackend.ref_for(address).to_dict(),
        submission=submission.to_dict(),
        owner_key=identity.task_key,
        poll_interval=poll_interval,
    )


def kind(record: Record, ids: set[str]) -> str:
    path = record.path.split("?", 1)[0]
    if record.method == "GET" and path == LIST:
        return "list"
    if record.method == "GET" and path.startswith(LIST) and path[len(LIST) :] in ids:
        return "job_get"
    for submission_id in ids:
        path = path.replace(submission_id, "{id}")
    return f"{record.method} {path}"


def run_counted(proxy: ApiProxy, count: int, seconds: float, poll_interval: float, timeout: float = 300) -> PollCount:
    """Run ``count`` triggers (jobs sleeping ``seconds``) at once in one event loop, through ``proxy``."""
    triggers = [trigger_for(proxy.url, number, seconds, poll_interval) for number in range(count)]
    ids = {t.job.submission_id for t in triggers}
    since = time.monotonic()

    async def all_events() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(first_event(t) for t in triggers)))

    events = asyncio.run(asyncio.wait_for(all_events(), timeout))
    records = [r for r in list(proxy.records) if r.at >= since]
    # Ray's start and end times (epoch ms) on the proxy's monotonic clock (it runs in this process).
    offset = time.time() - time.monotonic()
    if any(e.get("start_time") is None or e.get("end_time") is None for e in events):
        raise AssertionError(f"a job without start or end time: {events}")
    starts = [float(e["start_time"]) for e in events]
    ends = [float(e["end_time"]) for e in events]
    lo = max(starts) / 1000 - offset + poll_interval
    hi = min(ends) / 1000 - offset
    window = [r for r in records if lo <= r.at <= hi]
    in_window = Counter(kind(r, ids) for r in window)
    return PollCount(
        jobs=count,
        poll_interval=poll_interval,
        window_seconds=max(0.0, hi - lo),
        lists=in_window["list"],
        job_gets=in_window["job_get"],
        whole_run=dict(Counter(kind(r, ids) for r in records).most_common()),
        events=events,
    )
