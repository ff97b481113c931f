"""Driving a RayJobTrigger against the recorded Ray 2.60 double (:mod:`tests.support.recorded_ray`).

Outside a triggerer, Airflow 3's structlog writes a trigger's log straight to stdout, where caplog does
not see it (the triggerer routes it to the task's log). ``make_trigger`` therefore gives each trigger a
stdlib logger of the same name in LoggingMixin's ``_log`` slot: what the trigger logs is unchanged, and
caplog captures it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from airflow.triggers.base import TriggerEvent

from airflow_provider_flyray.backends.address import AddressBackend
from airflow_provider_flyray.events import RayJobEvent
from airflow_provider_flyray.jobs_api import JobSubmission
from airflow_provider_flyray.naming import TaskIdentity, job_metadata_for, submission_id_for
from airflow_provider_flyray.triggers.ray_job import RayJobTrigger
from tests.support.recorded_ray import RecordedRay

TAIL_SLEEP = 0.1  # Ray sleeps 1 s: the double's tail closes 2-4 sleeps after the job ends, like Ray's
TRIGGER_LOGGER = f"{RayJobTrigger.__module__}.{RayJobTrigger.__qualname__}"


# ---- the two places that know the shapes of the ClusterRef and of the event -------------------------


def address_cluster(url: str) -> dict[str, Any]:
    """The trigger's ``cluster`` kwarg for an existing dashboard at ``url`` (FlyteRayOperator(address=url))."""
    return AddressBackend.ref_for(url).to_dict()


def outcome(event: TriggerEvent) -> dict[str, Any]:
    """The event's payload as a dict (status, reason, submission_id, job_status, log_tail, ...), after
    checking it is a RayJobEvent's plain form."""
    payload = dict(event.payload)
    assert RayJobEvent.from_dict(payload).to_dict() == payload
    return payload


def identity(key: str | None = None, try_number: int = 1) -> TaskIdentity:
    return TaskIdentity("unit_dag", "train", key or f"manual__{uuid.uuid4().hex}", try_number=try_number)


def routed(trigger: RayJobTrigger) -> RayJobTrigger:
    trigger._log = logging.getLogger(TRIGGER_LOGGER)  # see the module docstring
    return trigger


def make_trigger(ray: RecordedRay, who: TaskIdentity | None = None, **kwargs: Any) -> RayJobTrigger:
    """The trigger FlyteRayOperator(address=ray.url) defers to, for one task instance try."""
    who = who or identity()
    submission = JobSubmission(submission_id_for(who), "python train.py", metadata=job_metadata_for(who))
    kwargs.setdefault("poll_interval", 0.2)
    return routed(
        RayJobTrigger(
            ray_conn_id=None,
            cluster=address_cluster(ray.url),
            submission=submission.to_dict(),
            owner_key=who.task_key,
            earliest_event=None,
            **kwargs,
        )
    )


def restarted(trigger: RayJobTrigger) -> RayJobTrigger:
    """What a triggerer restart runs: a new trigger from the serialised kwargs."""
    classpath, kwargs = trigger.serialize()
    assert classpath == TRIGGER_LOGGER
    return routed(RayJobTrigger(**kwargs))


async def first_event(trigger: RayJobTrigger, timeout: float = 10.0) -> dict[str, Any]:
    """What the triggerer does: take the first event, then close the generator."""
    events = trigger.run()
    try:
        async with asyncio.timeout(timeout):  # not wait_for, which may swallow a cancellation (3.11)
            return outcome(await anext(events))
    finally:
        await events.aclose()


async def until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def ray_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The job's output lines as the trigger logged them, in order."""
    return [
        r.getMessage().removeprefix("[ray] ")
        for r in caplog.records
        if r.name == TRIGGER_LOGGER and r.getMessage().startswith("[ray] ")
    ]


def messages(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == TRIGGER_LOGGER and r.levelno == level]


def numbered(count: int, prefix: str = "line") -> list[str]:
    return [f"{prefix} {i}" for i in range(count)]
