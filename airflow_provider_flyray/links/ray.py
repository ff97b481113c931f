"""Extra links: "Ray Dashboard" and "Ray Job" buttons on the task instance.

In Airflow 3 the API server never imports these classes: it reads the XCom under ``xcom_key``. The
operator pushes both URLs before deferring, so the buttons are there while the task waits. Only
absolute http(s) URLs are pushed; with none known there is no button rather than a broken one.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.common.compat.sdk import BaseOperatorLink, XCom


def job_url(dashboard_url: str, submission_id: str) -> str:
    """Ray dashboard deep link to one job (a hash route of the dashboard's single-page app)."""
    return f"{dashboard_url.rstrip('/')}/#/jobs/{submission_id}"


def is_browser_url(url: Any) -> bool:
    return isinstance(url, str) and url.startswith(("http://", "https://"))


class _XComLink(BaseOperatorLink):
    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        value = XCom.get_value(key=self.xcom_key, ti_key=ti_key)
        return value if is_browser_url(value) else ""


class RayDashboardLink(_XComLink):
    """The Ray dashboard of the cluster the task's job runs on."""

    name = "Ray Dashboard"


class RayJobLink(_XComLink):
    """The task's Ray job in the Ray dashboard."""

    name = "Ray Job"


def publish_links(ti: Any, dashboard_url: str | None, submission_id: str | None = None) -> None:
    """Push the buttons' URLs (the dashboard, and the job when known) as the task's XComs."""
    if not is_browser_url(dashboard_url):
        return
    assert dashboard_url is not None
    ti.xcom_push(key=RayDashboardLink().xcom_key, value=dashboard_url)
    if submission_id:
        ti.xcom_push(key=RayJobLink().xcom_key, value=job_url(dashboard_url, submission_id))
