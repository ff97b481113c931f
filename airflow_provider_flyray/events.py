"""What the trigger reports back to the worker: a typed event with plain-data ``to_dict``/``from_dict``.

The dict form is what travels through Airflow (``TriggerEvent`` payload, stored in the metadata DB), so
it holds no secrets; ``RayJobEvent`` is what ``execute_complete`` and its overrides read.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from airflow_provider_flyray.cluster import ClusterRef
from airflow_provider_flyray.status import JobStatus


class Outcome(StrEnum):
    """How the wait ended, from the task's point of view."""

    SUCCESS = "success"  # the job succeeded
    SUBMITTED = "submitted"  # submitted and not waited for (wait_for_completion=False)
    FAILED = "failed"  # the job failed, or the cluster did not start
    STOPPED = "stopped"  # the job was stopped (e.g. from the Ray dashboard)
    TIMEOUT = "timeout"  # execution_timeout reached: the job was stopped
    ERROR = "error"  # the provider could not follow the job (API errors, cluster gone, TLS...)
    # Not an end: the cluster lacks local code the job needs; the worker uploads it and defers again.
    PACKAGES_MISSING = "packages_missing"
    READY = "ready"  # the cluster is ready (a trigger given no job to submit)

    @property
    def succeeded(self) -> bool:
        return self in (Outcome.SUCCESS, Outcome.SUBMITTED, Outcome.READY)


@dataclass(frozen=True)
class RayJobEvent:
    """The trigger's one event: how the wait ended, on which cluster, with the job's status and last lines."""

    status: Outcome
    cluster: ClusterRef
    submission_id: str
    dashboard_url: str | None = None
    # Why it failed, for the task's failure message ("" on success).
    reason: str = ""
    # The last lines of the job's log, shown in the failure message.
    log_tail: list[str] = field(default_factory=list)
    # Ray's own view of the job, when it got that far.
    job_status: str | None = None
    message: str | None = None
    driver_exit_code: int | None = None
    start_time: int | None = None  # epoch milliseconds, as Ray reports them
    end_time: int | None = None
    # "startup" when the cluster or its dashboard never became usable.
    phase: str | None = None
    # A function job's return value (JSON, read from its log: see results.py), for XCom; else None.
    result: Any = None
    # Epoch seconds of the milestones (see timings.py).
    timings: dict[str, float] = field(default_factory=dict)
    # PACKAGES_MISSING: the URIs the cluster lacks, and the submission to defer again with (no secrets).
    missing_packages: list[str] = field(default_factory=list)
    submission: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["status"] = self.status.value
        data["cluster"] = self.cluster.to_dict()
        data["log_tail"] = list(self.log_tail)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RayJobEvent:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["status"] = Outcome(values["status"])
        values["cluster"] = ClusterRef.from_dict(values["cluster"])
        return cls(**values)


def outcome_of_job(status: JobStatus, submission_id: str, message: str | None) -> tuple[Outcome, str]:
    """How a finished Ray job ends the task, and the reason shown when it is not a success."""
    outcome = {JobStatus.SUCCEEDED: Outcome.SUCCESS, JobStatus.STOPPED: Outcome.STOPPED}.get(status, Outcome.FAILED)
    if outcome is Outcome.SUCCESS:
        return outcome, ""
    return outcome, f"Ray job {submission_id} {status.value}: {message or ''}".strip()
