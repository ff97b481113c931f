"""A test double of the Ray 2.60 Jobs API: a fake dashboard on 127.0.0.1 replaying recorded bodies.

This is a **test double**, not Ray. Every body it returns is a body recorded from a real Ray 2.60.0
dashboard (a local ``ray start --head``) by :mod:`benchmarks.record_ray_shapes`, kept in
``tests/support/recorded/ray-2.60/`` and templated per job: submission id, entrypoint, metadata, status,
message, driver exit code, start/end times. Only the ``FAILED`` body is not in the recording: it is the
recorded ``SUCCEEDED`` body with the fields Ray 2.60's job supervisor sets for a failed entrypoint
(``status``, ``message``, ``driver_exit_code``, ``error_type``). The WebSocket log tail replays Ray's own
tail loop (``file_tail_iterator`` + ``JobManager.tail_job_logs``): output is read up to EOF, delivered
after a sleep (1 s in Ray), and at an empty read the job status is checked; the tail closes one empty
read after the job is terminal, i.e. 2-4 sleeps after the end, as the real dashboard does.

It makes the trigger's unit tests (``tests/unit/test_trigger.py``) fast and deterministic; it does not
replace the tests against real Ray (``tests/integration/test_trigger_local_ray.py``, the KubeRay and
end-to-end suites) and the control-plane tests, which remain the proof that the real systems behave like
the recording.

Two users:

- :class:`RecordedRay`, in-process on a free loopback port (``async with RecordedRay() as ray``), for
  tests: each job is scripted (:class:`JobScript`: output lines, when it ends, with which status, message
  and driver exit code), jobs can pre-exist (an earlier try's), every request is logged (:attr:`calls`),
  the dashboard can be made unreachable for a while (503, dropped connections or no answer), open log
  tails can be dropped, ``POST /api/jobs/{id}/stop`` marks a job STOPPED, and the tail's sleep (hence its
  close delay) is configurable so tests stay fast.
- :class:`FakeRayDashboard`, the load generator of the trigger capacity benchmark (run as a process by
  ``python -m benchmarks.capacity_server``, a thin wrapper of :func:`main`): jobs are RUNNING from
  submission and flip to SUCCEEDED at a scheduled instant (``t0`` + an offset drawn uniformly from
  ``[end_min, end_max]`` with a fixed seed, so every implementation gets the same schedule); the flip
  instant is recorded, detection latency is measured from it. It prints ``{"port": N}`` on stdout once it
  listens. ``/bench/*`` are control endpoints for the harness, not part of Ray's API.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import math
import random
import re
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import EllipsisType
from typing import Any, NamedTuple

from aiohttp import WSCloseCode, web

RECORDED = Path(__file__).parent / "recorded" / "ray-2.60"
# Output is kept as text; a byte that is not UTF-8 is kept as its surrogate escape ("\udcff" for \377),
# as ``bytes.decode("utf-8", "surrogateescape")`` gives it (see :func:`raw`).
NOT_UTF8 = re.compile("[\udc80-\udcff]")
# Ray's tail frames: file_tail_iterator yields up to 10 lines (or 20,000 characters) at a time.
TAIL_FRAME_LINES = 10
# What Ray 2.60's dashboard answers GET /api/jobs/{id}/logs with when the log is not UTF-8 (a 500 with the
# traceback of the job agent's text-mode read; its last line, as recorded).
NOT_UTF8_TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "ray/dashboard/modules/job/job_head.py", line 591, in get_job_logs\n'
    "    await job_agent_client.get_job_logs_internal(job.submission_id)\n"
    "UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position {position}: invalid start byte\n"
    ".\n"
)


def raw(data: bytes) -> str:
    """Raw output bytes as the double keeps them (bytes that are not UTF-8 as surrogate escapes)."""
    return data.decode("utf-8", "surrogateescape")


def ray_text(output: str) -> str:
    """What Ray's text-mode reads make of the log: universal newlines (\r and \r\n become \n)."""
    return output.replace("\r\n", "\n").replace("\r", "\n") if "\r" in output else output


