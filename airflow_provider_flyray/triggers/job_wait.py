"""Following a running Ray job to its end: status checks, the log tail, the cluster's deletion watch.

The log tail closing (Ray closes it 2-4 s after the job ends) is the early end signal; a status check
confirms it, so a dropped stream never decides the job's state. Output does not wake the status check:
a check per output chunk would make the requests grow with how much the jobs print instead of with the
poll interval. A dashboard that stops answering is retried for ``unreachable_timeout`` seconds. The
normal checks of the jobs waiting on one cluster share one list request per poll interval
(:mod:`~airflow_provider_flyray.triggers.cluster_statuses`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from airflow_provider_flyray.backends import ClusterBackend
from airflow_provider_flyray.cluster import ClusterRef
from airflow_provider_flyray.core.dashboard import MIN_TIMEOUT, STATUS_TIMEOUT
from airflow_provider_flyray.core.session import RaySession
from airflow_provider_flyray.errors import ClusterGoneError, DashboardUnreachableError, RayJobsApiError
from airflow_provider_flyray.jobs_api import DashboardEndpoint
from airflow_provider_flyray.status import job_status_of
from airflow_provider_flyray.triggers import cluster_statuses
from airflow_provider_flyray.triggers.job_logs import JobLogStream

# A tail that keeps closing (dropped streams) never checks the status more than twice a second.
MIN_STATUS_GAP = 0.5
# Once a function job's result frames arrived, its driver is exiting: the status is checked this often
# (growing by CONFIRM_BACKOFF up to the poll interval), so its end is seen within ~0.1 s of Ray's.
FAST_CONFIRM = 0.1
CONFIRM_BACKOFF = 1.5
# A function job's first seconds: Ray's tail sends lines once a second and, for a job that ends before
# the tail is attached, its last lines arrive 2-3 s after the end. Its status is checked from 0.1 s on,
# growing by EARLY_BACKOFF to EARLY_CAP, for EARLY_WINDOW seconds (at most ~70 extra checks per job);
# later the tail's frames are what ends the wait early.
EARLY_BACKOFF = 1.3
EARLY_CAP = 0.5
EARLY_WINDOW = 30.0
# While the dashboard is unreachable, it is retried at least this often.
UNREACHABLE_RETRY = 2.0
TRANSIENT_DASHBOARD_ERRORS = (TimeoutError, aiohttp.ClientError, OSError, RayJobsApiError)


@dataclass
class JobWait:
    session: RaySession
    backend: ClusterBackend
    ref: ClusterRef
    endpoint: DashboardEndpoint
    submission_id: str
    logs: JobLogStream | None  # None: the job's output is not shown
    poll_interval: float
    deadline: float | None
    unreachable_timeout: float
    log: logging.Logger | Any

    async def until_end(self) -> dict[str, Any] | None:
        """The job's final status (Ray's job info), or None when the deadline came first."""
        with cluster_statuses.waiting(self.endpoint, self.submission_id) as shared:
            return await self._until_end(shared)

    async def _until_end(self, shared: cluster_statuses.WaitingJob) -> dict[str, Any] | None:
        dashboard, wake = self.session.dashboard, asyncio.Event()
        last_check = 0.0
        unreachable_since: float | None = None
        tail = self._open_tail(wake)
        # Someone deleting the cluster must fail the task at once, not when the head finally dies.
        watch: asyncio.Task[str | None] = asyncio.create_task(self.backend.watch_gone(self.session, self.ref))
        watch.add_done_callback(lambda _: wake.set())
        gone_watch: asyncio.Task[str | None] | None = watch
        confirm = FAST_CONFIRM
        started = time.monotonic()
        early = FAST_CONFIRM if self.logs is not None and self.logs.frames is not None else None
        try:
            while True:
                if gone_watch is not None and gone_watch.done() and not gone_watch.cancelled():
                    if gone_watch.exception() is None and (gone := gone_watch.result()) is not None:
                        raise ClusterGoneError(gone)
                    gone_watch = None  # no watch, or the watch failed: the dashboard checks still notice
                confirming = self.logs is not None and self.logs.result_complete
                if early is not None and time.monotonic() - started > EARLY_WINDOW:
                    early = None
                fast = confirm if confirming else early
                gap = MIN_STATUS_GAP if fast is None else fast
                await asyncio.sleep(max(0.0, last_check + gap - time.monotonic()))
                last_check = time.monotonic()
                left = None if self.deadline is None else self.deadline - time.time()
                # A hung status call must not hold the execution deadline back.
                timeout = STATUS_TIMEOUT if left is None else min(STATUS_TIMEOUT, max(MIN_TIMEOUT, left))
                anchor: float | None = None  # set when the cluster's shared list answered
                try:
                    if fast is None and not (tail is not None and tail.done()):
                        oldest = cluster_statuses.oldest_usable(last_check, self.poll_interval)
                        info, anchor = await shared.status(dashboard, timeout, oldest)
                    else:
                        # A fast check, or the early end signal (the tail closed): only a status newer than
                        # the signal confirms it, and the job's own GET is the smallest request for one.
                        info = await dashboard.get_job(self.endpoint, self.submission_id, timeout=timeout)
                    unreachable_since = None
                except TRANSIENT_DASHBOARD_ERRORS as exc:
                    if isinstance(exc, RayJobsApiError) and exc.status is not None and exc.status < 500:
                        raise
                    await self.raise_if_gone()
                    unreachable_since = unreachable_since or time.time()
                    if time.time() - unreachable_since > self.unreachable_timeout:
                        raise DashboardUnreachableError(
                            f"the Ray dashboard of {self.ref.describe()} has been unreachable for "
                            f"{time.time() - unreachable_since:.0f}s ({type(exc).__name__}: {exc})"
                        ) from None
                    self.log.warning("Ray dashboard unreachable (%s); retrying", type(exc).__name__)
                    info = None
                if info is None and unreachable_since is None:
                    await self.raise_if_gone()
                    raise RayJobsApiError(f"Ray job {self.submission_id} disappeared from {self.ref.describe()}")
                if info is not None and self.logs is not None:
                    self.logs.learn_driver_node(info)
                if info is not None and job_status_of(info).is_terminal:
                    return info
                left = None if self.deadline is None else self.deadline - time.time()
                if left is not None and left <= 0:
                    return None
                interval = self.poll_interval
                if anchor is not None:  # the next check shares the cluster's next list
                    interval = cluster_statuses.next_check_in(anchor, self.poll_interval, time.monotonic())
                wait = interval if left is None else max(0.0, min(interval, left))
                if unreachable_since is not None:
                    wait = min(wait, UNREACHABLE_RETRY)
                if fast is not None:
                    wait = min(wait, fast)
                if confirming:
                    confirm = min(confirm * CONFIRM_BACKOFF, self.poll_interval)
                elif early is not None:
                    early = min(early * EARLY_BACKOFF, EARLY_CAP)
                wake.clear()
                if tail is not None and tail.done() and info is not None:
                    # The tail closed but the job is not over: it dropped. One that brought nothing new
                    # (Ray closes it at once after a byte that is not UTF-8) waits a poll interval.
                    assert self.logs is not None
                    tail = self._open_tail(wake, 0.0 if self.logs.tail_progressed else self.poll_interval)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):  # not wait_for: see cluster_statuses
                        await wake.wait()
        finally:
            # Ray closes the tail seconds after the job ends: don't wait for it (the rest is streamed).
            for task in (gone_watch, tail):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    def _open_tail(self, closed: asyncio.Event, delay: float = 0.0) -> asyncio.Task[None] | None:
        if self.logs is None:
            return None
        logs = self.logs

        async def follow() -> None:
            if delay:
                await asyncio.sleep(delay)
            await logs.follow(self.session.dashboard, self.endpoint, self.submission_id, closed)

        return asyncio.create_task(follow())

    async def raise_if_gone(self) -> None:
        if (gone := await self.backend.gone_reason(self.session, self.ref)) is not None:
            raise ClusterGoneError(gone)
