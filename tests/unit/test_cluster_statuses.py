"""The shared status checks of the jobs waiting on one cluster (triggers/cluster_statuses.py).

The decisions are pure functions, tested as such; the sharing itself is tested with real triggers (their
real HTTP client) against the recorded Ray 2.60 double (tests/support/recorded_ray.py), which logs every
request it receives: the counts below are requests that reached the dashboard.
"""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from airflow_provider_flyray.jobs_api import DashboardEndpoint
from airflow_provider_flyray.triggers import cluster_statuses
from airflow_provider_flyray.triggers.cluster_statuses import (
    FRESH_SHARE,
    LIST_ENTRIES_PER_JOB,
    endpoint_key,
    is_usable,
    next_check_in,
    oldest_usable,
    use_list,
)
from tests.support.recorded_ray import RecordedRay
from tests.support.trigger_double import first_event, make_trigger, until

# ---- the decisions ------------------------------------------------------------------------------------


def test_one_waiting_job_asks_for_itself_two_or_more_share_the_list():
    assert not use_list(0, None) and not use_list(1, None) and not use_list(1, 1)
    assert use_list(2, None) and use_list(50, 3)


def test_a_list_much_longer_than_the_waiting_jobs_is_not_worth_it():
    assert use_list(2, 2 * LIST_ENTRIES_PER_JOB)
    assert not use_list(2, 2 * LIST_ENTRIES_PER_JOB + 1)
    # More jobs waiting make the same history worth listing again.
    assert use_list(3, 2 * LIST_ENTRIES_PER_JOB + 1)


def test_a_timer_check_takes_a_list_up_to_most_of_its_poll_interval_old():
    now, poll = 100.0, 5.0
    oldest = oldest_usable(now, poll)
    assert oldest == pytest.approx(now - FRESH_SHARE * poll)
    assert is_usable(now - 0.1, oldest) and is_usable(oldest, oldest)
    # The last round's list, for a timer that fired a hair before the next round: not usable.
    assert not is_usable(now - poll + 0.001, oldest)


def test_the_next_check_is_one_poll_after_the_list_that_served_it():
    assert next_check_in(anchor=10.0, poll_interval=5.0, now=10.02) == pytest.approx(4.98)
    assert next_check_in(anchor=10.0, poll_interval=5.0, now=13.0) == pytest.approx(2.0)
    # Never more than a poll interval away, never in the past: a list that took long skips a round.
    assert next_check_in(anchor=10.0, poll_interval=5.0, now=15.0) == pytest.approx(5.0)
    assert next_check_in(anchor=10.0, poll_interval=5.0, now=16.5) == pytest.approx(3.5)
    assert next_check_in(anchor=10.0, poll_interval=0.0, now=16.5) == 0.0


def test_jobs_served_by_one_list_are_due_at_the_same_instant():
    anchor, poll = 50.0, 2.0
    dues = {round(now + next_check_in(anchor, poll, now), 9) for now in (50.001, 50.3, 51.2, 51.999)}
    assert dues == {52.0}


def test_the_key_tells_clusters_and_credentials_apart_without_holding_them():
    plain = DashboardEndpoint("http://head:8265")
    token = DashboardEndpoint("http://head:8265", headers={"Authorization": "Bearer s3cret"})
    other = DashboardEndpoint("http://head:8265", headers={"Authorization": "Bearer other"})
    assert endpoint_key(plain) == endpoint_key(DashboardEndpoint("http://head:8265/"))
    assert len({endpoint_key(plain), endpoint_key(token), endpoint_key(other)}) == 3
    assert "s3cret" not in endpoint_key(token)


# ---- the sharing, against the recorded dashboard -------------------------------------------------------


def job_gets(ray: RecordedRay) -> list[str]:
    return [
        c.path for c in ray.calls if c.method == "GET" and c.path.startswith("/api/jobs/") and c.path != "/api/jobs/"
    ]


async def test_jobs_waiting_on_one_cluster_share_one_list_per_poll(ray):
    poll, ends, count = 0.2, 2.0, 8
    triggers = [make_trigger(ray, poll_interval=poll, get_logs=False) for _ in range(count)]
    for trigger in triggers:
        ray.script(trigger.job.submission_id, ends_after=ends)
    started = time.monotonic()
    events = await asyncio.gather(*(first_event(t) for t in triggers))
    took = time.monotonic() - started

    assert [e["status"] for e in events] == ["success"] * count
    lists = len(ray.requests_to("GET", "/api/jobs/"))
    # About one list per poll interval for all of them (not one request per job per poll) ...
    assert lists <= math.ceil(took / (FRESH_SHARE * poll)) + 2, (lists, took)
    # ... and the jobs' own GETs: the submission's check, the first check (the list predates the job)
    # and, at most, a few of them once a second job joined.
    assert len(job_gets(ray)) <= 3 * count, job_gets(ray)
    assert cluster_statuses.clusters() == {}


async def test_each_job_still_sees_its_end_within_a_poll_interval(ray):
    poll = 0.5
    triggers = [make_trigger(ray, poll_interval=poll, get_logs=False) for _ in range(4)]
    for number, trigger in enumerate(triggers):
        ray.script(trigger.job.submission_id, ends_after=1.0 + 0.3 * number)
    events = await asyncio.gather(*(first_event(t) for t in triggers))
    for event in events:
        # Ray's end_time (ms) to the event: a poll interval, plus the request and a loaded machine.
        assert event["timings"]["event"] - event["end_time"] / 1000 < poll + 0.35, event