def ray_frames(text: str) -> list[str]:
    """``text`` in the frames Ray's tail sends: up to 10 lines each."""
    if text.count("\n") <= TAIL_FRAME_LINES:
        return [text]
    lines = text.splitlines(keepends=True)
    return ["".join(lines[i : i + TAIL_FRAME_LINES]) for i in range(0, len(lines), TAIL_FRAME_LINES)]


ID_PATTERN = re.compile(r"-(\d+)$")  # bench job ids end in their index: the schedule is keyed by it


def load_recorded(directory: Path = RECORDED) -> dict[str, Any]:
    return {path.stem: json.loads(path.read_text()) for path in directory.glob("*.json")}


@dataclass
class Schedule:
    """When each job ends, relative to the start of a benchmark point."""

    end_min: float
    end_max: float
    seed: int

    def offsets(self, count: int) -> list[float]:
        rng = random.Random(self.seed)
        return [rng.uniform(self.end_min, self.end_max) for _ in range(count)]


@dataclass
class Job:
    submission_id: str
    entrypoint: str
    metadata: dict[str, str]
    start: float
    status: str = "RUNNING"
    end: float | None = None
    output: str = ""
    timers: list[asyncio.TimerHandle] = field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.status in ("SUCCEEDED", "STOPPED", "FAILED")


