"""A Ray job's log, into the task log: each line once and in order, across re-opened tails.

Memory stays bounded whatever a job prints: the tail's frames, the end-of-job rest (read as a stream)
and the last lines kept for the failure message are all of fixed size. Text handling (decoding,
control sequences, ``\\r``, long lines) is in :mod:`airflow_provider_flyray.log_text`.

Where the log comes from (Ray 2.60, checked against a local head):

- **the state API, raw** (preferred): ``/api/v0/logs/stream`` follows the job's driver log file on its
  driver node (``driver_node_id`` of the job info), and ``/api/v0/logs/file`` reads it whole at the end.
  Its bytes keep each ``\\r``, so a progress bar collapses to its last state (one line, not one per
  redraw); positions are byte offsets. Ray never ends a followed log: the Jobs API's WebSocket tail is
  kept open beside it, its text unused, because its closing (2-4 s after the job's end) is the early end
  signal ``JobWait`` relies on.
- **the Jobs API, text** (the fallback: a state API that answers 4xx/5xx, e.g. an older Ray, a token or
  proxy path that does not let it through; one line says so): the WebSocket tail and ``GET .../logs``
  read the log as UTF-8 text, each ``\\r`` arriving as a newline; positions are characters. At a byte
  that is not UTF-8 its tail closes and ``GET .../logs`` answers 500: the rest is then read from the
  state API's raw driver log (decoded with replacement characters); if that fails too, what was streamed
  stays, and one line says so.

The raw reads also count their lines in the characters of Ray's text reads, so a switch from the state
API to the Jobs API (at any point, live or at the end) resumes exactly after the last line shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import aiohttp

from airflow_provider_flyray.core.dashboard import STATUS_TIMEOUT, DashboardClient
from airflow_provider_flyray.errors import RayJobsApiError
from airflow_provider_flyray.jobs_api import LOG_TAIL_LINES, DashboardEndpoint
from airflow_provider_flyray.log_text import LastLines, LineAssembler, RawLineAssembler
from airflow_provider_flyray.results import ResultFrames
from airflow_provider_flyray.status import job_status_of

LINE_PREFIX = "[ray] "
LOG_READ_ERRORS = (TimeoutError, aiohttp.ClientError, OSError, RayJobsApiError, ValueError)
STREAM_ERRORS = (TimeoutError, aiohttp.ClientError, OSError)
# While a job has no driver yet (its runtime env is being set up), its info is asked for this often
# (growing from the first to the second), to learn the node that will hold its driver log.
DRIVER_NODE_WAIT = (0.2, 2.0)
# The wait's status checks name the driver's node (learn_driver_node): the stream asks for it itself only
# when no status check came for this long, so N jobs on a cluster add no request to its one list per poll.
DRIVER_NODE_OWN_LOOKUP_AFTER = 10.0


class StateApiUnavailable(Exception):
    """The state API answered the raw log request with an error: the Jobs API serves the log instead."""


class JobLogStream:
    def __init__(self, log: Callable[[], logging.Logger | Any]) -> None:
        # The trigger's logger, looked up at each use: the triggerer routes it to the task's log only
        # once the trigger runs.
        self._log = log
        # Characters of the job's log (as Ray's text reads count them) already consumed into shown lines
        # (complete lines only).
        self.shown_chars = 0
        # The same position in bytes of the raw driver log (known only while the raw log is read).
        self.shown_bytes = 0
        # True: the log is read raw from the state API; False: through the Jobs API; None: not yet known.
        self.raw: bool | None = None
        # The node holding the job's driver log (the job info's ``driver_node_id``), once known.
        self.node_id: str | None = None
        # When the wait's status checks last brought the job's info (monotonic seconds).
        self._status_seen: float | None = None
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
        """Read a log's text from its start: skip what was shown, take the new lines. ``complete``: a
        whole log read at the job's end (its last line counts even without a newline)."""
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

    async def _read_raw(self, chunks: AsyncIterator[bytes], show: bool, complete: bool) -> None:
        """:meth:`_read` for the raw driver log: positions in bytes, and in characters alongside."""
        lines = RawLineAssembler(skip=self.shown_bytes, skip_text=self.shown_chars)
        try:
            async for chunk in chunks:
                self._take(lines.feed(chunk), show)
                self.shown_bytes, self.shown_chars = lines.shown, lines.shown_text
                await asyncio.sleep(0)  # a buffered body must not hold the event loop for its length
            if complete:
                self._take(lines.finish(), show)
        finally:
            self.shown_bytes, self.shown_chars = lines.shown, lines.shown_text

    def _falls_back(self, submission_id: str, problem: str) -> None:
        """The one line saying the Jobs API serves the log from now on."""
        self.raw = False
        self.log.info(
            "Ray's state API did not serve the raw log of job %s (%s); reading it through the Jobs API "
            "instead (a \\r progress bar then shows each redraw as a line)",
            submission_id,
            problem,
        )

    async def follow(
        self, dashboard: DashboardClient, endpoint: DashboardEndpoint, submission_id: str, closed: asyncio.Event
    ) -> None:
        """Stream the job's log until it drops (or Ray closes the Jobs API tail), then set ``closed`` (the
        early end signal). A re-opened stream replays from the start: what was shown is skipped."""
        self._wake = closed
        if self.raw is not False:
            try:
                await self._follow_raw(dashboard, endpoint, submission_id, closed)
                return
            except StateApiUnavailable as exc:
                self._falls_back(submission_id, str(exc))
        before = self.shown_chars
        try:
            await self._read(dashboard.tail_job_logs(endpoint, submission_id), show=self.show_tail, complete=False)
        except STREAM_ERRORS as exc:
            self.log.debug("log tail of %s dropped: %s", submission_id, exc)
            await asyncio.sleep(1)
        finally:
            self.tail_progressed = self.shown_chars > before
            closed.set()

    async def _follow_raw(
        self, dashboard: DashboardClient, endpoint: DashboardEndpoint, submission_id: str, closed: asyncio.Event
    ) -> None:
        """Follow the raw driver log (state API) beside the Jobs API tail, which only signals the end."""
        before = self.shown_bytes
        end_signal: asyncio.Task[None] | None = None

        async def jobs_api_tail_closes() -> None:
            with contextlib.suppress(*STREAM_ERRORS):
                async for _ in dashboard.tail_job_logs(endpoint, submission_id):
                    pass
            closed.set()  # wakes a status check; the raw stream goes on

        async def chunks(node_id: str) -> AsyncGenerator[bytes, None]:
            nonlocal end_signal
            # Closed as soon as the follow ends (a cancelled one too): Ray would serve it forever.
            async with contextlib.aclosing(dashboard.follow_driver_log(endpoint, node_id, submission_id)) as raw:
                async for chunk in raw:
                    if end_signal is None:  # the state API answers: now the end signal is worth a tail
                        end_signal = asyncio.create_task(jobs_api_tail_closes())
                        self.raw = True
                    yield chunk

        try:
            if (node_id := await self._driver_node(dashboard, endpoint, submission_id)) is None:
                return  # the job ended without a driver
            try:
                async with contextlib.aclosing(chunks(node_id)) as stream:
                    await self._read_raw(stream, show=self.show_tail, complete=False)
            except RayJobsApiError as exc:
                raise StateApiUnavailable(str(exc)) from None
            except STREAM_ERRORS as exc:
                self.log.debug("raw log of %s dropped: %s", submission_id, exc)
                await asyncio.sleep(1)
        finally:
            if end_signal is not None:
                end_signal.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await end_signal
            self.tail_progressed = self.shown_bytes > before
            closed.set()

    def learn_driver_node(self, info: dict[str, Any]) -> None:
        """A status check's job info: the driver's node, once Ray names it."""
        self._status_seen = time.monotonic()
        if self.node_id is None and (node_id := info.get("driver_node_id")):
            self.node_id = str(node_id)

    async def _driver_node(
        self, dashboard: DashboardClient, endpoint: DashboardEndpoint, submission_id: str
    ) -> str | None:
        """The node of the job's driver, once Ray names it (None: the job ended before it had one)."""
        # While the wait's status checks keep coming (a pending job may wait long for its driver), they
        # will name the node: look every 0.1 s (not an Event: a trigger's wait may run in more than one
        # event loop). Only when none came for a while does the stream ask itself.
        started = time.monotonic()
        while self.node_id is None:
            last = self._status_seen if self._status_seen is not None else started
            if time.monotonic() - last >= DRIVER_NODE_OWN_LOOKUP_AFTER:
                break
            await asyncio.sleep(0.1)
        delay, cap = DRIVER_NODE_WAIT
        while self.node_id is None:
            try:
                info = await dashboard.get_job(endpoint, submission_id, timeout=STATUS_TIMEOUT)
            except (*STREAM_ERRORS, RayJobsApiError) as exc:
                self.log.debug("status of %s for its driver node: %s", submission_id, exc)
                info = {}
            if info is None:
                return None  # no such job (JobWait's status check says so)
            if info and "driver_node_id" not in info:
                raise StateApiUnavailable("its job info has no driver_node_id (an older Ray)")
            if node_id := info.get("driver_node_id"):
                self.node_id = str(node_id)
                break
            if info and job_status_of(info).is_terminal:
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, cap)
        return self.node_id

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
        node_id = self.node_id or (info or {}).get("driver_node_id")
        raw_failed = False
        if self.raw is not False and node_id:
            try:
                await self._read_raw(
                    dashboard.driver_log_bytes(endpoint, str(node_id), submission_id, total), show, True
                )
                return
            except LOG_READ_ERRORS as exc:
                raw_failed = True
                self._falls_back(submission_id, f"{type(exc).__name__}: {exc}")
        try:
            await self._read(dashboard.job_log_text(endpoint, submission_id, total), show, complete=True)
            return
        except LOG_READ_ERRORS as exc:
            problem = f"{type(exc).__name__}: {exc}"
            ray_failed = isinstance(exc, RayJobsApiError) and (exc.status or 0) >= 500
        if node_id and ray_failed and not raw_failed:
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
