"""Exactly-once submission: this try's job if Ray has it, else a live job of an earlier try, else submit.

The submission id is deterministic per try (:func:`~airflow_provider_flyray.naming.submission_id_for`),
so a restarted trigger finds its own job; a retry (new try, new id) adopts an earlier try's job that is
still running instead of starting a second one, recognised by the task key in the job's metadata.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from airflow_provider_flyray import jobs_api
from airflow_provider_flyray.core.dashboard import DashboardClient
from airflow_provider_flyray.jobs_api import DashboardEndpoint, JobSubmission
from airflow_provider_flyray.status import job_status_of


@dataclass(frozen=True)
class FollowedJob:
    """The job the task follows: this try's, or a still-running one of an earlier try."""

    submission_id: str
    submitted_now: bool
    # The followed job's runtime_env (an adopted job's differs from this try's: e.g. its result marker).
    runtime_env: dict[str, Any] | None


async def ensure_submitted(
    dashboard: DashboardClient,
    endpoint: DashboardEndpoint,
    job: JobSubmission,
    owner_key: str,
    log: logging.Logger | Any,
) -> FollowedJob:
    if await dashboard.get_job(endpoint, job.submission_id) is not None:
        log.info("Ray job %s already submitted; following it", job.submission_id)
        return FollowedJob(job.submission_id, False, job.runtime_env)
    # A first try has no earlier try to adopt: skip listing every job of the cluster (N triggers
    # starting together on one cluster would each download and parse the whole, growing list).
    first_try = job.metadata.get("airflow_try_number") == "1"
    earlier_jobs = [] if first_try else await dashboard.list_jobs(endpoint)
    for earlier in jobs_api.jobs_of_task(earlier_jobs, owner_key):
        if not job_status_of(earlier).is_terminal:
            adopted = str(earlier.get("submission_id"))
            log.info("Reattaching to Ray job %s of an earlier try (still %s)", adopted, earlier.get("status"))
            return FollowedJob(adopted, False, earlier.get("runtime_env"))
    submission_id = await dashboard.submit_job(endpoint, job)
    log.info("Submitted Ray job %s: %s", submission_id, job.entrypoint)
    return FollowedJob(submission_id, True, job.runtime_env)
