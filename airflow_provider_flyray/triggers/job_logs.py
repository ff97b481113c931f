"""A Ray job's log, into the task log: each line once and in order, across re-opened tails."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import aiohttp

from airflow_provider_flyray.core.dashboard import DashboardClient
from airflow_provider_flyray.jobs_api import DashboardEndpoint

LINE_PREFIX = "[ray] "


class JobLogStream:
    def __init__(self, log: Callable[[], logging.Logger | Any]) -> None:
        # The trigger's logger, looked up at each use: the triggerer routes it to the task's log only
        # once the trigger runs.
        self._log = log
        # Characters of the job's log already shown (complete lines only).
        self.shown_chars = 0

    @property
    def log(self) -> logging.Logger | Any:
        return self._log()

    def show(self, line: str) -> None:
        self.log.info("%s%s", LINE_PREFIX, line)

    async def follow(
        self, dashboard: DashboardClient, endpoint: DashboardEndpoint, submission_id: str, closed: asyncio.Event
    ) -> None:
        """Stream the WebSocket tail until Ray closes it, then set ``closed`` (the early end signal).
        A re-opened tail replays from the start: what was shown is skipped."""
        already_shown = self.shown_chars
        seen = 0
        partial = ""
        try:
            async for chunk in dashboard.tail_job_logs(endpoint, submission_id):
                chunk_start, seen = seen, seen + len(chunk)
                skip = max(0, already_shown - chunk_start)
                if skip >= len(chunk):
                    continue
                *lines, partial = (partial + chunk[skip:]).split("\n")
                for line in lines:
                    self.show(line)
                # Only complete lines count as shown: a partial one is re-read if the stream drops.
                self.shown_chars = seen - len(partial)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self.log.debug("log tail of %s dropped: %s", submission_id, exc)
            await asyncio.sleep(1)
        finally:
            closed.set()

    def show_rest(self, logs: str) -> None:
        """The job is over: show what the tail had not shown yet of its whole log."""
        if len(logs) > self.shown_chars:
            for line in logs[self.shown_chars :].rstrip("\n").split("\n"):
                self.show(line)
            self.shown_chars = len(logs)
