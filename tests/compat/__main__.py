"""The compatibility run: ``python -m tests.compat`` (``make compat``; not part of ``make test``).

Each leg (tests/compat/matrix.py) gets a venv of its own under ~/.cache/flyray-compat (kept and reused
while its requirements and pyproject.toml are unchanged), installed by uv in two steps: Airflow as on its
release day (what its constraint files pin), then the project and the Ray head by pip's rules. The leg's
suites run there with pytest; the KubeRay legs build and use the control plane with that operator
version (one control plane at a time: a leg refuses to start while another is up). The results go to
benchmarks/results/compat-<date>.json and .md; each suite's pytest output to the cache's logs/.

    python -m tests.compat                                 # every leg (about 2 h on 2 cores)
    python -m tests.compat --airflow 3.0.6 --ray --kuberay # one Airflow leg, no Ray or KubeRay leg
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from tests.compat import matrix
from tests.infra.kube import paths as kube_paths
from tests.support import REPO

CACHE = Path(os.environ.get("FLYRAY_COMPAT_CACHE", Path.home() / ".cache" / "flyray-compat"))
RESULTS = REPO / "benchmarks" / "results"
UV = Path(sys.executable).parent / "uv"
SUITE_TIMEOUT = 60 * 60
SHOWN_PACKAGES = (
    "apache-airflow",
    "apache-airflow-core",
    "apache-airflow-task-sdk",
    "apache-airflow-providers-cncf-kubernetes",
    "apache-airflow-providers-common-compat",
    "apache-airflow-providers-standard",
    "ray",
    "structlog",
    "kubernetes",
    "kubernetes-asyncio",
)


def say(message: str) -> None:
    print(f"[compat {time.strftime('%H:%M:%S')}] {message}", flush=True)


def venv_name(leg: matrix.Leg) -> str:
    return f"airflow-{leg.airflow}-ray-{leg.ray}"


def collected(leg: matrix.Leg, suite: str) -> matrix.SuiteResult:
    junit = CACHE / "logs" / f"{leg.name}-{suite}.xml"
    return matrix.summarise_junit(junit.read_text()) if junit.exists() else matrix.SuiteResult(note="no results yet")


def venv_for(leg: matrix.Leg) -> tuple[Path, str | None]:
    """The leg's venv (made or reused) and, when the install failed, its last lines."""
    steps = [leg.airflow_step, [*leg.provider_step, "-e", f"{REPO}[test]"]]
    spec = json.dumps([steps, hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()])
    venv = CACHE / venv_name(leg)
    marker = venv / ".flyray-spec"
    if marker.exists() and marker.read_text() == spec:
        return venv, None
    shutil.rmtree(venv, ignore_errors=True)
    say(
        f"{leg.name}: installing Airflow {leg.airflow} as of {matrix.installed_as_of(leg.airflow)}, then the project into {venv}"
    )
    python = str(venv / "bin" / "python")
    commands = [[str(UV), "venv", "-q", "--python", str(Path(sys.base_prefix) / "bin" / "python3"), str(venv)]]
    commands += [[str(UV), "pip", "install", "-q", "--python", python, *step] for step in steps]
    commands.append([python, "-c", "import airflow"])
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
            return venv, f"`{' '.join(command[:4])} ...` failed: {lines[-1][:300]}"
    marker.write_text(spec)
    return venv, None


def installed(venv: Path) -> dict[str, str]:
    listed = subprocess.run(
        [str(UV), "pip", "list", "--python", str(venv / "bin" / "python"), "--format", "json"],
        capture_output=True,
        text=True,
    )
    if listed.returncode != 0:
        return {}
    versions = {entry["name"].lower().replace("_", "-"): entry["version"] for entry in json.loads(listed.stdout)}
    return {name: versions[name] for name in SHOWN_PACKAGES if name in versions}


def control_plane_is_up() -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", kube_paths.APISERVER_PORT)) == 0


def leg_env(venv: Path, leg: matrix.Leg) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "AIRFLOW_HOME")}
    # The airflow and ray commands the tests start come from the leg's venv, as `make test`'s from .venv.
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    if leg.kuberay is not None:
        env["FLYRAY_KUBERAY_VERSION"] = leg.kuberay
    return env


