"""A Ray job's log, into the task log: each line once and in order, across re-opened tails.

Memory stays bounded whatever a job prints: the tail's frames, the end-of-job rest (read as a stream)
and the last lines kept for the failure message are all of fixed size. Text handling (decoding,
control sequences, long lines) is in :mod:`airflow_provider_flyray.log_text`.

Ray 2.60's Jobs API reads the log as UTF-8 text: at a byte that is not UTF-8 its tail closes and
``GET .../logs`` answers 500. The rest is then read from the state API's raw driver log (decoded with
replacement characters); if that fails too, what was streamed stays, and one line says so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

from airflow_provider_flyray.core.dashboard import DashboardClient
from airflow_provider_flyray.errors import RayJobsApiError
from airflow_provider_flyray.jobs_api import LOG_TAIL_LINES, DashboardEndpoint
from airflow_provider_flyray.log_text import LastLines, LineAssembler
from airflow_provider_flyray.results import ResultFrames

LINE_PREFIX = "[ray] "
LOG_READ_ERRORS = (TimeoutError, aiohttp.ClientError, OSError, RayJobsApiError, ValueError)


class JobLogStream:
    def __init__(self, log: Callable[[], logging.Logger | Any]) -> None:
        # The trigger's logger, looked up at each use: the triggerer routes it to the task's log only
        # once the trigger runs.
        self._log = log
        # Characters of the job's log already consumed into shown lines (complete lines only).
        self.shown_chars = 0
        # The last lines of the log (shown or not): the failure message's block.
        self.last = LastLines(LOG_TAIL_LINES)
        # Whether the last tail brought anything new (a tail Ray closes at once is not re-opened at once).
        self.tail_progressed = True
        # Whether the tail's lines go to the task log (a function job is tailed for its result anyway).
        self.show_tail = True
        # A function job's result frames (see results.py): taken out of the lines before anything else.
        self.frames: ResultFrames | None = None
        # The open tail's wake-up event (JobWait's): set when the frames complete, the job's end is near.
        self._wake: asyncio.Event | None = None

    @property
    def result_complete(self) -> bool:
        return self.frames is not None and self.frames.complete

    @property
    def log(self) -> logging.Logger | Any:
        return self._log()

    def show(self, line: str) -> None:
        self.log.info("%s%s", LINE_PREFIX, line)

    def _take(self, lines: list[str], show: bool) -> None:
        if self.frames is not None:
            lines = self.frames.take(lines)
            if self.frames.complete and self._wake is not None:
                self._wake.set()
        if show:
            for line in lines:
                self.show(line)
        self.last.extend(lines)

    async def _read(self, pieces: AsyncIterator[str], show: bool, complete: bool) -> None:
        """Read a log from its start: skip what was shown, take the new lines. ``complete``: a whole
        log read at the job's end (its last line counts even without a newline)."""
        lines = LineAssembler(skip=self.shown_chars)
        try:
            async for piece in pieces:
                self._take(lines.feed(piece), show)
                # Only complete lines count as shown: a partial one is re-read if the stream drops.
                self.shown_chars = lines.shown
                if complete:  # a buffered body must not hold the event loop for its length
                    await asyncio.sleep(0)
            if complete:
                self._take(lines.finish(), show)
                self.shown_chars = lines.consumed
        finally:
            self.shown_chars = max(self.shown_chars, lines.shown)

    async def follow(
        self, dashboard: DashboardClient, endpoint: DashboardEndpoint, submission_id: str, closed: asyncio.Event
    ) -> None:
        """Stream the WebSocket tail until Ray closes it, then set ``closed`` (the early end signal).
        A re-opened tail replays from the start: what was shown is skipped."""
        before = self.shown_chars
        self._wake = closed
        try:
            await self._read(dashboard.tail_job_logs(endpoint, submission_id), show=self.show_tail, complete=False)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self.log.debug("log tail of %s dropped: %s", submission_id, exc)
            await asyncio.sleep(1)
        finally:
            self.tail_progressed = self.shown_chars > before
            closed.set()

    async def read_rest(
        self,
        dashboard: DashboardClient,
        endpoint: DashboardEndpoint,
        info: dict[str, Any] | None,
        submission_id: str,
        *,
        show: bool,
        total: float | None = None,
    ) -> None:
        """The job is over (or its deadline passed): take what the tail had not shown of its log,
        reading it as a stream. ``show=False``: only keep its last lines."""
        try:
            await self._read(dashboard.job_log_text(endpoint, submission_id, total), show, complete=True)
            return
        except LOG_READ_ERRORS as exc:
            problem = f"{type(exc).__name__}: {exc}"
            ray_failed = isinstance(exc, RayJobsApiError) and (exc.status or 0) >= 500
        node_id = (info or {}).get("driver_node_id")
        if node_id and ray_failed:
            try:
                await self._read(dashboard.driver_log_text(endpoint, str(node_id), submission_id, total), show, True)
                self.log.warning(
                    "Ray could not serve the log of job %s as text (%s); it was read as bytes, "
                    "bytes that are not UTF-8 are shown as \ufffd",
                    submission_id,
                    problem,
                )
                return
            except LOG_READ_ERRORS as exc:
                problem += f"; its driver log: {type(exc).__name__}: {exc}"
        self.log.warning(
            "Could not read the rest of the log of Ray job %s (%s); the task log has what was streamed",
            submission_id,
            problem,
        )
