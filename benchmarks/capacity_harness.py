"""One point of the trigger capacity benchmark: N triggers in one asyncio loop, as a triggerer runs them.

Runs in the virtual environment of the implementation under test (the driver,
:mod:`benchmarks.trigger_capacity`, starts it with the right Python) and writes one JSON result:

- event-loop lag: a task sleeps 10 ms in a loop and records how late it wakes;
- CPU: this process's CPU time (``time.process_time``, all threads) over the window, per minute;
- memory: VmRSS before the triggers exist, VmHWM (peak RSS) at the end, VmRSS sampled each 0.5 s;
- detection latency: the server's instant of flipping the job to SUCCEEDED -> the trigger's event.

The window runs from starting the N ``trigger.run()`` coroutines to the last event (or the cap). A
"steady" window, after the startup burst and before the first job ends, isolates the cost of waiting.

    python -m benchmarks.capacity_harness --impl flyray --url http://127.0.0.1:PORT --count 100 --out r.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

LAG_PERIOD = 0.010
PROBE_PERIOD = 0.5
MIB = 1024 * 1024


# ---- measurement helpers (stdlib only: this module runs in both venvs) -------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summary(values: list[float], scale: float = 1.0, digits: int = 1) -> dict[str, float | None]:
    def pick(q: float) -> float | None:
        value = percentile(values, q)
        return None if value is None else round(value * scale, digits)

    return {"p50": pick(50), "p95": pick(95), "p99": pick(99), "max": pick(100), "count": len(values)}


def proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def control(url: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """A call to the fake server's /bench endpoints; outside the measured window, so blocking is fine."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


class CountingSink:
    """Where rendered log lines go: counted, then dropped (file-like, for structlog's WriteLogger)."""

    def __init__(self) -> None:
        self.lines = 0
        self.chars = 0

    def write(self, text: str) -> int:
        self.lines += 1
        self.chars += len(text)
        return len(text)

    def flush(self) -> None:
        pass


class SinkHandler(logging.Handler):
    def __init__(self, sink: CountingSink) -> None:
        super().__init__(logging.INFO)
        self.sink = sink
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.write(self.format(record))


def route_logs_to(sink: CountingSink) -> None:
    """INFO logs rendered but not written: the triggerer renders each record (to JSON) and ships it to
    per-task handlers; the rendering is charged to the triggers, disk or socket I/O is not."""
    import structlog

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.WriteLoggerFactory(file=sink),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    handler = SinkHandler(sink)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # Libraries with handlers of their own (Ray logs to stderr and does not propagate) go there too.
    for logger in list(logging.root.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger) and logger.handlers:
            logger.handlers[:] = [handler]


# ---- the measured run ---------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.lags: list[tuple[float, float]] = []  # (monotonic, seconds late)
        self.probes: list[tuple[float, float, int]] = []  # (monotonic, process CPU s, VmRSS KiB)
        self.events: dict[int, tuple[float, dict[str, Any]]] = {}  # index -> (epoch s, payload)
        self.errors: list[str] = []

    async def sample_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(LAG_PERIOD)
            now = loop.time()
            self.lags.append((now, max(0.0, now - before - LAG_PERIOD)))

    async def probe(self) -> None:
        while True:
            self.probes.append((time.monotonic(), time.process_time(), proc_status_kib("VmRSS")))
            await asyncio.sleep(PROBE_PERIOD)

    async def consume(self, index: int, trigger: Any) -> None:
        """What the triggerer does: take the first event, then close the generator."""
        events = trigger.run()
        try:
            async for event in events:
                self.events[index] = (time.time(), dict(event.payload))
                break
        except Exception as exc:
            self.errors.append(f"{index}: {type(exc).__name__}: {exc}")
        finally:
            await events.aclose()


def cpu_per_minute(probes: list[tuple[float, float, int]], start: float, end: float) -> float | None:
    """CPU seconds per wall minute between the probes nearest to ``start`` and ``end`` (monotonic)."""
    inside = [p for p in probes if start <= p[0] <= end]
    if len(inside) < 2 or inside[-1][0] - inside[0][0] < 1.0:
        return None
    return round((inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0]) * 60, 2)


async def measure(triggers: list[Any], cap: float, recorder: Recorder) -> dict[str, float]:
    helpers = [asyncio.create_task(recorder.sample_lag()), asyncio.create_task(recorder.probe())]
    await asyncio.sleep(0.2)  # a first probe sample and a few lag samples before the load
    start_mono, start_cpu = time.monotonic(), time.process_time()
    tasks = [asyncio.create_task(recorder.consume(i, t)) for i, t in enumerate(triggers)]
    _, pending = await asyncio.wait(tasks, timeout=cap)
    end_mono, end_cpu = time.monotonic(), time.process_time()
    for task in [*pending, *helpers]:
        task.cancel()
    await asyncio.wait([*pending, *helpers], timeout=30)
    return {"start": start_mono, "end": end_mono, "cpu": end_cpu - start_cpu, "capped": float(bool(pending))}