async def test_one_job_on_a_cluster_asks_for_itself(ray):
    trigger = make_trigger(ray, poll_interval=0.1, get_logs=False)
    ray.script(trigger.job.submission_id, ends_after=1.0)
    event = await first_event(trigger)

    assert event["status"] == "success"
    assert ray.requests_to("GET", "/api/jobs/") == []
    # One a poll interval (at least MIN_STATUS_GAP apart); the final log read is not a status check (it
    # goes to the state API's raw driver log now, not to GET /api/jobs/{id}/logs).
    assert len([path for path in job_gets(ray) if not path.endswith("/logs")]) >= 4


async def test_a_failing_list_falls_back_to_each_jobs_own_checks(ray):
    """While the dashboard answers 503, the list fails and every job asks for itself, as without sharing:
    a short outage is retried and all succeed."""
    triggers = [make_trigger(ray, poll_interval=0.2, get_logs=False, dashboard_unreachable_timeout=5) for _ in range(3)]
    for trigger in triggers:
        ray.script(trigger.job.submission_id, ends_after=2.0)
    tasks = [asyncio.create_task(first_event(t)) for t in triggers]
    await until(lambda: ray.requests_to("GET", "/api/jobs/"), timeout=20)
    ray.unreachable(0.6, "503")
    events = await asyncio.gather(*tasks)
    assert [e["status"] for e in events] == ["success"] * 3


async def test_a_longer_outage_fails_every_shared_job_as_unreachable(ray):
    triggers = [
        make_trigger(ray, poll_interval=0.2, get_logs=False, dashboard_unreachable_timeout=0.5) for _ in range(3)
    ]
    for trigger in triggers:
        ray.script(trigger.job.submission_id, ends_after=math.inf)
    tasks = [asyncio.create_task(first_event(t)) for t in triggers]
    await until(lambda: ray.requests_to("GET", "/api/jobs/"), timeout=20)
    ray.unreachable(math.inf, "503")
    events = await asyncio.gather(*tasks)
    for event in events:
        assert event["status"] == "error" and "DashboardUnreachableError" in event["reason"], event
    assert cluster_statuses.clusters() == {}


async def test_a_job_missing_from_the_list_is_decided_by_its_own_get(ray):
    """A job deleted from Ray while others wait: the list lacks it, its own GET answers 404."""
    triggers = [make_trigger(ray, poll_interval=0.2, get_logs=False) for _ in range(3)]
    for trigger in triggers:
        ray.script(trigger.job.submission_id, ends_after=math.inf)
    tasks = [asyncio.create_task(first_event(t)) for t in triggers]
    gone = triggers[0].job.submission_id
    await until(lambda: ray.requests_to("GET", "/api/jobs/") and gone in ray.jobs, timeout=20)
    ray.forget(gone)
    event = await tasks[0]
    assert event["status"] == "error" and f"Ray job {gone} disappeared" in event["reason"], event
    assert ray.requests_to("GET", f"/api/jobs/{gone}")
    for number, trigger in enumerate(triggers[1:], 1):
        ray.end(trigger.job.submission_id)
        assert (await tasks[number])["status"] == "success"


async def test_a_cancelled_wait_leaves_nothing_behind(ray):
    triggers = [make_trigger(ray, poll_interval=0.2, get_logs=False) for _ in range(3)]
    for trigger in triggers:
        ray.script(trigger.job.submission_id, ends_after=math.inf)
    tasks = [asyncio.create_task(first_event(t)) for t in triggers]
    await until(lambda: len(ray.requests_to("GET", "/api/jobs/")) >= 2, timeout=20)
    (cluster,) = cluster_statuses.clusters().values()
    assert len(cluster.waiting) == 3
    tasks[0].cancel()
    await until(lambda: len(cluster.waiting) == 2, timeout=20)
    for task in tasks[1:]:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert cluster_statuses.clusters() == {}


async def test_a_cancellation_that_meets_the_shared_list_is_not_swallowed():
    """A wait cancelled in the few loop ticks after the list it awaits arrives must still end: Python
    3.11's ``asyncio.wait_for`` returned the list instead, and the cancelled trigger polled on forever
    (the cause of a CI failure of test_a_cancelled_wait_leaves_nothing_behind)."""
    cancelled_in_time = 0
    for ticks in range(8):
        cluster = cluster_statuses.ClusterStatuses("key", "http://head:8265")
        arrives: asyncio.Future[cluster_statuses.Snapshot] = asyncio.get_running_loop().create_future()
        cluster.inflight = asyncio.ensure_future(arrives)
        cluster.inflight_started = math.inf  # usable by any check
        waiter = asyncio.create_task(cluster.snapshot_since(None, None, 0.0, 5.0))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        arrives.set_result(cluster_statuses.Snapshot(1.0, {}))
        for _ in range(ticks):
            await asyncio.sleep(0)
        if waiter.done():  # the list was delivered before the cancellation: nothing to swallow
            continue
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        cancelled_in_time += 1
    assert cancelled_in_time >= 2  # the window was hit, not skipped


def test_the_package_never_uses_asyncio_wait_for():
    """See the test above: every timeout in the async core is ``asyncio.timeout``."""
    from pathlib import Path

    import airflow_provider_flyray

    package = Path(airflow_provider_flyray.__file__).parent
    users = [str(p.relative_to(package)) for p in package.rglob("*.py") if "wait_for(" in p.read_text()]
    assert users == []
