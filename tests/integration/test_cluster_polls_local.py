"""Many RayJobTriggers on one real local Ray head, in one event loop: one list request per poll interval
serves all their status checks; a job alone on its cluster keeps its own GET. The requests are counted
by a proxy in front of the head's dashboard (tests/support/cluster_polls.py): what reached it in the run.
benchmarks/cluster_polls.py has the figures for 1, 10 and 50 jobs."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from airflow_provider_flyray.cluster import ClusterRef
from airflow_provider_flyray.triggers.cluster_statuses import FRESH_SHARE
from tests.infra.kube.api_proxy import ApiProxy
from tests.support.cluster_polls import counting_proxy, run_counted

pytestmark = pytest.mark.ray

POLL = 1.0


@pytest.fixture(scope="module")
def proxy(local_head: ClusterRef) -> Iterator[ApiProxy]:
    assert local_head.address is not None
    proxy = counting_proxy(local_head.address)
    try:
        yield proxy
    finally:
        proxy.stop()


def test_jobs_on_one_cluster_share_one_status_request_per_poll(proxy):
    count = 8
    result = run_counted(proxy, count, seconds=10, poll_interval=POLL)

    finished = set()
    for event in result.events:
        assert event["status"] == "success" and event["job_status"] == "SUCCEEDED", event
        (line,) = [line for line in event["log_tail"] if line.startswith("finished-")]
        finished.add(line)
    assert finished == {f"finished-{n}" for n in range(count)}  # each job's own last line
    # All jobs were waiting together for a while (the machine is shared: the jobs start unevenly).
    assert result.window_seconds >= 3 * POLL, result.to_dict()
    # One list per poll interval (a little more: a timer check takes a list up to FRESH_SHARE of a poll
    # old), not one request per job per poll; the jobs' own GETs are only what the list could not answer.
    assert result.lists <= math.ceil(result.window_seconds / (FRESH_SHARE * POLL)) + 1, result.to_dict()
    assert result.lists >= math.floor(result.window_seconds / POLL) - 1, result.to_dict()
    assert result.job_gets <= 1, result.to_dict()
    assert result.per_job_per_poll < 2 / count, result.to_dict()


def test_a_job_alone_on_its_cluster_keeps_its_own_get(proxy):
    result = run_counted(proxy, 1, seconds=4, poll_interval=POLL)

    (event,) = result.events
    assert event["status"] == "success" and "finished-0" in event["log_tail"]
    assert result.whole_run.get("list", 0) == 0, result.whole_run
    assert result.job_gets >= math.floor(result.window_seconds / POLL) - 1, result.to_dict()