def run_point(args: argparse.Namespace) -> dict[str, Any]:
    # Environment before Airflow is imported: a scratch AIRFLOW_HOME, the env-var connection.
    from benchmarks.capacity_impls import CONN_ID, IMPLS, JOB_PREFIX, versions

    impl = IMPLS[args.impl]
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="capacity-airflow-")
    os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = impl.connection(args.url)
    os.environ["RAY_ADDRESS"] = args.url  # Ray's client prefers RAY_ADDRESS: keep it on loopback too
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # N WebSockets + N HTTP connections

    sink = CountingSink()
    triggers = [impl.make_trigger(args.url, i, args.poll_interval) for i in range(args.count)]
    route_logs_to(sink)  # after the imports above: Airflow configures logging when it is imported
    rss_baseline_kib = proc_status_kib("VmRSS")

    loadavg_before = Path("/proc/loadavg").read_text().split()[:3]
    server_before = control(args.url, "/bench/ends")
    started = control(
        args.url,
        "/bench/start",
        {
            "count": args.count,
            "presubmit": args.count if impl.presubmit else 0,
            "prefix": JOB_PREFIX,
            "log_every": args.log_every,
        },
    )
    recorder = Recorder()
    window = asyncio.run(measure(triggers, args.cap, recorder))
    server = control(args.url, "/bench/ends")

    latencies = [
        recorder.events[i][0] - server["ends"][sid]
        for i in range(args.count)
        if i in recorder.events and (sid := f"{JOB_PREFIX}-{i:05d}") in server["ends"]
    ]
    offsets = started["offsets"]
    steady_start = window["start"] + args.warmup
    steady_end = window["start"] + min(offsets) if offsets else window["end"]
    lags_all = [lag for t, lag in recorder.lags if window["start"] <= t <= window["end"]]
    lags_steady = [lag for t, lag in recorder.lags if steady_start <= t <= steady_end]
    wall = window["end"] - window["start"]
    events = list(recorder.events.values())
    return {
        "impl": args.impl,
        "count": args.count,
        "poll_interval": args.poll_interval,
        "log_every": args.log_every,
        "logs_mode": "streaming" if args.log_every > 0 else "silent",
        "cap_seconds": args.cap,
        "capped": bool(window["capped"]),
        "window_seconds": round(wall, 2),
        "cpu_seconds": round(window["cpu"], 2),
        "cpu_s_per_min": round(window["cpu"] / wall * 60, 2),
        "steady_window_seconds": [round(args.warmup, 1), round(steady_end - window["start"], 1)],
        "steady_cpu_s_per_min": cpu_per_minute(recorder.probes, steady_start, steady_end),
        "lag_ms": summary(lags_all, 1000),
        "steady_lag_ms": summary(lags_steady, 1000),
        "rss_baseline_mib": round(rss_baseline_kib / 1024, 1),
        "rss_peak_mib": round(proc_status_kib("VmHWM") / 1024, 1),
        "rss_peak_in_window_mib": round(max((p[2] for p in recorder.probes), default=0) / 1024, 1),
        "detection_s": summary(latencies, 1, 3),
        "detected": len(latencies),
        "events": len(recorder.events),
        "event_statuses": dict(Counter(str(p.get("status")) for _, p in events)),
        "event_reasons_sample": sorted({str(p.get("reason") or p.get("message"))[:200] for _, p in events})[:3],
        "errors_sample": recorder.errors[:3],
        "errors": len(recorder.errors),
        "log_lines": sink.lines,
        "loadavg_before_after": [loadavg_before, Path("/proc/loadavg").read_text().split()[:3]],
        "server_requests": server["requests"],
        "server_cpu_seconds": round(server["cpu_seconds"] - server_before["cpu_seconds"], 2),
        "versions": versions(impl),
        "python": ".".join(map(str, __import__("sys").version_info[:3])),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--impl", choices=("flyray", "astro"), required=True)
    parser.add_argument("--url", required=True, help="the fake dashboard, http://127.0.0.1:PORT")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--poll-interval", type=float, default=5.0)
    parser.add_argument("--log-every", type=float, default=2.0, help="job output line period; 0 = silent jobs")
    parser.add_argument("--cap", type=float, default=120.0, help="stop waiting for events after this many s")
    parser.add_argument("--warmup", type=float, default=10.0, help="steady window starts this late")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if not args.url.startswith("http://127.0.0.1:"):
        parser.error("the benchmark talks to a loopback server only")
    args.out.write_text(json.dumps(run_point(args), indent=2) + "\n")


if __name__ == "__main__":
    main()