def run_suite(leg: matrix.Leg, venv: Path, suite: str) -> matrix.SuiteResult:
    python, env = str(venv / "bin" / "python"), leg_env(venv, leg)
    logs = CACHE / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    junit, log_path = logs / f"{leg.name}-{suite}.xml", logs / f"{leg.name}-{suite}.log"
    junit.unlink(missing_ok=True)
    if leg.kuberay is not None:
        if control_plane_is_up():
            return matrix.SuiteResult(note="another control plane is up (stop it: python -m tests.infra.kube down)")
        build = subprocess.run(
            [python, "-m", "tests.infra.kube", "build"], cwd=REPO, env=env, capture_output=True, text=True
        )
        if build.returncode != 0:
            return matrix.SuiteResult(note="control plane build failed: " + build.stderr.strip()[-300:])
    command = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *matrix.SUITES[suite]]
    say(f"{leg.name}: {suite} ({' '.join(matrix.SUITES[suite])}); log {log_path}")
    started = time.monotonic()
    try:
        with log_path.open("w") as out:
            subprocess.run(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=SUITE_TIMEOUT)
    except subprocess.TimeoutExpired:
        return matrix.SuiteResult(note=f"over {SUITE_TIMEOUT // 60} min", seconds=time.monotonic() - started)
    finally:
        if leg.kuberay is not None:
            subprocess.run([python, "-m", "tests.infra.kube", "down"], cwd=REPO, env=env, capture_output=True)
    if not junit.exists():
        tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        return matrix.SuiteResult(note=f"pytest wrote no results: {tail[0][:300]}")
    result = matrix.summarise_junit(junit.read_text())
    say(f"{leg.name}: {suite}: {result.cell()} in {result.seconds:.0f}s")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.compat", description=__doc__.splitlines()[0])
    parser.add_argument("--airflow", nargs="*", help=f"Airflow versions (default: {' '.join(matrix.AIRFLOW_VERSIONS)})")
    parser.add_argument("--ray", nargs="*", help=f"Ray heads (default: {' '.join(matrix.RAY_VERSIONS)})")
    parser.add_argument(
        "--kuberay", nargs="*", help=f"KubeRay operators (default: {' '.join(matrix.KUBERAY_VERSIONS)})"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where compat-<date>[-tag].json and .md go")
    parser.add_argument("--tag", default="", help="a suffix of the results' names (runs of some legs only)")
    parser.add_argument("--suites", nargs="*", choices=list(matrix.SUITES), help="only these suites of each leg")
    parser.add_argument(
        "--collect", action="store_true", help="run nothing: report the legs' last results (logs/*.xml of earlier runs)"
    )
    args = parser.parse_args(argv)
    started, results = time.monotonic(), []
    for leg in matrix.legs(args.airflow, args.ray, args.kuberay):
        venv, install_error = (CACHE / venv_name(leg), None) if args.collect else venv_for(leg)
        suites = {}
        for suite in leg.suites:
            if args.suites is not None and suite not in args.suites:
                continue
            if args.collect:
                result = collected(leg, suite)
            elif install_error:
                result = matrix.SuiteResult(note=f"install failed: {install_error}")
            else:
                result = run_suite(leg, venv, suite)
            suites[suite] = {**asdict(result), "cell": result.cell(), "ok": result.ok}
        results.append(
            {
                **asdict(leg),
                "steps": [leg.airflow_step, leg.provider_step],
                "installed": installed(venv),
                "suites": suites,
            }
        )
    run = {
        "date": datetime.date.today().isoformat(),
        "command": "python -m tests.compat " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{os.cpu_count()} cores",
        "minutes": (time.monotonic() - started) / 60,
        "legs": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"compat-{run['date']}{'-' + args.tag if args.tag else ''}"
    stem.with_suffix(".json").write_text(json.dumps(run, indent=2) + "\n")
    stem.with_suffix(".md").write_text(matrix.markdown(run))
    print(matrix.markdown(run))
    say(f"results: {stem}.json and .md")
    return 0 if all(s["ok"] for leg in results for s in leg["suites"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
