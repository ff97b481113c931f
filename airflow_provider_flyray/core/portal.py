"""Run the async core from synchronous code: one event loop on a daemon thread, shared by the process.

``run_sync(coro)`` works whether or not the calling thread already runs an event loop (a sync
callback inside a trigger, a notebook), because the coroutine never runs on the caller's loop.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_pid: int | None = None


def _portal_loop() -> asyncio.AbstractEventLoop:
    global _loop, _pid
    with _lock:
        # A forked child (Airflow forks task processes) inherits the loop object but not its thread.
        if _loop is None or _loop.is_closed() or _pid != os.getpid():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="flyray-portal", daemon=True)
            thread.start()
            _loop, _pid = loop, os.getpid()
        return _loop


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on the portal loop and wait for its result (its exception is re-raised here)."""
    future = asyncio.run_coroutine_threadsafe(coroutine, _portal_loop())
    try:
        return future.result()
    except BaseException:
        # Interrupted here (a signal handler raised, e.g. AirflowTaskTimeout): stop the coroutine too.
        future.cancel()
        raise
