"""RayJobTrigger: waits, in the triggerer, for the cluster to start and the Ray job to end.

It submits the job exactly once (deterministic submission id; a retry adopts a still-running job of an
earlier try), streams the job's log lines into the task log, notices the end as soon as the log tail
closes (confirmed by the job status, never decided by a dropped stream), and enforces the startup and
execution deadlines. It yields one :class:`~airflow_provider_flyray.events.RayJobEvent` holding
everything ``execute_complete`` needs.

It never asks which kind of cluster it follows: the backend named by the ClusterRef answers readiness,
the dashboard's address and whether the cluster went away (:mod:`airflow_provider_flyray.backends`).

A triggerer restart runs :meth:`RayJobTrigger.run` again from the top with the same kwargs: every step derives its
progress from Kubernetes and Ray, never from memory. ``cleanup()`` deletes nothing; :meth:`RayJobTrigger.on_kill`
(a user marked the task failed or cleared it) stops the job and applies the cluster policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from functools import cached_property
from typing import Any

import aiohttp
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_flyray import jobs_api
from airflow_provider_flyray.backends import ClusterBackend, backend_for
from airflow_provider_flyray.cluster import ClusterRef
from airflow_provider_flyray.config import OnFinishAction
from airflow_provider_flyray.connection import ConnectionSettings
from airflow_provider_flyray.core.dashboard import DASHBOARD_TIMEOUT
from airflow_provider_flyray.core.session import RaySession
from airflow_provider_flyray.errors import ClusterGoneError, FlyrayError
from airflow_provider_flyray.events import Outcome, RayJobEvent, outcome_of_job
from airflow_provider_flyray.function_call import result_marker_of
from airflow_provider_flyray.jobs_api import DashboardEndpoint, JobSubmission
from airflow_provider_flyray.owners import Ending
from airflow_provider_flyray.results import ResultFrames, function_verdict
from airflow_provider_flyray.status import JobStatus, Startup, job_status_of
from airflow_provider_flyray.timings import Timings
from airflow_provider_flyray.triggers.job_logs import JobLogStream
from airflow_provider_flyray.triggers.job_wait import JobWait
from airflow_provider_flyray.triggers.packages import missing_packages
from airflow_provider_flyray.triggers.submission import ensure_submitted

DEFAULT_DASHBOARD_UNREACHABLE_TIMEOUT = 120.0
# Seconds each call made after the execution deadline may take (the stop, the last log lines).
AFTER_DEADLINE_CALL = 1.0
# What serialize() stores: plain, secret-free data (the metadata DB holds it).
# fmt: off
TRIGGER_KWARGS = (
    "ray_conn_id", "cluster", "submission", "owner_key", "poll_interval", "startup_deadline", "deadline",
    "get_logs", "on_finish_action", "keep_alive_seconds", "submit_only", "dashboard_unreachable_timeout",
    "timings", "earliest_event",
)
# fmt: on
# Errors that end the wait with a reason rather than as a crash of the trigger.
EXPLAINED_ERRORS = (TimeoutError, FlyrayError, PermissionError, aiohttp.ClientError, OSError)


class RayJobTrigger(BaseTrigger):
    """Wait for a Ray cluster, submit a Ray job once, stream its logs and report how it ended.

    :param ray_conn_id: ``flyray`` connection id (credentials are looked up here, never passed in).
    :param cluster: a :class:`~airflow_provider_flyray.cluster.ClusterRef` as a dict.
    :param submission: a :class:`~airflow_provider_flyray.jobs_api.JobSubmission` as a dict; None: only
        wait until the cluster is ready (``READY``: the setup task of a shared cluster).
    :param owner_key: the key of the cluster's and the job's owner (the task instance, without try).
    :param poll_interval: seconds between job status checks (the log tail ends waits earlier).
    :param startup_deadline: epoch seconds by which the cluster must be ready, or None.
    :param deadline: epoch seconds of the task's execution_timeout, or None.
    :param get_logs: stream the job's log lines into the task log.
    :param on_finish_action: cluster policy, applied by ``on_kill``; the worker applies it otherwise.
    :param keep_alive_seconds: after the job ends, keep waiting this long before reporting (Flyte's
        ``ttl_seconds_after_finished``), so the dashboard stays inspectable without holding a worker.
    :param submit_only: return as soon as the job is submitted (``wait_for_completion=False``).
    :param timings: the worker's milestones (see :mod:`~airflow_provider_flyray.timings`).
    :param earliest_event: epoch seconds before which no event is yielded (see ``min_deferral_seconds``).
    """

    def __init__(
        self,
        *,
        ray_conn_id: str | None,
        cluster: dict[str, Any],
        submission: dict[str, Any] | None,
        owner_key: str,
        poll_interval: float = 5.0,
        startup_deadline: float | None = None,
        deadline: float | None = None,
        get_logs: bool = True,
        on_finish_action: str = OnFinishAction.DELETE_CLUSTER.value,
        keep_alive_seconds: int | None = None,
        submit_only: bool = False,
        dashboard_unreachable_timeout: float = DEFAULT_DASHBOARD_UNREACHABLE_TIMEOUT,
        timings: dict[str, float] | None = None,
        earliest_event: float | None = None,
    ) -> None:
        super().__init__()
        self.ray_conn_id = ray_conn_id
        self.cluster = cluster
        self.submission = submission
        self.owner_key = owner_key
        self.poll_interval = float(poll_interval)
        self.startup_deadline = startup_deadline
        self.deadline = deadline
        self.get_logs = get_logs
        self.on_finish_action = on_finish_action
        self.keep_alive_seconds = keep_alive_seconds
        self.submit_only = submit_only
        self.dashboard_unreachable_timeout = float(dashboard_unreachable_timeout)
        self.timings = dict(timings or {})
        self.earliest_event = earliest_event
        # Set once the job is known on the cluster (this try's id, or an adopted earlier try's id).
        self._active_submission_id: str | None = None
        self._endpoint: DashboardEndpoint | None = None
        self._settings: ConnectionSettings | None = None
        self._logs = JobLogStream(lambda: self.log)
        self._timings = Timings(self.timings)
        self._timings.mark("trigger_started")

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {k: getattr(self, k) for k in TRIGGER_KWARGS}

    @cached_property
    def ref(self) -> ClusterRef:
        return ClusterRef.from_dict(self.cluster)

    @property
    def backend(self) -> ClusterBackend:
        return backend_for(self.ref)

    @cached_property
    def job(self) -> JobSubmission:
        assert self.submission is not None, "a trigger without a job has no submission"
        return JobSubmission.from_dict(self.submission)

    @property
    def _own_submission_id(self) -> str:
        return self.job.submission_id if self.submission is not None else ""

    def session(self) -> RaySession:
        return RaySession(self.ray_conn_id, namespace=self.ref.namespace, log=self.log)

    # ---- the wait -----------------------------------------------------------------------------------

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Follow the cluster and the job to their end and yield the one event (see the module docstring)."""
        async with self.session() as session:
            self._settings = session.settings
            try:
                async with self.backend.holding(session, self.ref, self.owner_key):
                    event = await self.follow(session)
            except EXPLAINED_ERRORS as exc:
                event = await self._explain(session, exc)
            except Exception as exc:
                self.log.exception("RayJobTrigger failed unexpectedly")
                event = self.event(Outcome.ERROR, reason=f"unexpected {type(exc).__name__}: {exc}")
        if self.earliest_event is not None and (early := self.earliest_event - time.time()) > 0:
            # Airflow 3.3 fails a task whose trigger fires before the scheduler has processed the
            # worker's exit at deferral (apache/airflow#72716, #71580): a fast failure or a very short
            # job waits out that window instead of being failed by the scheduler without its reason.
            await asyncio.sleep(early)
        yield TriggerEvent(event.to_dict())

    async def follow(self, session: RaySession) -> RayJobEvent:
        """Cluster named, ready -> dashboard answering -> local code there -> job submitted (once) -> job ended."""
        self.cluster = (await self.backend.resolve(session, self.ref)).to_dict()
        self.__dict__.pop("ref", None)
        if (not_started := await self.wait_for_cluster(session)) is not None:
            return not_started
        self._endpoint = await self.backend.dashboard(session, self.ref)
        if (no_dashboard := await self.wait_for_dashboard(session)) is not None:
            return no_dashboard
        if self.submission is None:
            return self.event(Outcome.READY)
        if missing := await missing_packages(session.dashboard, self._endpoint, self.job, self.log):
            return self.event(Outcome.PACKAGES_MISSING, missing_packages=missing, submission=self.submission)
        submission_id = await self.ensure_submitted(session)
        if self.submit_only:
            return self.event(Outcome.SUBMITTED, job_status=JobStatus.PENDING.value, submission_id=submission_id)
        return await self.wait_for_job(session, submission_id)

    async def _explain(self, session: RaySession, exc: BaseException) -> RayJobEvent:
        """Turn an error into a reason: a cluster that died explains a dashboard that went away."""
        reason = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, ClusterGoneError):
            with contextlib.suppress(Exception):  # the original error stays the reason
                gone = await self.backend.gone_reason(session, self.ref, settle=True)
                if gone is not None:
                    reason = f"{gone} ({reason})"
                    if output := await self.backend.exit_output(session, self.ref):
                        reason += f":\n{output}"
        return self.event(Outcome.ERROR, reason=reason)

    def _earliest(self, *deadlines: float | None) -> float | None:
        known = [d for d in deadlines if d is not None]
        return min(known) if known else None

    async def wait_for_cluster(self, session: RaySession) -> RayJobEvent | None:
        ref = self.ref
        if not self.backend.has_startup:
            return None
        started = time.time()
        verdict = await self.backend.wait_until_ready(
            session, ref, self._earliest(self.startup_deadline, self.deadline)
        )
        if verdict.state is Startup.READY:
            self._timings.mark("cluster_ready")
            self.log.info("%s is ready after %.1fs", ref.describe(), time.time() - started)
            return None
        if self.deadline is not None and time.time() >= self.deadline:
            return self.event(Outcome.TIMEOUT, reason=f"execution_timeout reached while {ref.describe()} was starting")
        return self.event(Outcome.FAILED, reason=f"the Ray cluster did not start: {verdict.reason}", phase="startup")

    async def wait_for_dashboard(self, session: RaySession) -> RayJobEvent | None:
        """The Jobs API answers a little after the head is Ready (and a local head needs seconds)."""
        assert self._endpoint is not None
        ref = self.ref
        limit = self._earliest(self.startup_deadline, self.deadline) or time.time() + self.dashboard_unreachable_timeout
        problem, last_error = await session.dashboard.wait_until_answering(
            self._endpoint, limit, lambda: self.backend.startup_problem(session, ref)
        )
        if problem is not None:
            return self.event(Outcome.FAILED, reason=problem, phase="startup")
        if last_error is None:
            return None
        if self.deadline is not None and time.time() >= self.deadline:
            return self.event(Outcome.TIMEOUT, reason="execution_timeout reached before the Ray dashboard answered")
        return self.event(Outcome.FAILED, reason=self._no_dashboard_reason(last_error), phase="startup")

    def _no_dashboard_reason(self, last_error: str) -> str:
        ref = self.ref
        if self.startup_deadline is not None and time.time() >= self.startup_deadline:
            started = self._timings.to_dict().get("deferred")
            allowed = f" ({self.startup_deadline - started:.3g}s)" if started else ""
            return (
                f"startup_timeout{allowed} reached before the Ray dashboard of {ref.describe()} answered "
                f"(last attempt: {last_error}); raise the operator's startup_timeout if the cluster needs longer"
            )
        return f"the Ray dashboard of {ref.describe()} did not answer: {last_error}"

    async def ensure_submitted(self, session: RaySession) -> str:
        """Exactly once (see :mod:`.submission`)."""
        assert self._endpoint is not None
        followed = await ensure_submitted(session.dashboard, self._endpoint, self.job, self.owner_key, self.log)
        if followed.submitted_now:
            self._timings.mark("submitted")
        self._active_submission_id = followed.submission_id
        if (marker := result_marker_of(followed.runtime_env)) is not None:
            # A function job (@task.ray): its result comes back as frames in its log (see results.py).
            self._logs.frames = ResultFrames(marker)
            self._logs.show_tail = self.get_logs
        return followed.submission_id

    async def wait_for_job(self, session: RaySession, submission_id: str) -> RayJobEvent:
        assert self._endpoint is not None
        info = await JobWait(
            session,
            self.backend,
            self.ref,
            self._endpoint,
            submission_id,
            logs=self._logs if self.get_logs or self._logs.frames is not None else None,
            poll_interval=self.poll_interval,
            deadline=self.deadline,
            unreachable_timeout=self.dashboard_unreachable_timeout,
            log=self.log,
        ).until_end()
        if info is not None:
            return await self.finished(session, info)
        return await self.timed_out(session)

    async def timed_out(self, session: RaySession) -> RayJobEvent:
        """The execution deadline passed: stop the job, report it with its last lines. Also what the
        worker reports when Airflow's own timeout interrupts a non-deferrable wait."""
        submission_id = self._active_submission_id
        if self._endpoint is None or submission_id is None:
            return self.event(
                Outcome.TIMEOUT, reason=f"execution_timeout reached while {self.ref.describe()} was starting"
            )
        # Past the deadline, the stop and the last lines are best effort within a short budget: a
        # dashboard that hangs must not hold the timeout back.
        stopped = await self._stop_quietly(session, self._endpoint, submission_id, timeout=AFTER_DEADLINE_CALL)
        await self._read_rest(session, None, submission_id, total=AFTER_DEADLINE_CALL)
        return self.event(
            Outcome.TIMEOUT,
            reason=f"execution_timeout reached; Ray job {submission_id} {'stopped' if stopped else 'stop requested'}",
            submission_id=submission_id,
            log_tail=self._logs.last.lines(),
        )

    async def finished(self, session: RaySession, info: dict[str, Any]) -> RayJobEvent:
        """The job is over: show the rest of its log, say how it ended, keep the cluster if asked."""
        assert self._endpoint is not None
        submission_id = str(info.get("submission_id") or self._active_submission_id)
        await self._read_rest(session, info, submission_id)
        status = job_status_of(info)
        log_tail = self._logs.last.lines()
        # The failure message shows the log's last lines; Ray's message repeats them: keep them once.
        message = jobs_api.message_without_logs(info.get("message"), log_tail)
        outcome, reason = outcome_of_job(status, submission_id, message)
        result = None
        if self._logs.frames is not None:
            verdict = function_verdict(self._logs.frames, outcome, reason, log_tail, submission_id)
            outcome, reason, log_tail, result = verdict.outcome, verdict.reason, verdict.log_tail, verdict.result
        if outcome is not Outcome.SUCCESS:
            # A job killed by its cluster going away should say so, not just "FAILED".
            try:
                if (gone := await self.backend.gone_reason(session, self.ref)) is not None:
                    reason = f"{gone}; {reason}"
            except Exception as exc:
                self.log.debug("could not check %s: %s", self.ref.describe(), exc)
        event = self.event(
            outcome,
            job_status=status.value,
            submission_id=submission_id,
            reason=reason,
            message=info.get("message"),
            driver_exit_code=info.get("driver_exit_code"),
            start_time=info.get("start_time"),
            end_time=info.get("end_time"),
            log_tail=log_tail,
            result=result,
        )
        if self.keep_alive_seconds and self.ref.owned:
            keep = float(self.keep_alive_seconds)
            left = None if self.deadline is None else self.deadline - time.time()
            if left is not None:
                keep = max(0.0, min(keep, left))
            self.log.info("Keeping %s for %.0fs (ttl_seconds_after_finished) before cleanup", self.ref.describe(), keep)
            await asyncio.sleep(keep)
        return event

    async def _read_rest(
        self, session: RaySession, info: dict[str, Any] | None, submission_id: str, total: float | None = None
    ) -> None:
        """What the tail had not shown of the log (streamed, never held whole); its last lines are kept."""
        assert self._endpoint is not None
        try:
            await self._logs.read_rest(
                session.dashboard, self._endpoint, info, submission_id, show=self.get_logs, total=total
            )
        except Exception as exc:  # the outcome is known: a log that cannot be read must not hide it
            self.log.warning("Could not read the logs of Ray job %s: %s", submission_id, exc)

    async def _stop_quietly(
        self, session: RaySession, endpoint: DashboardEndpoint, submission_id: str, timeout: float = DASHBOARD_TIMEOUT
    ) -> bool:
        try:
            return await session.dashboard.stop_job(endpoint, submission_id, timeout=timeout)
        except Exception as exc:
            self.log.warning("Could not stop Ray job %s: %s", submission_id, exc)
            return False

    def event(self, status: Outcome, **fields: Any) -> RayJobEvent:
        ref = self.ref
        submission_id = fields.pop("submission_id", None) or self._active_submission_id or self._own_submission_id
        direct = self._endpoint.base_url if self._endpoint is not None else None
        dashboard_url = (
            self.backend.browser_url(self._settings, ref, direct)
            if self._settings is not None and direct is not None
            else ref.address
        )
        return RayJobEvent(
            status=status,
            cluster=ref,
            submission_id=submission_id,
            dashboard_url=dashboard_url,
            timings={**self._timings.to_dict(), "event": time.time()},
            **fields,
        )

    # ---- user kill ----------------------------------------------------------------------------------

    async def on_kill(self) -> None:
        """The user marked the deferred task failed/success or cleared it: stop the job, apply the policy."""
        ref, backend = self.ref, self.backend
        async with self.session() as session:
            with contextlib.suppress(Exception):
                endpoint = self._endpoint or await backend.dashboard(session, ref)
                for submission_id in {self._active_submission_id, self._own_submission_id} - {None, ""}:
                    if submission_id and await self._stop_quietly(session, endpoint, submission_id):
                        self.log.info("Stopped Ray job %s (task killed)", submission_id)
            try:
                if await backend.release(
                    session,
                    ref,
                    action=self.on_finish_action,
                    ending=Ending.KILLED,
                    owner_key=self.owner_key,
                    log=self.log,
                ):
                    self.log.info("Deleted %s (task killed)", ref.describe())
            except Exception as exc:
                self.log.warning("Could not delete %s: %s", ref.describe(), exc)