class FakeRayDashboard:
    def __init__(self, schedule: Schedule, log_every: float, tail_sleep: float, recorded: dict[str, Any]) -> None:
        self.schedule = schedule
        self.log_every = log_every  # seconds between output lines of a running job; 0 = silent job
        self.tail_sleep = tail_sleep  # Ray's 1 s EOF sleep in the tail loop
        self.recorded = recorded
        self.jobs: dict[str, Job] = {}
        self.t0 = time.time()
        self.offsets: list[float] = []
        self.ends: dict[str, float] = {}  # submission id -> the instant the job flipped to SUCCEEDED
        self.requests: dict[str, int] = {}
        self.sockets: set[web.WebSocketResponse] = set()
        self._list_cache: bytes | None = None
        self.driver_log_works = True  # False: the state API's log read fails too (500)
        self.submits_before_agent = 0  # this many submissions are refused as Ray 2.60 does before its job agent is up

    # ---- templating ---------------------------------------------------------------------------------

    def job_body(self, job: Job) -> dict[str, Any]:
        template = {
            "RUNNING": self.recorded["job_running"],
            "SUCCEEDED": self.recorded["job_succeeded"],
            "STOPPED": next(j for j in self.recorded["list"] if j["status"] == "STOPPED"),
        }[job.status]
        body = copy.copy(template)
        body.update(
            submission_id=job.submission_id,
            entrypoint=job.entrypoint,
            metadata=dict(job.metadata),
            start_time=int(job.start * 1000),
            end_time=None if job.end is None else int(job.end * 1000),
        )
        return body

    def preamble(self, job: Job) -> str:
        # The two lines Ray itself writes before the entrypoint's output (see recorded/logs.json).
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.start)) + f",{int(job.start * 1000) % 1000:03d}"
        return (
            f"{stamp}\tINFO job_manager.py:581 -- Runtime env is setting up.\n"
            f"Running entrypoint for job {job.submission_id}: {job.entrypoint}\n"
        )

    # ---- the job lifecycle --------------------------------------------------------------------------

    def create(self, submission_id: str, entrypoint: str, metadata: dict[str, str]) -> Job:
        loop = asyncio.get_running_loop()
        job = Job(submission_id, entrypoint, metadata, start=time.time())
        job.output = self.preamble(job)
        match = ID_PATTERN.search(submission_id)
        index = int(match.group(1)) if match else -1
        offset = self.offsets[index] if 0 <= index < len(self.offsets) else self.schedule.end_max
        end_at = max(self.t0 + offset, job.start)
        job.timers.append(loop.call_later(end_at - time.time(), self.finish, job))
        if self.log_every > 0:
            # Jobs' output is not synchronised: each job's lines come at its own phase (seeded per index).
            phase = random.Random(f"{self.schedule.seed}-{index}").uniform(0, self.log_every)
            job.timers.append(loop.call_later(phase, self.print_line, job, 1))
        self.jobs[submission_id] = job
        self._list_cache = None
        return job

    def print_line(self, job: Job, number: int) -> None:
        if job.terminal:
            return
        job.output += f"step {number}: still working\n"
        job.timers.append(asyncio.get_running_loop().call_later(self.log_every, self.print_line, job, number + 1))

    def finish(self, job: Job) -> None:
        if job.terminal:
            return
        if self.log_every > 0:
            job.output += "done\n"  # a job's final output, written as it exits
        job.status, job.end = "SUCCEEDED", time.time()
        self.ends[job.submission_id] = job.end
        self._list_cache = None

    def reset(self, count: int) -> None:
        for job in self.jobs.values():
            for timer in job.timers:
                timer.cancel()
        self.jobs.clear()
        self.ends.clear()
        self.requests.clear()
        self._list_cache = None
        self.t0 = time.time()
        self.offsets = self.schedule.offsets(count)

    # ---- Ray's Jobs API -----------------------------------------------------------------------------

    def count(self, name: str) -> None:
        self.requests[name] = self.requests.get(name, 0) + 1

    async def version(self, request: web.Request) -> web.Response:
        self.count("version")
        return web.json_response(self.recorded["version"])

    async def list_jobs(self, request: web.Request) -> web.Response:
        self.count("list")
        if self._list_cache is None:  # many triggers list at once: serialise once per change
            self._list_cache = json.dumps([self.job_body(job) for job in self.jobs.values()]).encode()
        return web.Response(body=self._list_cache, content_type="application/json")

    async def submit(self, request: web.Request) -> web.Response:
        self.count("submit")
        body = await request.json()
        if self.submits_before_agent > 0:
            self.submits_before_agent -= 1
            return web.Response(status=500, text="No available agent to submit job, please try again later.")
        submission_id = str(body.get("submission_id") or f"raysubmit_{len(self.jobs)}")
        if submission_id in self.jobs:
            text = self.recorded["submit_duplicate"]["text"].replace("bench-record-1", submission_id)
            return web.Response(status=500, text=text)
        self.create(submission_id, str(body.get("entrypoint", "")), dict(body.get("metadata") or {}))
        answer = dict(self.recorded["submit"]["body"], job_id=submission_id, submission_id=submission_id)
        return web.json_response(answer)

    def _job_or_404(self, request: web.Request) -> Job | web.Response:
        submission_id = request.match_info["submission_id"]
        job = self.jobs.get(submission_id)
        if job is None:
            text = self.recorded["job_not_found"]["text"].replace("no-such-job", submission_id)
            return web.Response(status=404, text=text)
        return job

    async def get_job(self, request: web.Request) -> web.Response:
        self.count("get")
        job = self._job_or_404(request)
        return job if isinstance(job, web.Response) else web.json_response(self.job_body(job))

    async def stop(self, request: web.Request) -> web.Response:
        self.count("stop")
        job = self._job_or_404(request)
        if isinstance(job, web.Response):
            return job
        stopped = not job.terminal
        if stopped:
            job.status, job.end = "STOPPED", time.time()
            self._list_cache = None
        return web.json_response(dict(self.recorded["stop"]["body"], stopped=stopped))

    async def logs(self, request: web.Request) -> web.Response:
        self.count("logs")
        job = self._job_or_404(request)
        if isinstance(job, web.Response):
            return job
        if (bad := NOT_UTF8.search(job.output)) is not None:  # Ray's text-mode read raises: a 500
            return web.Response(status=500, text=NOT_UTF8_TRACEBACK.format(position=bad.start()))
        return web.json_response({"logs": ray_text(job.output)})

    async def driver_log(self, request: web.Request) -> web.StreamResponse:
        """The state API's raw file read (``/api/v0/logs/file?node_id=..&filename=job-driver-{id}.log``)."""
        self.count("driver_log")
        filename = request.query.get("filename", "")
        job = self.jobs.get(filename.removeprefix("job-driver-").removesuffix(".log"))
        if job is None or not request.query.get("node_id") or not self.driver_log_works:
            return web.Response(status=500, text="500 Internal Server Error\n\nServer got itself in trouble")
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        data = job.output.encode("utf-8", "surrogateescape")
        for at in range(0, len(data), 65536):
            await response.write(data[at : at + 65536])
        await response.write_eof()
        return response

    async def tail(self, request: web.Request) -> web.StreamResponse:
        """Ray's tail loop: read to EOF, sleep, send; on an empty read check the status, sleep again."""
        self.count("tail")
        job = self._job_or_404(request)
        if isinstance(job, web.Response):
            return job
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.add(ws)
        try:
            sent, finished = 0, False
            while not ws.closed:
                chunk, sent = job.output[sent:], len(job.output)
                await asyncio.sleep(self.tail_sleep)  # file_tail_iterator sleeps at EOF before yielding
                if chunk:
                    if NOT_UTF8.search(chunk) is not None:
                        break  # Ray's text-mode readline raises: the tail closes, the read's chunk unsent
                    for frame in ray_frames(ray_text(chunk)):
                        await ws.send_str(frame)
                    continue
                if finished:
                    break
                finished = job.terminal
                await asyncio.sleep(self.tail_sleep)  # JobManager.LOG_TAIL_SLEEP_S
            await ws.close()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.sockets.discard(ws)
        return ws

    # ---- control (harness only) ---------------------------------------------------------------------

    async def bench_start(self, request: web.Request) -> web.Response:
        body = await request.json()
        for ws in list(self.sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY)
        self.reset(int(body["count"]))
        self.log_every = float(body.get("log_every", self.log_every))
        # astro's operator submits on the worker before deferring: its jobs exist before its triggers.
        for index in range(int(body.get("presubmit", 0))):
            self.create(f"{body['prefix']}-{index:05d}", "python job.py", {})
        return web.json_response({"t0": self.t0, "offsets": self.offsets})

    async def bench_ends(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"t0": self.t0, "ends": self.ends, "requests": self.requests, "cpu_seconds": time.process_time()}
        )


