"""Fixtures of the trigger tests against the recorded Ray 2.60 double."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from tests.support.recorded_ray import RecordedRay
from tests.support.trigger_double import TAIL_SLEEP, TRIGGER_LOGGER


@pytest.fixture
async def ray() -> AsyncIterator[RecordedRay]:
    async with RecordedRay(tail_sleep=TAIL_SLEEP) as server:
        yield server


@pytest.fixture(autouse=True)
def _capture_trigger_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=TRIGGER_LOGGER)
