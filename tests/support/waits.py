"""Waiting for something on this host to answer: a Ray dashboard, or any URL."""

from __future__ import annotations

import time
import urllib.request


def wait_for_dashboard(url: str, timeout: float = 60) -> None:
    """Until the Ray dashboard at ``url`` answers ``/api/version`` (the last error once ``timeout`` is up)."""
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(url + "/api/version", timeout=2).read()
            return
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def read_when_up(url: str, timeout: float = 60) -> str:
    """The body of ``url`` once it answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return urllib.request.urlopen(url, timeout=10).read().decode()
        except OSError:
            assert time.monotonic() < deadline, f"{url} never answered"
            time.sleep(0.5)
