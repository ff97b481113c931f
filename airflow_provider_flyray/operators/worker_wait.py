"""``deferrable=False``: the trigger's wait run on the worker, until its first event."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowTaskTimeout

from airflow_provider_flyray.triggers.ray_job import RayJobTrigger


async def first_event(trigger: RayJobTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return dict(event.payload)
    raise AirflowException("RayJobTrigger ended without an event")


async def timeout_event(trigger: RayJobTrigger) -> dict[str, Any]:
    async with trigger.session() as session:
        return (await trigger.timed_out(session)).to_dict()


def wait_on_worker(trigger: RayJobTrigger, log: logging.Logger | Any) -> dict[str, Any]:
    """The trigger's wait, here. Its deadline ends it before Airflow's timeout alarm (see
    ``arguments.worker_deadline``); should the alarm still interrupt it, the job is stopped and reported
    the same way (job stopped, its last lines), not as Airflow's bare "Timeout, PID: ..."."""
    try:
        return asyncio.run(first_event(trigger))
    except AirflowTaskTimeout:
        log.warning("execution_timeout interrupted the wait: stopping the Ray job")
        return asyncio.run(timeout_event(trigger))