def make_app(dashboard: FakeRayDashboard, middlewares: Iterable[Any] = ()) -> web.Application:
    app = web.Application(middlewares=list(middlewares))
    app.add_routes(
        [
            web.get("/api/version", dashboard.version),
            web.get("/api/jobs/", dashboard.list_jobs),
            web.post("/api/jobs/", dashboard.submit),
            web.get("/api/jobs/{submission_id}", dashboard.get_job),
            web.post("/api/jobs/{submission_id}/stop", dashboard.stop),
            web.get("/api/jobs/{submission_id}/logs", dashboard.logs),
            web.get("/api/jobs/{submission_id}/logs/tail", dashboard.tail),
            web.get("/api/v0/logs/file", dashboard.driver_log),
            web.post("/bench/start", dashboard.bench_start),
            web.get("/bench/ends", dashboard.bench_ends),
        ]
    )
    return app


# ---- the test double --------------------------------------------------------------------------------

# Ray 2.60's messages (ray/dashboard/modules/job/common.py and job_supervisor.py).
RAY_MESSAGES = {
    "RUNNING": "Job is currently running.",
    "SUCCEEDED": "Job finished successfully.",
    "STOPPED": "Job was intentionally stopped.",
}
RAY_FAILED_LOG_LINES = 10  # JobLogStorageClient.NUM_LOG_LINES_ON_ERROR: the log lines in a FAILED message
RAY_MAX_LOG_SIZE = 20_000


def ray_failed_message(exit_code: int | None, output: str) -> str:
    """What Ray 2.60's job supervisor writes as the message of a job whose entrypoint failed."""
    output = NOT_UTF8.sub("\ufffd", output)  # Ray reads these last lines as bytes, with replacement
    tail = "".join(output.splitlines(keepends=True)[-RAY_FAILED_LOG_LINES:])[-RAY_MAX_LOG_SIZE:]
    if tail:
        return (
            f"Job entrypoint command failed with exit code {exit_code}, "
            "last available logs (truncated to 20,000 chars):\n" + tail
        )
    return f"Job entrypoint command failed with exit code {exit_code}. No logs available."


