"""RayJobTrigger following ``@task.ray`` jobs on a real local Ray head (the ``address_ref`` fixture of
tests/integration/conftest.py): the result comes back in the event, and the job's end is seen soon after
its frames, not at the next poll nor when Ray closes the log tail. Nothing is timed beyond a robust
bound: benchmarks/decorator_overhead.py measures the figures.

What the trigger controls is asserted tightly: from the moment it has the complete frames to its event
(< 1 s: fast status checks every 0.1 s). Ray's end_time to the event also includes Ray's log tail,
which sends lines once a second and, on Ray 2.60 on this machine, delivers a job's last lines up to ~3 s
after its end: that bound is loose (< 4 s); benchmarks/decorator_overhead.py has the figures."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from airflow_provider_flyray.cluster import ClusterRef
from airflow_provider_flyray.function_call import (
    DRIVER_ENTRYPOINT,
    call_json,
    function_source,
    job_env_vars,
    new_marker,
    with_env_vars,
)
from airflow_provider_flyray.jobs_api import JobSubmission
from airflow_provider_flyray.naming import TaskIdentity, job_metadata_for, submission_id_for
from airflow_provider_flyray.triggers.ray_job import RayJobTrigger
from tests.support.ray_jobs import first_event

pytestmark = pytest.mark.ray

# Far beyond the job: only the result frames (then the fast status confirmation) can end the wait early.
LONG_POLL = 30.0
# From the frames seen to the event: the fast status checks (0.1 s, growing) and the last log read.
FRAMES_TO_EVENT_BOUND = 1.0
# Ray's end_time to the event: what Ray's tail adds (it sends lines once a second, and on this 2-core
# machine has been measured up to ~3 s late at a job's end) plus the above. Robust, not a goal.
END_TO_EVENT_BOUND = 4.0


def run_watching_frames(trigger: RayJobTrigger) -> tuple[dict[str, Any], float]:
    """The trigger's first event, and when the trigger had the complete result frames (epoch seconds)."""

    async def both() -> tuple[dict[str, Any], float]:
        async def frames_seen() -> float:
            while not trigger._logs.result_complete:
                await asyncio.sleep(0.01)
            return time.time()

        watch = asyncio.create_task(frames_seen())
        event = await asyncio.wait_for(first_event(trigger), 60)
        return event, await asyncio.wait_for(watch, 1)

    return asyncio.run(both())


def counts(n: int) -> dict[str, Any]:
    import time

    for i in range(n):
        print("step", i, flush=True)
        time.sleep(0.1)
    return {"n": n, "squares": [i * i for i in range(n)]}


def fails() -> None:
    import time

    for i in range(60):
        print("waiting", i, flush=True)
        time.sleep(0.1)
    print("about to fail", flush=True)
    raise RuntimeError("remote trouble")


def function_trigger(ref: ClusterRef, function: Any, *args: Any, **kwargs: Any) -> RayJobTrigger:
    """The trigger RayDecoratedOperator defers to (its submission built from the same pieces)."""
    identity = TaskIdentity("dag", "function", uuid.uuid4().hex)
    call = call_json(function_source(function), args, {})
    submission = JobSubmission(
        submission_id_for(identity),
        DRIVER_ENTRYPOINT,
        runtime_env=with_env_vars(None, job_env_vars(call, new_marker())),
        metadata=job_metadata_for(identity),
    )
    kwargs.setdefault("poll_interval", LONG_POLL)
    return RayJobTrigger(
        ray_conn_id="ray_local",
        cluster=ref.to_dict(),
        submission=submission.to_dict(),
        owner_key=identity.task_key,
        **kwargs,
    )


@pytest.mark.parametrize("get_logs", [True, False], ids=["logs", "no-logs"])
def test_function_job_result_and_its_end_seen_quickly(address_ref, get_logs):
    started = time.time()
    event, frames_at = run_watching_frames(function_trigger(address_ref, counts, 60, get_logs=get_logs))
    assert event["status"] == "success", event
    assert event["result"] == {"n": 60, "squares": [i * i for i in range(60)]}
    assert "step 59" in event["log_tail"]
    assert not any(line.startswith("##flyray:") for line in event["log_tail"])
    end = event["end_time"] / 1000
    assert end > started
    # The frames, then the event: a fast status check, not the 30 s poll nor the tail's close.
    assert event["timings"]["event"] - frames_at < FRAMES_TO_EVENT_BOUND, event["timings"]["event"] - frames_at
    assert event["timings"]["event"] - end < END_TO_EVENT_BOUND, event["timings"]["event"] - end


def test_function_job_failure_is_seen_quickly_with_the_exception(address_ref):
    event, frames_at = run_watching_frames(function_trigger(address_ref, fails))
    assert event["status"] == "failed" and event["result"] is None
    assert "the function raised RuntimeError: remote trouble" in event["reason"]
    assert "--- remote traceback ---" in event["reason"] and ", in fails" in event["reason"]
    assert "about to fail" in event["log_tail"]
    assert event["timings"]["event"] - frames_at < FRAMES_TO_EVENT_BOUND
    assert event["timings"]["event"] - event["end_time"] / 1000 < END_TO_EVENT_BOUND
