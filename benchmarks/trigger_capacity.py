"""Trigger capacity: N concurrent RayJobTrigger.run() in one event loop, ours vs astro-provider-ray 0.4.0.

For each N and each implementation a fresh harness process (:mod:`benchmarks.capacity_harness`, in that
implementation's virtual environment) runs N triggers in one asyncio loop, as Airflow's triggerer does,
against one fake Ray 2.60 dashboard (:mod:`benchmarks.capacity_server`, its own process, 127.0.0.1
only): the load generator. Same server, poll interval, N and job schedule for both implementations.

    .venv/bin/python -m benchmarks.trigger_capacity [--sizes 10,100,500,1000,2000] [--poll-interval 5] [--quick]

Writes ``benchmarks/results/capacity-<date>.json`` and ``.png`` and prints a markdown table.
astro-provider-ray is installed only into ``benchmarks/.venv-astro`` (created on first use).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.capacity_report import markdown_table, plot

ROOT = Path(__file__).resolve().parent.parent
ASTRO_VENV = ROOT / "benchmarks" / ".venv-astro"
ASTRO_REQUIREMENT = "astro-provider-ray==0.4.0"
RESULTS = ROOT / "benchmarks" / "results"
LOAD_GENERATOR_NOTE = (
    "The load generator is benchmarks/capacity_server.py: a fake Ray 2.60 Jobs API (aiohttp, 127.0.0.1) "
    "replaying bodies recorded from a real Ray 2.60 dashboard (tests/support/recorded/ray-2.60, served by "
    "tests/support/recorded_ray.py), in its own "
    "process; its CPU is not in the triggers' figures (reported separately as server_cpu_seconds). It "
    "shares the machine's cores with the trigger process."
)
LOGGING_NOTE = (
    "Trigger logs stay at INFO and are rendered (structlog JSON / logging.Formatter, as the triggerer "
    "renders them for its per-task handlers) into a counting sink that discards them: rendering is "
    "measured, file or socket I/O is not."
)


def python_of(impl: str) -> Path:
    return ASTRO_VENV / "bin" / "python" if impl == "astro" else Path(sys.executable)


def ensure_astro_venv() -> None:
    """astro-provider-ray lives in its own venv: it must never touch the project's environment."""
    python = python_of("astro")
    probe = [str(python), "-c", "import ray_provider.triggers"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return
    print(f"creating {ASTRO_VENV} with {ASTRO_REQUIREMENT} (a few minutes)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", ASTRO_VENV], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", ASTRO_REQUIREMENT], check=True)


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[str], str]:
    command = [
        sys.executable, "-m", "benchmarks.capacity_server",
        "--end-min", str(args.end_min), "--end-max", str(args.end_max),
        "--log-every", str(args.log_every), "--seed", str(args.seed),
    ]  # fmt: skip
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    line = server.stdout.readline()
    if not line:
        raise RuntimeError(f"the fake Ray dashboard did not start (exit {server.wait()})")
    return server, f"http://127.0.0.1:{json.loads(line)['port']}"


def run_point(args: argparse.Namespace, url: str, impl: str, count: int, log_every: float) -> dict[str, Any]:
    cap = args.end_max + args.cap_grace
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "point.json"
        command = [
            str(python_of(impl)), "-m", "benchmarks.capacity_harness", "--impl", impl, "--url", url,
            "--count", str(count), "--poll-interval", str(args.poll_interval), "--log-every", str(log_every),
            "--cap", str(cap), "--warmup", str(args.warmup), "--out", str(out),
        ]  # fmt: skip
        started = time.monotonic()
        try:
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=cap + 240)
        except subprocess.TimeoutExpired:
            return {"impl": impl, "count": count, "log_every": log_every, "error": "harness timed out"}
        if done.returncode != 0 or not out.exists():
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            return {"impl": impl, "count": count, "log_every": log_every, "error": "\n".join(tail)}
        point: dict[str, Any] = json.loads(out.read_text())
        point["harness_wall_seconds"] = round(time.monotonic() - started, 1)
        return point


