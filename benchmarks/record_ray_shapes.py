"""Record the Ray Jobs API's response bodies from a real Ray dashboard (the fake server replays them).

Starts a transient local Ray head (loopback only, its own process group, via the provider's local
backend helpers), submits a short job that prints a line a second, and saves what the dashboard answers
to ``tests/support/recorded/ray-<version>/*.json``: version, submit, get (running and finished), list,
logs, stop, an unknown id, and the WebSocket log tail's frames with their timing relative to the job's
``end_time`` (Ray closes the tail a few seconds after the job ends). Stops the head at the end.

    .venv/bin/python -m benchmarks.record_ray_shapes
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import ray
import requests

from airflow_provider_flyray.backends.local_process import local_cluster_pids, start_local_cluster, stop_local_cluster
from tests.support.waits import wait_for_dashboard

# The test double tests/support/recorded_ray.py (and the capacity benchmark through it) replays these.
RECORDED_ROOT = Path(__file__).resolve().parent.parent / "tests" / "support" / "recorded"
# Prints a line a second for 4 s: enough to see the tail stream while RUNNING and close after the end.
JOB_ENTRYPOINT = "python -c \"import time\nfor i in range(4):\n    print('line', i, flush=True); time.sleep(1)\""
LONG_ENTRYPOINT = 'python -c "import time; time.sleep(600)"'


def wait_for_status(base: str, submission_id: str, wanted: set[str], timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = requests.get(f"{base}/api/jobs/{submission_id}", timeout=5).json()
        if body["status"] in wanted:
            return dict(body)
        time.sleep(0.2)
    raise TimeoutError(f"job {submission_id} never reached {wanted}")


async def record_tail(base: str, submission_id: str) -> dict[str, Any]:
    """Every frame the tail sends, stamped with the wall clock, and when and how it closes."""
    frames: list[dict[str, Any]] = []
    ws_url = base.replace("http://", "ws://") + f"/api/jobs/{submission_id}/logs/tail"
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url) as ws:
        opened = time.time()
        async for message in ws:
            frames.append({"at": time.time(), "type": message.type.name, "data": message.data})
        closed = time.time()
        return {"opened": opened, "closed": closed, "close_code": ws.close_code, "frames": frames}


def main() -> None:
    out_dir = RECORDED_ROOT / f"ray-{'.'.join(ray.__version__.split('.')[:2])}"
    out_dir.mkdir(parents=True, exist_ok=True)
    ref = start_local_cluster("record-shapes", num_cpus=1)
    assert ref.address is not None
    base = ref.address
    try:
        wait_for_dashboard(base, timeout=120)
        saved: dict[str, Any] = {"version": requests.get(f"{base}/api/version", timeout=5).json()}

        submit = requests.post(
            f"{base}/api/jobs/",
            json={"entrypoint": JOB_ENTRYPOINT, "submission_id": "bench-record-1", "metadata": {"airflow_task": "x"}},
            timeout=30,
        )
        saved["submit"] = {"status": submit.status_code, "body": submit.json()}
        saved["job_running"] = wait_for_status(base, "bench-record-1", {"RUNNING"})
        tail = asyncio.run(record_tail(base, "bench-record-1"))
        finished = wait_for_status(base, "bench-record-1", {"SUCCEEDED", "FAILED", "STOPPED"})
        saved["job_succeeded"] = finished
        end_s = finished["end_time"] / 1000
        # Relative timings are what the fake server replays; absolute ones are kept for the record.
        tail["closed_after_end_s"] = round(tail["closed"] - end_s, 3)
        for frame in tail["frames"]:
            frame["after_end_s"] = round(frame["at"] - end_s, 3)
        saved["tail"] = tail
        saved["logs"] = requests.get(f"{base}/api/jobs/bench-record-1/logs", timeout=5).json()

        duplicate = requests.post(
            f"{base}/api/jobs/", json={"entrypoint": "true", "submission_id": "bench-record-1"}, timeout=30
        )
        saved["submit_duplicate"] = {"status": duplicate.status_code, "text": duplicate.text}
        missing = requests.get(f"{base}/api/jobs/no-such-job", timeout=5)
        saved["job_not_found"] = {"status": missing.status_code, "text": missing.text}

        long_job = {"entrypoint": LONG_ENTRYPOINT, "submission_id": "bench-long"}
        requests.post(f"{base}/api/jobs/", json=long_job, timeout=30)
        wait_for_status(base, "bench-long", {"RUNNING"})
        stop = requests.post(f"{base}/api/jobs/bench-long/stop", timeout=30)
        saved["stop"] = {"status": stop.status_code, "body": stop.json()}
        wait_for_status(base, "bench-long", {"STOPPED", "FAILED"})
        saved["list"] = requests.get(f"{base}/api/jobs/", timeout=5).json()

        for name, body in saved.items():
            (out_dir / f"{name}.json").write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
        (out_dir / "README.md").write_text(
            f"Recorded from a real Ray {ray.__version__} dashboard (local head, `ray start --head`) by\n"
            "`python -m benchmarks.record_ray_shapes`. The capacity benchmark's fake server templates these.\n"
            f"Job entrypoint: `{JOB_ENTRYPOINT}`\n"
        )
        print(f"saved {sorted(saved)} to {out_dir}")
    finally:
        stop_local_cluster(ref)
        left = local_cluster_pids(ref)
        print("Ray processes left:", left or "none")


if __name__ == "__main__":
    main()