@dataclass(frozen=True)
class JobScript:
    """What one job does. Times are seconds after the job is created (submitted or added).

    :param lines: output lines (without ``\\n``), printed one every ``line_every`` seconds from the start;
        any not printed yet when the job ends are written as it exits.
    :param ends_after: when the job ends; None = one ``line_every`` after the last line; ``math.inf`` =
        never by itself (until stopped, or ended with :meth:`RecordedRay.end`); <= 0 = already ended.
    :param status: how it ends: ``SUCCEEDED``, ``FAILED`` or ``STOPPED``.
    :param message: the job's message once ended; None = Ray's (for FAILED: the exit code and last lines).
    :param driver_exit_code: once ended; ``...`` = Ray's (0 when SUCCEEDED, 1 when FAILED, None when STOPPED).
    """

    lines: Sequence[str] = ()
    line_every: float = 0.05
    ends_after: float | None = None
    status: str = "SUCCEEDED"
    message: str | None = None
    driver_exit_code: int | EllipsisType | None = ...

    def __post_init__(self) -> None:
        if self.status not in ("SUCCEEDED", "FAILED", "STOPPED"):
            raise ValueError(f"a job ends SUCCEEDED, FAILED or STOPPED, not {self.status!r}")

    @property
    def end_offset(self) -> float:
        return (len(self.lines) + 1) * self.line_every if self.ends_after is None else self.ends_after


@dataclass
class ScriptedJob(Job):
    script: JobScript = field(default_factory=JobScript)
    printed: int = 0  # how many of the script's lines are in the output
    message: str | None = None
    driver_exit_code: int | None = None


class Call(NamedTuple):
    """One request the double received (answered or not)."""

    method: str
    path: str
    at: float  # epoch seconds


class Outage(NamedTuple):
    mode: str  # "503" | "close" | "hang"
    until: float  # monotonic seconds


OUTAGE_MODES = ("503", "close", "hang")