def describe(point: dict[str, Any]) -> str:
    if "error" in point:
        return f"{point['impl']:>6} N={point['count']:<5} ERROR {point['error']}"
    return (
        f"{point['impl']:>6} N={point['count']:<5} {point['logs_mode']:<9} lag p99 {point['lag_ms']['p99']} ms, "
        f"CPU {point['cpu_s_per_min']} s/min (steady {point['steady_cpu_s_per_min']}), "
        f"RSS {point['rss_baseline_mib']}->{point['rss_peak_mib']} MiB, detection p95 {point['detection_s']['p95']} s "
        f"({point['detected']}/{point['count']}){' CAPPED' if point['capped'] else ''}"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10,100,500,1000,2000", help="values of N, comma-separated")
    parser.add_argument("--silent-sizes", default="1000", help="N also measured with silent jobs ('' = none)")
    parser.add_argument("--poll-interval", type=float, default=5.0)
    parser.add_argument("--impls", default="flyray,astro")
    parser.add_argument("--end-min", type=float, default=30.0, help="jobs end uniformly in [end-min, end-max] s")
    parser.add_argument("--end-max", type=float, default=60.0)
    parser.add_argument("--log-every", type=float, default=2.0, help="seconds between a running job's lines")
    parser.add_argument("--warmup", type=float, default=10.0, help="the steady window starts this late")
    parser.add_argument("--cap-grace", type=float, default=30.0, help="a point ends end-max + this at most")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--quick", action="store_true", help="N=10,100 and short jobs: a fast check")
    parser.add_argument("--out", type=Path, help="results JSON (default benchmarks/results/capacity-<date>.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.silent_sizes = "10,100", "100"
        args.end_min, args.end_max, args.warmup, args.cap_grace = 8.0, 15.0, 3.0, 20.0
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    silent_sizes = [int(s) for s in args.silent_sizes.split(",") if s]
    impls = [i for i in args.impls.split(",") if i]
    if "astro" in impls:
        ensure_astro_venv()
    date = time.strftime("%Y-%m-%d")
    out = args.out or RESULTS / f"capacity-{date}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)

    loadavg_before = Path("/proc/loadavg").read_text().split()[:3]
    started = time.time()
    server, url = start_server(args)
    points: list[dict[str, Any]] = []
    try:
        plan = [(n, args.log_every) for n in sizes] + [(n, 0.0) for n in silent_sizes]
        for count, log_every in plan:
            for impl in impls:
                point = run_point(args, url, impl, count, log_every)
                points.append(point)
                print(describe(point), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    loadavg_after = Path("/proc/loadavg").read_text().split()[:3]

    results = {
        "date": date,
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.trigger_capacity", *(argv or sys.argv[1:])]),
        "wall_seconds": round(time.time() - started, 1),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_before": loadavg_before,
            "loadavg_after": loadavg_after,
            "note": "shared machine: other people's processes ran during the sweep (see loadavg)",
        },
        "settings": {
            "sizes": sizes,
            "silent_sizes": silent_sizes,
            "poll_interval": args.poll_interval,
            "job_schedule": "RUNNING from submission, SUCCEEDED at t0 + "
            f"uniform({args.end_min:g}, {args.end_max:g}) s, seed {args.seed}",
            "log_every": args.log_every,
            "log_tail": "Ray 2.60's tail loop replayed: 1 s sleep at EOF, closes one empty read after the end",
            "cap_seconds": args.end_max + args.cap_grace,
            "steady_window": f"{args.warmup:g} s after start -> first job end",
            "load_generator": LOAD_GENERATOR_NOTE,
            "logging": LOGGING_NOTE,
        },
        "points": points,
    }
    out.write_text(json.dumps(results, indent=2) + "\n")
    plot_path = out.with_suffix(".png")
    plot(results, plot_path)
    print(f"\nresults: {out}, plot: {plot_path}")
    print(f"load average before {' '.join(loadavg_before)}, after {' '.join(loadavg_after)}\n")
    print(markdown_table(results))


if __name__ == "__main__":
    main()
