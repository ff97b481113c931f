"""RayJobTrigger: waits, in the triggerer, for the cluster to start and the Ray job to end.

It submits the job exactly once (deterministic submission id; a retry adopts a still-running job of an
earlier try), streams the job's log lines into the task log, notices the end as soon as the log tail
closes (confirmed by the job status, never decided by a dropped stream), and enforces the startup and
execution deadlines. It yields one event holding everything ``execute_complete`` needs.

A triggerer restart runs :meth:`run` again from the top with the same kwargs: every step derives its
progress from Kubernetes and Ray, never from memory. :meth:`cleanup` deletes nothing; :meth:`on_kill`
(a user marked the task failed or cleared it) stops the job and applies the cluster policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_flyray import jobs_api
from airflow_provider_flyray.cluster import Backend, ClusterRef
from airflow_provider_flyray.config import OnFinishAction
from airflow_provider_flyray.connection import ConnectionSettings, browser_dashboard_url
from airflow_provider_flyray.errors import ClusterGoneError, DashboardUnreachableError, FlyrayError, RayJobsApiError
from airflow_provider_flyray.hooks.ray_cluster import AsyncRaySession, RayClusterHook
from airflow_provider_flyray.jobs_api import DashboardEndpoint, JobSubmission
from airflow_provider_flyray.manifest import head_service_name
from airflow_provider_flyray.status import JobStatus, Startup, job_status_of

DEFAULT_DASHBOARD_UNREACHABLE_TIMEOUT = 120.0
MIN_STATUS_GAP = 0.5


class RayJobTrigger(BaseTrigger):
    """Wait for a Ray cluster, submit a Ray job once, stream its logs and report how it ended.

    :param ray_conn_id: ``flyray`` connection id (credentials are looked up here, never passed in).
    :param cluster: a :class:`~airflow_provider_flyray.cluster.ClusterRef` as a dict.
    :param submission: a :class:`~airflow_provider_flyray.jobs_api.JobSubmission` as a dict.
    :param owner_key: the task-instance key (without try) that owns the cluster and the job.
    :param poll_interval: seconds between job status checks (the log tail ends waits earlier).
    :param startup_deadline: epoch seconds by which the cluster must be ready, or None.
    :param deadline: epoch seconds of the task's execution_timeout, or None.
    :param get_logs: stream the job's log lines into the task log.
    :param on_finish_action: cluster policy, applied by ``on_kill``; the worker applies it otherwise.
    :param keep_alive_seconds: after the job ends, keep waiting this long before reporting (Flyte's
        ``ttl_seconds_after_finished``), so the dashboard stays inspectable without holding a worker.
    :param submit_only: return as soon as the job is submitted (``wait_for_completion=False``).
    :param earliest_event: epoch seconds before which no event is yielded (see ``min_deferral_seconds``).
    """

    def __init__(
        self,
        *,
        ray_conn_id: str | None,
        cluster: dict[str, Any],
        submission: dict[str, Any],
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
        self.earliest_event = earliest_event
        # Set once the job is known on the cluster (this try's id, or an adopted earlier try's id).
        self._active_submission_id: str | None = None
        self._endpoint: DashboardEndpoint | None = None
        self._settings: ConnectionSettings | None = None
        self._shown_chars = 0
        # Epoch seconds of the milestones of this run(), reported in the event (benchmarks read them).
        self.timings = dict(timings or {})
        self._timings: dict[str, float] = {**self.timings, "trigger_started": time.time()}

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "ray_conn_id": self.ray_conn_id,
                "cluster": self.cluster,
                "submission": self.submission,
                "owner_key": self.owner_key,
                "poll_interval": self.poll_interval,
                "startup_deadline": self.startup_deadline,
                "deadline": self.deadline,
                "get_logs": self.get_logs,
                "on_finish_action": self.on_finish_action,
                "keep_alive_seconds": self.keep_alive_seconds,
                "submit_only": self.submit_only,
                "dashboard_unreachable_timeout": self.dashboard_unreachable_timeout,
                "timings": self.timings,
                "earliest_event": self.earliest_event,
            },
        )

    @property
    def ref(self) -> ClusterRef:
        return ClusterRef.from_dict(self.cluster)

    @property
    def job(self) -> JobSubmission:
        return JobSubmission.from_dict(self.submission)

    def _session(self) -> AsyncRaySession:
        return RayClusterHook(self.ray_conn_id).async_session(log=self.log)

    # ---- the wait -----------------------------------------------------------------------------------

    async def run(self) -> AsyncIterator[TriggerEvent]:
        async with self._session() as session:
            self._settings = session.settings
            try:
                payload = await self._run(session)
            except (TimeoutError, FlyrayError, PermissionError, aiohttp.ClientError, OSError) as exc:
                payload = await self._explain(session, exc)
            except Exception as exc:
                self.log.exception("RayJobTrigger failed unexpectedly")
                payload = self._payload("error", reason=f"unexpected {type(exc).__name__}: {exc}")
        if self.earliest_event is not None and (early := self.earliest_event - time.time()) > 0:
            # Airflow 3.3 fails a task whose trigger fires before the scheduler has processed the
            # worker's exit at deferral (apache/airflow#72716, #71580): a fast failure or a very short
            # job waits out that window instead of being failed by the scheduler without its reason.
            await asyncio.sleep(early)
        yield TriggerEvent(payload)

    async def _run(self, session: AsyncRaySession) -> dict[str, Any]:
        ref = self.ref
        verdict_reason = await self._wait_for_cluster(session, ref)
        if verdict_reason is not None:
            return verdict_reason
        self._endpoint = await session.dashboard_endpoint(ref)
        if (failure := await self._wait_for_dashboard(session, ref)) is not None:
            return failure
        submission_id = await self._ensure_submitted(session)
        if self.submit_only:
            return self._payload("submitted", job_status=JobStatus.PENDING.value, submission_id=submission_id)
        return await self._wait_for_job(session, ref, submission_id)

    async def _explain(self, session: AsyncRaySession, exc: BaseException) -> dict[str, Any]:
        """Turn an error into a reason: a cluster that died explains a dashboard that went away."""
        reason = f"{type(exc).__name__}: {exc}"
        ref = self.ref
        if not isinstance(exc, ClusterGoneError):
            try:
                if ref.backend is Backend.LOCAL:
                    # A head that fails after its dashboard came up takes a moment to exit.
                    for _ in range(25):
                        await self._raise_if_cluster_gone(session, ref)
                        await asyncio.sleep(0.2)
                await self._raise_if_cluster_gone(session, ref)
            except ClusterGoneError as gone:
                reason = f"{gone} ({reason})"
                if ref.backend is Backend.LOCAL:
                    from airflow_provider_flyray.hooks.local_ray import local_startup_output

                    reason += ":\n" + await asyncio.to_thread(local_startup_output, ref)
            except Exception:  # the original error stays the reason
                pass
        return self._payload("error", reason=reason)

    def _seconds_left(self, deadline: float | None) -> float | None:
        return None if deadline is None else deadline - time.time()

    async def _wait_for_cluster(self, session: AsyncRaySession, ref: ClusterRef) -> dict[str, Any] | None:
        if ref.backend is not Backend.KUBERNETES:
            return None
        deadlines = [d for d in (self.startup_deadline, self.deadline) if d is not None]
        started = time.time()
        verdict = await session.wait_until_ready(ref, min(deadlines) if deadlines else None)
        if verdict.state is Startup.READY:
            self._timings["cluster_ready"] = time.time()
            self.log.info("%s is ready after %.1fs", ref.describe(), time.time() - started)
            return None
        if self.deadline is not None and time.time() >= self.deadline:
            return self._payload("timeout", reason=f"execution_timeout reached while {ref.describe()} was starting")
        return self._payload("failed", reason=f"the Ray cluster did not start: {verdict.reason}", phase="startup")

    async def _wait_for_dashboard(self, session: AsyncRaySession, ref: ClusterRef) -> dict[str, Any] | None:
        """The Jobs API answers a little after the head is Ready (and a local head needs seconds)."""
        assert self._endpoint is not None
        deadlines = [d for d in (self.startup_deadline, self.deadline) if d is not None]
        limit = min(deadlines) if deadlines else time.time() + self.dashboard_unreachable_timeout
        delay = 0.1
        while True:
            try:
                await session.version(self._endpoint)
                return None
            except (TimeoutError, aiohttp.ClientError, OSError, RayJobsApiError) as exc:
                if isinstance(exc, RayJobsApiError) and exc.status in (401, 403):
                    raise
                last_error = f"{type(exc).__name__}: {exc}"
            if ref.backend is Backend.LOCAL:
                from airflow_provider_flyray.hooks.local_ray import local_cluster_alive, local_startup_output

                if not await asyncio.to_thread(local_cluster_alive, ref):
                    output = await asyncio.to_thread(local_startup_output, ref)
                    return self._payload(
                        "failed", reason=f"the local Ray head exited during startup:\n{output}", phase="startup"
                    )
            if time.time() >= limit:
                if self.deadline is not None and time.time() >= self.deadline:
                    return self._payload(
                        "timeout", reason="execution_timeout reached before the Ray dashboard answered"
                    )
                return self._payload(
                    "failed",
                    reason=f"the Ray dashboard of {ref.describe()} did not answer: {last_error}",
                    phase="startup",
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _ensure_submitted(self, session: AsyncRaySession) -> str:
        """Exactly once: this try's job if it exists, else a live job of an earlier try, else submit."""
        assert self._endpoint is not None
        job = self.job
        if await session.get_job(self._endpoint, job.submission_id) is not None:
            self.log.info("Ray job %s already submitted; following it", job.submission_id)
            self._active_submission_id = job.submission_id
            return job.submission_id
        # A first try has no earlier try to adopt: skip listing every job of the cluster (N triggers
        # starting together on one cluster would each download and parse the whole, growing list).
        first_try = job.metadata.get("airflow_try_number") == "1"
        earlier_jobs = [] if first_try else await session.list_jobs(self._endpoint)
        for earlier in jobs_api.jobs_of_task(earlier_jobs, self.owner_key):
            if not job_status_of(earlier).is_terminal:
                adopted = str(earlier.get("submission_id"))
                self.log.info("Reattaching to Ray job %s of an earlier try (still %s)", adopted, earlier.get("status"))
                self._active_submission_id = adopted
                return adopted
        submission_id = await session.submit_job(self._endpoint, job)
        self._timings["submitted"] = time.time()
        self._active_submission_id = submission_id
        self.log.info("Submitted Ray job %s: %s", submission_id, job.entrypoint)
        return submission_id

    async def _wait_for_job(self, session: AsyncRaySession, ref: ClusterRef, submission_id: str) -> dict[str, Any]:
        assert self._endpoint is not None
        endpoint = self._endpoint
        # Set when the log tail closes: Ray closes it 2-4 s after the job ends, the early end signal.
        # New output does not wake the status check: a check per output chunk would make the requests
        # grow with how much the jobs print (one per second each) instead of with the poll interval.
        wake = asyncio.Event()
        last_check = 0.0
        tail_task = (
            asyncio.create_task(self._stream_logs(session, endpoint, submission_id, wake)) if self.get_logs else None
        )
        unreachable_since: float | None = None
        gone_task: asyncio.Task[str] | None = None
        if ref.backend is Backend.KUBERNETES:
            # Someone deleting the cluster must fail the task at once, not when the head finally dies.
            gone_task = asyncio.create_task(session.wait_for_deletion(ref))
            gone_task.add_done_callback(lambda _: wake.set())
        try:
            while True:
                if gone_task is not None and gone_task.done() and not gone_task.cancelled():
                    if gone_task.exception() is None:
                        raise ClusterGoneError(gone_task.result())
                    gone_task = None  # the watch itself failed: the dashboard checks still notice
                # A tail that keeps closing (dropped streams) never checks the status more than twice a second.
                await asyncio.sleep(max(0.0, last_check + MIN_STATUS_GAP - time.monotonic()))
                last_check = time.monotonic()
                try:
                    info = await session.get_job(endpoint, submission_id)
                    unreachable_since = None
                except (TimeoutError, aiohttp.ClientError, OSError, RayJobsApiError) as exc:
                    if isinstance(exc, RayJobsApiError) and exc.status is not None and exc.status < 500:
                        raise
                    await self._raise_if_cluster_gone(session, ref)
                    unreachable_since = unreachable_since or time.time()
                    if time.time() - unreachable_since > self.dashboard_unreachable_timeout:
                        raise DashboardUnreachableError(
                            f"the Ray dashboard of {ref.describe()} has been unreachable for "
                            f"{time.time() - unreachable_since:.0f}s ({type(exc).__name__}: {exc})"
                        ) from None
                    self.log.warning("Ray dashboard unreachable (%s); retrying", type(exc).__name__)
                    info = None
                if info is None and unreachable_since is None:
                    await self._raise_if_cluster_gone(session, ref)
                    raise RayJobsApiError(f"Ray job {submission_id} disappeared from {ref.describe()}")
                if info is not None and job_status_of(info).is_terminal:
                    return await self._finished(session, ref, endpoint, info, tail_task)
                left = self._seconds_left(self.deadline)
                if left is not None and left <= 0:
                    stopped = await self._stop_quietly(session, endpoint, submission_id)
                    return self._payload(
                        "timeout",
                        reason=f"execution_timeout reached; Ray job {submission_id} "
                        f"{'stopped' if stopped else 'stop requested'}",
                        submission_id=submission_id,
                        log_tail=await self._log_tail(session, endpoint, submission_id),
                    )
                wait = self.poll_interval if left is None else max(0.0, min(self.poll_interval, left))
                if unreachable_since is not None:
                    wait = min(wait, 2.0)
                wake.clear()
                if tail_task is not None and tail_task.done() and info is not None:
                    # The tail closed but the job is not over: the stream dropped, so re-open it.
                    tail_task = asyncio.create_task(self._stream_logs(session, endpoint, submission_id, wake))
                # The log tail closing is the instant end-of-job signal; the status check at the top
                # of the loop confirms it (a dropped stream never decides the job's state).
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=wait)
        finally:
            if gone_task is not None:
                gone_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await gone_task
            if tail_task is not None:
                tail_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await tail_task

    async def _raise_if_cluster_gone(self, session: AsyncRaySession, ref: ClusterRef) -> None:
        if ref.backend is Backend.KUBERNETES:
            cluster = await session.get_cluster(ref)
            if cluster is None or (cluster.get("metadata") or {}).get("deletionTimestamp"):
                raise ClusterGoneError(f"{ref.describe()} was deleted while the Ray job was running")
        elif ref.backend is Backend.LOCAL:
            from airflow_provider_flyray.hooks.local_ray import local_cluster_alive

            if not await asyncio.to_thread(local_cluster_alive, ref):
                raise ClusterGoneError(f"{ref.describe()} exited")

    async def _stream_logs(
        self, session: AsyncRaySession, endpoint: DashboardEndpoint, submission_id: str, wake: asyncio.Event
    ) -> None:
        """Log lines into the task log. A re-opened tail replays from the start: skip what was shown."""
        already_shown = self._shown_chars
        seen = 0
        partial = ""
        try:
            async for chunk in session.tail_job_logs(endpoint, submission_id):
                chunk_start, seen = seen, seen + len(chunk)
                skip = max(0, already_shown - chunk_start)
                if skip >= len(chunk):
                    continue
                *lines, partial = (partial + chunk[skip:]).split("\n")
                for line in lines:
                    self.log.info("[ray] %s", line)
                # Only complete lines count as shown: a partial one is re-read if the stream drops.
                self._shown_chars = seen - len(partial)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self.log.debug("log tail of %s dropped: %s", submission_id, exc)
            await asyncio.sleep(1)
        finally:
            wake.set()

    async def _finished(
        self,
        session: AsyncRaySession,
        ref: ClusterRef,
        endpoint: DashboardEndpoint,
        info: dict[str, Any],
        tail_task: asyncio.Task[None] | None,
    ) -> dict[str, Any]:
        submission_id = str(info.get("submission_id") or self._active_submission_id)
        if tail_task is not None:
            # Ray closes the tail seconds after the job ends: don't wait for it, read the rest instead.
            tail_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await tail_task
        logs = await self._full_logs(session, endpoint, submission_id)
        if self.get_logs and len(logs) > self._shown_chars:
            for line in logs[self._shown_chars :].rstrip("\n").split("\n"):
                self.log.info("[ray] %s", line)
            self._shown_chars = len(logs)
        status = job_status_of(info)
        outcome = {JobStatus.SUCCEEDED: "success", JobStatus.STOPPED: "stopped"}.get(status, "failed")
        reason = (
            ""
            if outcome == "success"
            else f"Ray job {submission_id} {status.value}: {info.get('message') or ''}".strip()
        )
        if outcome != "success":
            # A job killed by its cluster going away should say so, not just "FAILED".
            try:
                await self._raise_if_cluster_gone(session, ref)
            except ClusterGoneError as gone:
                reason = f"{gone}; {reason}"
            except Exception as exc:
                self.log.debug("could not check %s: %s", ref.describe(), exc)
        payload = self._payload(
            outcome,
            job_status=status.value,
            submission_id=submission_id,
            reason=reason,
            message=info.get("message"),
            driver_exit_code=info.get("driver_exit_code"),
            start_time=info.get("start_time"),
            end_time=info.get("end_time"),
            log_tail=jobs_api.last_lines(logs),
        )
        if self.keep_alive_seconds and ref.owned:
            keep = float(self.keep_alive_seconds)
            left = self._seconds_left(self.deadline)
            if left is not None:
                keep = max(0.0, min(keep, left))
            self.log.info("Keeping %s for %.0fs (ttl_seconds_after_finished) before cleanup", ref.describe(), keep)
            await asyncio.sleep(keep)
        return payload

    async def _full_logs(self, session: AsyncRaySession, endpoint: DashboardEndpoint, submission_id: str) -> str:
        try:
            return await session.get_job_logs(endpoint, submission_id)
        except Exception as exc:
            self.log.warning("Could not read the logs of Ray job %s: %s", submission_id, exc)
            return ""

    async def _log_tail(self, session: AsyncRaySession, endpoint: DashboardEndpoint, submission_id: str) -> list[str]:
        return jobs_api.last_lines(await self._full_logs(session, endpoint, submission_id))

    async def _stop_quietly(self, session: AsyncRaySession, endpoint: DashboardEndpoint, submission_id: str) -> bool:
        try:
            return await session.stop_job(endpoint, submission_id)
        except Exception as exc:
            self.log.warning("Could not stop Ray job %s: %s", submission_id, exc)
            return False

    def _payload(self, status: str, **fields: Any) -> dict[str, Any]:
        ref = self.ref
        payload: dict[str, Any] = {
            "status": status,
            "cluster": self.cluster,
            "submission_id": fields.pop("submission_id", None) or self._active_submission_id or self.job.submission_id,
            "dashboard_url": self._browser_url(ref),
            "reason": "",
            "log_tail": [],
            "timings": {**self._timings, "event": time.time()},
        }
        payload.update(fields)
        return payload

    def _browser_url(self, ref: ClusterRef) -> str | None:
        if self._endpoint is None:
            return ref.address
        if ref.backend is not Backend.KUBERNETES:
            return self._endpoint.base_url
        if self._settings is None:
            return None
        return browser_dashboard_url(
            self._settings,
            namespace=ref.namespace,
            cluster=ref.name,
            service=head_service_name(ref.name),
            direct_url=self._endpoint.base_url,
        )

    # ---- user kill ----------------------------------------------------------------------------------

    async def on_kill(self) -> None:
        """The user marked the deferred task failed/success or cleared it: stop the job, apply the policy."""
        ref = self.ref
        async with self._session() as session:
            with contextlib.suppress(Exception):
                endpoint = self._endpoint or await session.dashboard_endpoint(ref)
                for submission_id in {self._active_submission_id, self.job.submission_id} - {None}:
                    assert submission_id is not None
                    if await self._stop_quietly(session, endpoint, submission_id):
                        self.log.info("Stopped Ray job %s (task killed)", submission_id)
            if ref.owned and self.on_finish_action != OnFinishAction.KEEP_CLUSTER.value:
                try:
                    await session.delete_cluster(ref, self.owner_key)
                    self.log.info("Deleted %s (task killed)", ref.describe())
                except Exception as exc:
                    self.log.warning("Could not delete %s: %s", ref.describe(), exc)
