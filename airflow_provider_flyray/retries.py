"""When to retry a Kubernetes or dashboard call, and how long to wait. Pure; the transports sleep."""

from __future__ import annotations

import random
from email.utils import parsedate_to_datetime
from time import time

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
MAX_ATTEMPTS = 6
BASE_DELAY = 0.5
MAX_DELAY = 10.0


def is_retryable_status(status: int | None) -> bool:
    return status is None or status in RETRYABLE_STATUS


def retry_after_seconds(header: str | None) -> float | None:
    """Parse a Retry-After header (seconds or an HTTP date)."""
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(header).timestamp() - time())
    except (TypeError, ValueError):
        return None


def backoff_delay(attempt: int, retry_after: str | None = None) -> float:
    """Delay before retry number ``attempt`` (1-based): Retry-After if given, else jittered exponential."""
    hinted = retry_after_seconds(retry_after)
    if hinted is not None:
        return min(hinted, MAX_DELAY * 3)
    return min(MAX_DELAY, BASE_DELAY * (2 ** (attempt - 1))) * (0.5 + random.random() / 2)
