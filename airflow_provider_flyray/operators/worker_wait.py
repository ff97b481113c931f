"""``deferrable=False``: the trigger's wait run on the worker, until its first event."""

from __future__ import annotations

from typing import Any

from airflow.providers.common.compat.sdk import AirflowException

from airflow_provider_flyray.triggers.ray_job import RayJobTrigger


async def first_event(trigger: RayJobTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return dict(event.payload)
    raise AirflowException("RayJobTrigger ended without an event")


async def timeout_event(trigger: RayJobTrigger) -> dict[str, Any]:
    async with trigger.session() as session:
        return (await trigger.timed_out(session)).to_dict()
