"""Before submitting: does the cluster have the local code the job names? (The trigger's side of
:mod:`airflow_provider_flyray.operators.shipping`.)

The trigger cannot upload: the local paths exist on the Airflow worker, not necessarily on the triggerer.
It only asks the dashboard (``GET /api/packages/gcs/<name>``, which also pins a package there for a while,
so it is not collected before the job starts) and reports what is missing; the worker uploads it and
defers again with the same submission.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow_provider_flyray.core.dashboard import DashboardClient
from airflow_provider_flyray.jobs_api import DashboardEndpoint, JobSubmission


async def missing_packages(
    dashboard: DashboardClient, endpoint: DashboardEndpoint, job: JobSubmission, log: logging.Logger | Any
) -> list[str]:
    """The URIs of ``job``'s packages the cluster lacks; none once this try's job is on the cluster (a
    restarted trigger follows it, whatever became of its packages)."""
    if not job.packages or await dashboard.get_job(endpoint, job.submission_id) is not None:
        return []
    missing = []
    for package in job.packages:
        if await dashboard.package_exists(endpoint, package.uri):
            log.info("%s: %s is on the cluster", package.field, package.uri)
        else:
            missing.append(package.uri)
    if missing:
        log.info("The cluster lacks %s: the worker uploads them, then the job is submitted", ", ".join(missing))
    return missing
