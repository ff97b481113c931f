"""The load generator of the trigger capacity benchmark: a fake Ray 2.60 Jobs API on 127.0.0.1.

Every body it returns is a body recorded from a real Ray 2.60 dashboard (``benchmarks/recorded/``,
made by :mod:`benchmarks.record_ray_shapes`), templated per job: submission id, entrypoint, metadata,
status, message, start/end times. So both triggers under test parse exactly what Ray sends (astro's
client validates it with Ray's own ``JobDetails`` model).

Jobs are RUNNING from submission and flip to SUCCEEDED at a scheduled instant (``t0`` + an offset drawn
uniformly from ``[end_min, end_max]`` with a fixed seed, so every implementation gets the same schedule).
The flip instant is recorded: detection latency is measured from it. The WebSocket log tail replays
Ray's own tail loop (``file_tail_iterator`` + ``JobManager.tail_job_logs``): output is read up to EOF,
delivered after a 1 s sleep, and at an empty read the job status is checked; the tail closes one empty
read after the job is terminal, i.e. 2-4 s after the end, as the real dashboard does.

It runs in its own process (``python -m benchmarks.capacity_server``) so its CPU is not charged to the
triggers; it prints ``{"port": N}`` on stdout once it listens. ``/bench/*`` are control endpoints for
the harness, not part of Ray's API.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import random
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSCloseCode, web

RECORDED = Path(__file__).parent / "recorded" / "ray-2.60"
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
        return job if isinstance(job, web.Response) else web.json_response({"logs": job.output})

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
                    await ws.send_str(chunk)
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


def make_app(dashboard: FakeRayDashboard) -> web.Application:
    app = web.Application()
    app.add_routes(
        [
            web.get("/api/version", dashboard.version),
            web.get("/api/jobs/", dashboard.list_jobs),
            web.post("/api/jobs/", dashboard.submit),
            web.get("/api/jobs/{submission_id}", dashboard.get_job),
            web.post("/api/jobs/{submission_id}/stop", dashboard.stop),
            web.get("/api/jobs/{submission_id}/logs", dashboard.logs),
            web.get("/api/jobs/{submission_id}/logs/tail", dashboard.tail),
            web.post("/bench/start", dashboard.bench_start),
            web.get("/bench/ends", dashboard.bench_ends),
        ]
    )
    return app


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
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