class RecordedRay(FakeRayDashboard):
    """The fake Ray 2.60 dashboard as a test double, served in-process on a free 127.0.0.1 port.

    ``async with RecordedRay(tail_sleep=0.1) as ray:`` then point the code under test at ``ray.url``.
    Script jobs before they are submitted (:meth:`script`), add pre-existing ones (:meth:`add_job`), end
    them (:meth:`end`), make the dashboard unreachable (:meth:`unreachable`), drop the open log tails
    (:meth:`drop_tails`); read :attr:`calls` (every request) and :attr:`jobs` (their state).
    """

    def __init__(self, *, tail_sleep: float = 0.1, default: JobScript | None = None) -> None:
        super().__init__(Schedule(0.0, 0.0, 0), log_every=0.0, tail_sleep=tail_sleep, recorded=load_recorded())
        self.default_script = default or JobScript()
        self.scripts: dict[str, JobScript] = {}
        self.calls: list[Call] = []
        self.outage: Outage | None = None
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---- serving ------------------------------------------------------------------------------------

    async def start(self) -> str:
        self._runner = web.AppRunner(
            make_app(self, [self._middleware]), access_log=None, handle_signals=False, shutdown_timeout=2.0
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.url

    async def close(self) -> None:
        self.outage = None
        for job in self.jobs.values():
            for timer in job.timers:
                timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await self.drop_tails()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> RecordedRay:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.calls.append(Call(request.method, request.path, time.time()))
        outage = self.outage
        if outage is None or time.monotonic() >= outage.until:
            return await handler(request)
        if outage.mode == "503":  # e.g. a proxy or load balancer in front of a head that is down
            return web.Response(status=503, text="503: Service Unavailable")
        while outage.mode == "hang" and self.outage is outage and time.monotonic() < outage.until:
            await asyncio.sleep(0.05)  # accepted, never answered (until the window ends, then dropped)
        if request.transport is not None:  # (None: the client gave up waiting)
            request.transport.close()  # "close": the connection is dropped without an answer
        raise asyncio.CancelledError

    # ---- scripting jobs -----------------------------------------------------------------------------

    def script(self, submission_id: str | None = None, script: JobScript | None = None, **fields: Any) -> JobScript:
        """What the job submitted as ``submission_id`` (None: any job not scripted) will do."""
        chosen = script or JobScript(**fields)
        if submission_id is None:
            self.default_script = chosen
        else:
            self.scripts[submission_id] = chosen
        return chosen

    def add_job(
        self,
        submission_id: str,
        *,
        metadata: dict[str, str] | None = None,
        entrypoint: str = "python job.py",
        started_ago: float = 5.0,
        script: JobScript | None = None,
        **fields: Any,
    ) -> ScriptedJob:
        """A job that exists before the code under test runs (e.g. one submitted by an earlier try)."""
        return self._create(
            submission_id, entrypoint, dict(metadata or {}), script or JobScript(**fields), time.time() - started_ago
        )

    def create(self, submission_id: str, entrypoint: str, metadata: dict[str, str]) -> Job:
        script = self.scripts.get(submission_id, self.default_script)
        return self._create(submission_id, entrypoint, metadata, script, time.time())

    def _create(
        self, submission_id: str, entrypoint: str, metadata: dict[str, str], script: JobScript, start: float
    ) -> ScriptedJob:
        if submission_id in self.jobs:
            raise ValueError(f"job {submission_id} already exists")
        loop = asyncio.get_running_loop()
        job = ScriptedJob(submission_id, entrypoint, metadata, start=start, script=script)
        job.output = self.preamble(job)
        self.jobs[submission_id] = job
        self._list_cache = None
        if script.end_offset <= 0:  # already over: all its output is there
            while job.printed < len(script.lines):
                self._print_next(job)
            self._end(job, script.status, script.message, script.driver_exit_code)
            return job
        self._print_next(job)  # the first line comes at once, the next ones every line_every
        for number in range(1, len(script.lines)):
            job.timers.append(loop.call_later(number * script.line_every, self._print_next, job))
        if math.isfinite(script.end_offset):
            job.timers.append(
                loop.call_later(
                    script.end_offset, self._end, job, script.status, script.message, script.driver_exit_code
                )
            )
        return job

    def _print_next(self, job: ScriptedJob) -> None:
        if job.terminal or job.printed >= len(job.script.lines):
            return
        job.output += job.script.lines[job.printed] + "\n"
        job.printed += 1

    def write(self, submission_id: str, text: str | bytes) -> None:
        """Append raw output to a running job (no newline added: a partial line stays partial); bytes
        may be anything (see :func:`raw`)."""
        job = self.jobs[submission_id]
        if not job.terminal:
            job.output += raw(text) if isinstance(text, bytes) else text

    def end(
        self,
        submission_id: str,
        status: str = "SUCCEEDED",
        message: str | None = None,
        driver_exit_code: int | EllipsisType | None = ...,
    ) -> None:
        """End a job now (its remaining scripted lines are written as it exits)."""
        job = self.jobs[submission_id]
        assert isinstance(job, ScriptedJob)
        self._end(job, status, message, driver_exit_code)

    def forget(self, submission_id: str) -> None:
        """Lose a job, as a head restarted without GCS fault tolerance does: it is no longer listed and
        ``GET /api/jobs/{id}`` answers 404."""
        job = self.jobs.pop(submission_id)
        for timer in job.timers:
            timer.cancel()
        self._list_cache = None

    def _end(
        self, job: ScriptedJob, status: str, message: str | None, driver_exit_code: int | EllipsisType | None
    ) -> None:
        if job.terminal:
            return
        if status != "STOPPED":  # a process that exits writes what it still had; a stopped one is killed
            while job.printed < len(job.script.lines):
                self._print_next(job)
        if driver_exit_code is ...:
            driver_exit_code = {"SUCCEEDED": 0, "FAILED": 1}.get(status)
        if message is None:
            message = (
                ray_failed_message(driver_exit_code, job.output)  # Ray's log file starts with its preamble
                if status == "FAILED"
                else RAY_MESSAGES[status]
            )
        job.status, job.end = status, time.time()
        job.message, job.driver_exit_code = message, driver_exit_code
        self.ends[job.submission_id] = job.end
        self._list_cache = None
        for timer in job.timers:
            timer.cancel()

    def job_body(self, job: Job) -> dict[str, Any]:
        if job.status != "FAILED":
            body = super().job_body(job)
        else:  # not recorded: the SUCCEEDED body with what Ray's job supervisor sets for a failed entrypoint
            body = copy.copy(self.recorded["job_succeeded"])
            body.update(
                submission_id=job.submission_id,
                entrypoint=job.entrypoint,
                metadata=dict(job.metadata),
                start_time=int(job.start * 1000),
                end_time=None if job.end is None else int(job.end * 1000),
                status="FAILED",
                error_type="JOB_ENTRYPOINT_COMMAND_ERROR",
            )
        if isinstance(job, ScriptedJob) and job.terminal:
            body.update(message=job.message, driver_exit_code=job.driver_exit_code)
        return body

    async def stop(self, request: web.Request) -> web.Response:
        """Ray's stop: the job becomes STOPPED (message "Job was intentionally stopped.")."""
        job = self.jobs.get(request.match_info["submission_id"])
        if not isinstance(job, ScriptedJob):
            return await super().stop(request)
        self.count("stop")
        stopped = not job.terminal
        self._end(job, "STOPPED", None, None)
        return web.json_response(dict(self.recorded["stop"]["body"], stopped=stopped))

    # ---- faults -------------------------------------------------------------------------------------

    def unreachable(self, seconds: float, mode: str = "503", *, drop_tails: bool = True) -> None:
        """From now on, for ``seconds`` (``math.inf``: for good), every request fails.

        ``"503"``: answered 503; ``"close"``: the connection is dropped without an answer; ``"hang"``: no
        answer until the window ends, then dropped. The open log tails are dropped too (``drop_tails``).
        """
        if mode not in OUTAGE_MODES:
            raise ValueError(f"mode is one of {OUTAGE_MODES}, not {mode!r}")
        self.outage = Outage(mode, time.monotonic() + seconds)
        if drop_tails:
            task = asyncio.get_running_loop().create_task(self.drop_tails())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def reachable(self) -> None:
        """End the unreachable window now."""
        self.outage = None

    async def drop_tails(self) -> None:
        """Close every open log tail now, as a restarting dashboard or a proxy timeout does."""
        for ws in list(self.sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY)

    # ---- reading ------------------------------------------------------------------------------------

    def requests_to(self, method: str, path: str) -> list[Call]:
        return [call for call in self.calls if call.method == method and call.path == path]

    def submits(self) -> list[Call]:
        return self.requests_to("POST", "/api/jobs/")

    def stops(self, submission_id: str) -> list[Call]:
        return self.requests_to("POST", f"/api/jobs/{submission_id}/stop")

    def tails(self, submission_id: str) -> list[Call]:
        return self.requests_to("GET", f"/api/jobs/{submission_id}/logs/tail")


# ---- the benchmark's process ------------------------------------------------------------------------


async def serve(args: argparse.Namespace) -> None:
    dashboard = FakeRayDashboard(
        Schedule(args.end_min, args.end_max, args.seed), args.log_every, args.tail_sleep, load_recorded()
    )
    runner = web.AppRunner(make_app(dashboard), access_log=None, handle_signals=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port, backlog=4096)
    await site.start()
    port = runner.addresses[0][1]
    print(json.dumps({"port": port}), flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None, description: str | None = None) -> None:
    parser = argparse.ArgumentParser(description=description or __doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0 = a free port")
    parser.add_argument("--end-min", type=float, default=30.0, help="earliest job end, seconds after the start")
    parser.add_argument("--end-max", type=float, default=60.0, help="latest job end, seconds after the start")
    parser.add_argument("--log-every", type=float, default=2.0, help="seconds between output lines; 0 = silent")
    parser.add_argument("--tail-sleep", type=float, default=1.0, help="Ray's log tail sleep at EOF")
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
