"""RayJobTrigger against a recorded Ray 2.60 Jobs API (tests/support/recorded_ray.py), in seconds.

The double serves bodies recorded from a real Ray 2.60 dashboard and replays its log tail loop, so these
tests drive the real trigger (its real HTTP and WebSocket client) through submission, adoption, log
streaming, end detection, outages and deadlines without Ray, root or Kubernetes. The same behaviours
against real Ray stay covered by tests/integration/test_trigger_local_ray.py and the KubeRay suites.

The helpers (and why the trigger's log is routed to caplog) are in tests/support/trigger_double.py; the
``ray`` fixture is in tests/unit/conftest.py.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid

import aiohttp
import pytest

from airflow_provider_flyray.naming import job_metadata_for, submission_id_for
from tests.support.trigger_double import (
    TAIL_SLEEP,
    first_event,
    identity,
    make_trigger,
    messages,
    numbered,
    ray_lines,
    restarted,
    until,
)

# ---- submission: exactly once, restart, retries -------------------------------------------------------


async def test_submits_exactly_once_and_succeeds(ray, caplog):
    trigger = make_trigger(ray)
    sid = trigger.job.submission_id
    ray.script(sid, lines=numbered(3))
    event = await first_event(trigger)

    assert event["status"] == "success" and event["job_status"] == "SUCCEEDED"
    assert event["submission_id"] == sid and event["reason"] == ""
    assert event["driver_exit_code"] == 0
    assert event["dashboard_url"] == ray.url
    assert event["log_tail"][-3:] == numbered(3)
    job = ray.jobs[sid]
    assert (event["start_time"], event["end_time"]) == (int(job.start * 1000), int(job.end * 1000))
    assert len(ray.submits()) == 1
    assert job.entrypoint == "python train.py" and job.metadata == trigger.job.metadata
    # A first try has no earlier try to adopt: it never lists the cluster's jobs.
    assert ray.requests_to("GET", "/api/jobs/") == []
    assert f"Submitted Ray job {sid}: python train.py" in messages(caplog)
    assert "submitted" in event["timings"]


async def test_a_submission_refused_before_rays_job_agent_is_up_is_repeated_until_it_is(ray, monkeypatch):
    """Ray 2.60 answers 500 "No available agent to submit job, please try again later" for a while
    after its head is up (a local head on a loaded machine failed tasks with it): nothing was created,
    so the trigger submits again, once the agent is there, and runs one job."""
    from airflow_provider_flyray.core import dashboard

    monkeypatch.setattr(dashboard, "AGENT_RETRY_FIRST", 0.05)
    trigger = make_trigger(ray)
    ray.script(trigger.job.submission_id, lines=numbered(2))
    ray.submits_before_agent = 3
    event = await first_event(trigger)
    assert event["status"] == "success", event["reason"]
    assert len(ray.requests_to("POST", "/api/jobs/")) == 4 and len(ray.jobs) == 1


async def test_a_job_agent_that_never_comes_fails_the_submission_with_rays_words(ray, monkeypatch):
    from airflow_provider_flyray.core import dashboard

    monkeypatch.setattr(dashboard, "AGENT_RETRY_FIRST", 0.05)
    monkeypatch.setattr(dashboard, "AGENT_WAIT", 0.5)
    trigger = make_trigger(ray)
    ray.submits_before_agent = 1000
    event = await first_event(trigger)
    assert event["status"] == "error" and "No available agent to submit job" in event["reason"], event
    assert 2 <= len(ray.requests_to("POST", "/api/jobs/")) <= 6 and ray.jobs == {}


async def test_restarted_trigger_follows_the_job_instead_of_submitting_again(ray, caplog):
    first = make_trigger(ray)
    sid = first.job.submission_id
    ray.script(sid, lines=numbered(4), line_every=0.1, ends_after=0.8)
    task = asyncio.create_task(first_event(first))
    await until(lambda: ray.tails(sid))  # submitted and following the job
    task.cancel()  # the triggerer goes away
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ray.jobs[sid].status == "RUNNING"

    event = await first_event(restarted(first))
    assert event["status"] == "success" and event["submission_id"] == sid
    assert len(ray.submits()) == 1
    assert f"Ray job {sid} already submitted; following it" in messages(caplog)


async def test_retry_adopts_the_running_job_of_an_earlier_try(ray, caplog):
    key = f"manual__{uuid.uuid4().hex}"
    try_1, try_2 = identity(key, 1), identity(key, 2)
    earlier = submission_id_for(try_1)
    ray.add_job(earlier, metadata=job_metadata_for(try_1), lines=["from try 1"], ends_after=0.5)
    event = await first_event(make_trigger(ray, try_2))

    assert event["status"] == "success" and event["submission_id"] == earlier
    assert "from try 1" in event["log_tail"]
    assert ray.submits() == [] and submission_id_for(try_2) not in ray.jobs
    assert len(ray.requests_to("GET", "/api/jobs/")) == 1
    assert f"Reattaching to Ray job {earlier} of an earlier try (still RUNNING)" in messages(caplog)


async def test_retry_does_not_adopt_a_finished_job_or_another_tasks_job(ray):
    key = f"manual__{uuid.uuid4().hex}"
    try_1, try_2 = identity(key, 1), identity(key, 2)
    ray.add_job(submission_id_for(try_1), metadata=job_metadata_for(try_1), status="FAILED", ends_after=0)
    other = identity(try_number=2)  # another run of the task: another task key
    ray.add_job("other-run", metadata=job_metadata_for(other), ends_after=math.inf)
    trigger = make_trigger(ray, try_2)
    ray.script(trigger.job.submission_id, lines=["from try 2"])
    event = await first_event(trigger)

    assert event["status"] == "success"
    assert event["submission_id"] == submission_id_for(try_2) and event["submission_id"].endswith("-try2")
    assert "from try 2" in event["log_tail"]
    assert len(ray.submits()) == 1
    assert ray.jobs["other-run"].status == "RUNNING" and ray.stops("other-run") == []


# ---- logs -----------------------------------------------------------------------------------------


async def test_log_lines_stream_into_the_task_log_in_order_each_once(ray, caplog):
    trigger = make_trigger(ray, poll_interval=30)  # only the tail closing can end this wait quickly
    sid = trigger.job.submission_id
    ray.script(sid, lines=numbered(12), line_every=0.06)
    event = await first_event(trigger)

    assert event["status"] == "success"
    job = ray.jobs[sid]
    assert ray_lines(caplog) == job.output.splitlines()  # Ray's two preamble lines, then the job's
    assert ray_lines(caplog)[-12:] == numbered(12)
    # Streamed while the job ran, not only read at the end.
    first_shown = next(r.created for r in caplog.records if r.getMessage() == "[ray] line 0")
    assert first_shown < job.end - 0.3
    assert len(ray.tails(sid)) == 1


async def test_log_lines_each_once_when_the_tail_drops_and_reopens(ray, caplog):
    trigger = make_trigger(ray)
    sid = trigger.job.submission_id
    ray.script(sid, ends_after=math.inf)
    task = asyncio.create_task(first_event(trigger))
    await until(lambda: sid in ray.jobs)
    ray.write(sid, "one\ntwo\n")
    await until(lambda: "two" in ray_lines(caplog))
    await ray.drop_tails()
    ray.write(sid, "three\nfour\nhalf a ")  # a partial line: shown only once it is complete
    await until(lambda: len(ray.tails(sid)) == 2 and "four" in ray_lines(caplog))
    await asyncio.sleep(3 * TAIL_SLEEP)  # the partial line has been sent on this tail
    await ray.drop_tails()
    ray.write(sid, "line\nfive\n")
    await until(lambda: len(ray.tails(sid)) == 3 and "five" in ray_lines(caplog))
    ray.end(sid)
    event = await task

    assert event["status"] == "success"
    assert ray_lines(caplog)[2:] == ["one", "two", "three", "four", "half a line", "five"]
    assert ray_lines(caplog) == ray.jobs[sid].output.splitlines()


# ---- how jobs end -----------------------------------------------------------------------------------


async def test_end_is_noticed_when_the_tail_closes_not_at_the_next_poll(ray):
    trigger = make_trigger(ray, poll_interval=30)
    sid = trigger.job.submission_id
    ray.script(sid, lines=numbered(2), ends_after=0.3)
    event = await first_event(trigger)
    received = time.time()

    assert event["status"] == "success"
    # Ray's tail closes 2-4 tail sleeps after the end; then one status check (at most 0.5 s apart).
    assert received - ray.jobs[sid].end < 4 * TAIL_SLEEP + 0.5 + 0.5
    # (and one look-up of the driver's node, for the state API's raw log)
    assert len(ray.requests_to("GET", f"/api/jobs/{sid}")) <= 4


async def test_end_is_noticed_at_the_next_poll_without_logs(ray, caplog):
    trigger = make_trigger(ray, poll_interval=0.5, get_logs=False)
    sid = trigger.job.submission_id
    ray.script(sid, lines=numbered(2), ends_after=0.7)
    event = await first_event(trigger)
    received = time.time()

    assert event["status"] == "success"
    assert received - ray.jobs[sid].end < 0.5 + 0.3
    assert len(ray.requests_to("GET", f"/api/jobs/{sid}")) >= 3  # polled: the 404 check, RUNNING, SUCCEEDED
    assert ray.tails(sid) == [] and ray_lines(caplog) == []
    assert event["log_tail"][-2:] == numbered(2)  # the final read still reports the last lines


async def test_failed_job_reports_its_message_exit_code_and_last_lines(ray):
    trigger = make_trigger(ray)
    sid = trigger.job.submission_id
    ray.script(sid, lines=numbered(60), line_every=0.005, status="FAILED", driver_exit_code=3)
    event = await first_event(trigger)

    assert event["status"] == "failed" and event["job_status"] == "FAILED"
    assert event["driver_exit_code"] == 3
    # Ray's message carries the last lines of the log too: the failure message shows them once (log_tail).
    assert event["reason"] == f"Ray job {sid} FAILED: Job entrypoint command failed with exit code 3"
    assert "line 59" in ray.jobs[sid].message and event["message"] == ray.jobs[sid].message
    assert event["log_tail"] == numbered(60)[-50:]


async def test_job_stopped_from_outside_is_reported_as_stopped(ray):
    trigger = make_trigger(ray)
    sid = trigger.job.submission_id
    ray.script(sid, lines=["working"], ends_after=math.inf)
    task = asyncio.create_task(first_event(trigger))
    await until(lambda: ray.tails(sid))
    # Someone presses "stop" in the Ray dashboard.
    async with aiohttp.ClientSession() as http, http.post(f"{ray.url}/api/jobs/{sid}/stop") as response:
        assert (response.status, await response.json()) == (200, {"stopped": True})
    event = await task

    assert event["status"] == "stopped" and event["job_status"] == "STOPPED"
    assert event["reason"] == f"Ray job {sid} STOPPED: Job was intentionally stopped."
    assert event["driver_exit_code"] is None
    assert "working" in event["log_tail"]


# ---- an unreachable dashboard -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["503", "close"])
async def test_a_short_outage_is_retried_and_the_job_succeeds(ray, caplog, mode):
    trigger = make_trigger(ray, dashboard_unreachable_timeout=5)
    sid = trigger.job.submission_id
    ray.script(sid, lines=numbered(20), line_every=0.05)
    task = asyncio.create_task(first_event(trigger))
    await until(lambda: "line 3" in ray_lines(caplog))
    ray.unreachable(0.6, mode)
    event = await task

    assert event["status"] == "success"
    assert any(m.startswith("Ray dashboard unreachable") for m in messages(caplog, logging.WARNING))
    assert len(ray.tails(sid)) >= 2  # the tail dropped with the dashboard and was re-opened
    assert ray_lines(caplog) == ray.jobs[sid].output.splitlines()
    assert len(ray.submits()) == 1


async def test_a_longer_outage_fails_as_unreachable(ray):
    trigger = make_trigger(ray, dashboard_unreachable_timeout=0.5)
    sid = trigger.job.submission_id
    ray.script(sid, ends_after=math.inf)
    task = asyncio.create_task(first_event(trigger))
    await until(lambda: ray.tails(sid))
    ray.unreachable(math.inf, "503")
    down = time.time()
    event = await task

    assert event["status"] == "error"
    assert "DashboardUnreachableError" in event["reason"] and "unreachable for" in event["reason"]
    assert 0.5 <= time.time() - down < 0.5 + 2.5
    assert event["submission_id"] == sid


async def test_a_dashboard_that_never_answers_fails_at_the_startup_deadline(ray):
    ray.unreachable(math.inf, "close")
    started = time.time()
    trigger = make_trigger(
        ray, startup_deadline=started + 0.5, dashboard_unreachable_timeout=60, timings={"deferred": started}
    )
    event = await first_event(trigger)

    assert event["status"] == "failed" and event["phase"] == "startup"
    # The setting that ended the wait is named (with its value) before the last connection error.
    assert event["reason"].startswith(
        f"startup_timeout (0.5s) reached before the Ray dashboard of Ray cluster at {ray.url} answered (last attempt: "
    ), event["reason"]
    assert "raise the operator's startup_timeout" in event["reason"]
    assert 0.5 <= time.time() - started < 0.5 + 2.5
    assert {(c.method, c.path) for c in ray.calls} == {("GET", "/api/version")}
    assert len(ray.calls) >= 3  # retried meanwhile


async def test_the_execution_deadline_before_the_dashboard_answers_is_a_timeout(ray):
    ray.unreachable(math.inf, "503")
    event = await first_event(make_trigger(ray, deadline=time.time() + 0.4))

    assert event["status"] == "timeout"
    assert event["reason"] == "execution_timeout reached before the Ray dashboard answered"
    assert ray.submits() == []


# ---- deadlines, kill, submit only -----------------------------------------------------------------------


async def test_the_execution_deadline_stops_the_job(ray):
    deadline = time.time() + 0.6
    trigger = make_trigger(ray, poll_interval=30, deadline=deadline)
    sid = trigger.job.submission_id
    ray.script(sid, lines=numbered(3), ends_after=math.inf)
    event = await first_event(trigger)

    assert event["status"] == "timeout"
    assert event["reason"] == f"execution_timeout reached; Ray job {sid} stopped"
    assert event["log_tail"][-3:] == numbered(3)
    stops = ray.stops(sid)
    assert len(stops) == 1 and deadline <= stops[0].at < deadline + 0.5
    assert ray.jobs[sid].status == "STOPPED"


async def test_the_execution_deadline_holds_when_the_dashboard_hangs(ray):
    # Found by this file: the status, stop and log calls used to wait their own timeouts (10 + 30 + 30 s)
    # past the deadline; they are now bounded by the time left and a short after-deadline budget.
    deadline = time.time() + 0.6
    trigger = make_trigger(ray, deadline=deadline)
    sid = trigger.job.submission_id
    ray.script(sid, ends_after=math.inf)
    task = asyncio.create_task(first_event(trigger, timeout=0.6 + 2.5))
    await until(lambda: ray.tails(sid))
    ray.unreachable(math.inf, "hang")
    event = await task

    assert event["status"] == "timeout"


async def test_on_kill_stops_the_job(ray, caplog):
    trigger = make_trigger(ray)
    sid = trigger.job.submission_id
    ray.script(sid, ends_after=math.inf)
    task = asyncio.create_task(first_event(trigger))
    await until(lambda: ray.tails(sid))
    task.cancel()  # the triggerer cancels the trigger, then calls on_kill
    with pytest.raises(asyncio.CancelledError):
        await task
    await trigger.on_kill()

    assert len(ray.stops(sid)) == 1 and ray.jobs[sid].status == "STOPPED"
    assert f"Stopped Ray job {sid} (task killed)" in messages(caplog)


async def test_on_kill_stops_the_adopted_job_of_an_earlier_try(ray):
    key = f"manual__{uuid.uuid4().hex}"
    try_1, try_2 = identity(key, 1), identity(key, 2)
    earlier = submission_id_for(try_1)
    ray.add_job(earlier, metadata=job_metadata_for(try_1), ends_after=math.inf)
    trigger = make_trigger(ray, try_2)
    task = asyncio.create_task(first_event(trigger))
    await until(lambda: ray.tails(earlier))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await trigger.on_kill()

    assert len(ray.stops(earlier)) == 1 and ray.jobs[earlier].status == "STOPPED"
    assert ray.submits() == []


async def test_submit_only_returns_submitted_at_once(ray):
    trigger = make_trigger(ray, submit_only=True, poll_interval=30)
    sid = trigger.job.submission_id
    ray.script(sid, ends_after=math.inf)
    started = time.monotonic()
    event = await first_event(trigger)

    assert time.monotonic() - started < 1.0
    assert event["status"] == "submitted" and event["job_status"] == "PENDING"
    assert event["submission_id"] == sid
    assert len(ray.submits()) == 1 and ray.jobs[sid].status == "RUNNING"
    # One existence check before submitting, then nothing: no status polls, no log tail.
    assert len(ray.requests_to("GET", f"/api/jobs/{sid}")) == 1 and ray.tails(sid) == []
