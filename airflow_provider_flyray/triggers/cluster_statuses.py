"""One status poll per cluster for every job the triggerer follows there.

Many jobs on one shared cluster would otherwise cost one ``GET /api/jobs/{id}`` per job per poll interval.
The triggers of one triggerer process share an event loop, so this module keeps, per loop and per
dashboard endpoint (URL and credentials: a token that may not see a job must not be served another
token's answer), the set of jobs waiting there and the last ``GET /api/jobs/`` answer. A job's normal
(slow) check takes a list no older than about its poll interval, awaits the one in flight, or sends one;
its next check is then aligned to that list's time plus the poll interval, so the waiting jobs all share
the next list too. What the list cannot answer goes to the job's own ``GET``: a single job on the
cluster (its answer is smaller), a job the list lacks (just submitted; or gone, which only the direct
``GET`` may decide), a list that failed or is too slow (the direct ``GET`` then fails or succeeds with
exactly the semantics a trigger has without this module).

Nothing is held for a job after its wait ends or is cancelled, nor for a cluster with no job waiting.
The endpoint's credentials are only part of a digest key: never stored, logged or shown here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import sys
import time
import weakref
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_flyray.core.dashboard import MIN_TIMEOUT, STATUS_TIMEOUT, DashboardClient
from airflow_provider_flyray.errors import RayJobsApiError
from airflow_provider_flyray.jobs_api import DashboardEndpoint

log = logging.getLogger(__name__)

# With one job waiting, its own GET is smaller than the cluster's whole list.
SHARED_FROM = 2
# Ray's list answers every job the cluster ever had (one GCS read each, in the dashboard's one process):
# once it holds more than this many jobs per waiting job, the waiting jobs' own GETs cost Ray less.
LIST_ENTRIES_PER_JOB = 50
# A timer check takes a list up to this share of its poll interval old. Not the whole interval: the
# aligned timers of a cluster fire together, and one firing a hair early would otherwise take the
# list of the last round and be due again at once.
FRESH_SHARE = 0.9


# ---- the decisions (pure) ---------------------------------------------------------------------------


def use_list(waiting: int, last_list_size: int | None) -> bool:
    """Whether a slow check of one of ``waiting`` jobs should be served from the cluster's list."""
    if waiting < SHARED_FROM:
        return False
    return last_list_size is None or last_list_size <= LIST_ENTRIES_PER_JOB * waiting


def oldest_usable(now: float, poll_interval: float) -> float:
    """The earliest start of a list a timer check at ``now`` may be answered from."""
    return now - FRESH_SHARE * poll_interval


def is_usable(list_started: float, oldest: float) -> bool:
    """A list started at ``list_started`` holds every status as it was then, or newer."""
    return list_started >= oldest


def next_check_in(anchor: float, poll_interval: float, now: float) -> float:
    """Seconds from ``now`` to the job's next check, served at ``anchor`` (its list's start): the first
    ``anchor + k * poll_interval`` after ``now``. Every job served by one list gets the same instant (they
    share the next list), and none waits more than a poll interval past the status it saw."""
    if poll_interval <= 0:
        return 0.0
    rounds = max(1, math.floor((now - anchor) / poll_interval) + 1)
    return max(0.0, anchor + rounds * poll_interval - now)


def endpoint_key(endpoint: DashboardEndpoint) -> str:
    """The cluster's key: a digest of where and as whom, so the cache never holds the credentials."""
    parts = [
        endpoint.base_url.rstrip("/"),
        sorted(endpoint.headers.items()),
        endpoint.verify_tls,
        endpoint.ca_file,
        endpoint.client_cert_file,
        endpoint.client_key_file,
    ]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


# ---- the shared state of one loop ---------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    started: float  # monotonic: when the list was sent; every status in it is at least this new
    jobs: dict[str, dict[str, Any]] | None  # by submission id; None: the list failed


@dataclass
class ClusterStatuses:
    """The jobs waiting on one cluster (endpoint) and its latest list."""

    key: str
    url: str
    # Waits by submission id (a count: a restarted trigger may briefly follow the job twice).
    waiting: Counter[str] = field(default_factory=Counter)
    snapshot: Snapshot | None = None
    last_list_size: int | None = None
    inflight: asyncio.Task[Snapshot] | None = None
    inflight_started: float = 0.0

    async def snapshot_since(
        self, dashboard: DashboardClient, endpoint: DashboardEndpoint, oldest: float, timeout: float
    ) -> Snapshot | None:
        """A list started at ``oldest`` or later (the last one, the one in flight, or a new one); None
        when none came within ``timeout``."""
        if self.snapshot is not None and is_usable(self.snapshot.started, oldest):
            return self.snapshot
        if self.inflight is None or not is_usable(self.inflight_started, oldest):
            self.inflight_started = time.monotonic()
            self.inflight = asyncio.create_task(self._list(dashboard, endpoint, self.inflight_started))
        # Shielded: the job that sent the list may end (or be cancelled) while others await it.
        # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the result when the awaited
        # future is done in the ticks a cancellation arrives, so a trigger cancelled then (task marked
        # failed, triggerer reassigning it) would swallow its cancellation and poll on forever.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                return await asyncio.shield(self.inflight)
        return None

    async def _list(self, dashboard: DashboardClient, endpoint: DashboardEndpoint, started: float) -> Snapshot:
        try:
            # Its own budget, not one job's deadline: every waiting job bounds its own wait for it.
            listed = await dashboard.list_jobs(endpoint, timeout=STATUS_TIMEOUT)
        except Exception as exc:  # any failure: each job asks for itself, which decides what it means
            log.debug("listing the jobs of %s failed (%s): per-job checks", self.url, type(exc).__name__)
            if isinstance(exc, RayJobsApiError) and exc.status is not None and 400 <= exc.status < 500:
                # Refused (a proxy's rules, say) rather than down: not asked again while jobs wait here.
                self.last_list_size = sys.maxsize
            snapshot = Snapshot(started, None)
        else:
            self.last_list_size = len(listed)
            # Every job listed, not only those waiting now: a job whose wait starts during the list is
            # in it. Bounded: a list is only used while it is at most LIST_ENTRIES_PER_JOB per waiting job.
            jobs = {
                str(info["submission_id"]): info
                for info in listed
                if isinstance(info, dict) and info.get("submission_id")
            }
            snapshot = Snapshot(started, jobs)
        finally:
            if self.inflight_started == started:
                self.inflight = None
        if self.snapshot is None or snapshot.started >= self.snapshot.started:
            self.snapshot = snapshot
        return snapshot


# Per event loop: a triggerer runs all its triggers in one loop; tests run many loops one after another.
_LOOPS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, ClusterStatuses]] = weakref.WeakKeyDictionary()


def clusters() -> dict[str, ClusterStatuses]:
    """The clusters with waiting jobs in the running loop (by key)."""
    return _LOOPS.setdefault(asyncio.get_running_loop(), {})


@dataclass
class WaitingJob:
    """One job's place in its cluster's shared checks (see :func:`waiting`)."""

    cluster: ClusterStatuses
    endpoint: DashboardEndpoint
    submission_id: str

    async def status(
        self, dashboard: DashboardClient, timeout: float, oldest: float
    ) -> tuple[dict[str, Any] | None, float | None]:
        """The job's info (None: Ray does not know it) and, when a list served it, that list's start
        (the anchor of the next check). Errors are those of the job's own ``GET``."""
        cluster = self.cluster
        if use_list(len(cluster.waiting), cluster.last_list_size):
            asked = time.monotonic()
            snapshot = await cluster.snapshot_since(dashboard, self.endpoint, oldest, timeout)
            if snapshot is not None and snapshot.jobs is not None and self.submission_id in snapshot.jobs:
                return snapshot.jobs[self.submission_id], snapshot.started
            # The rest of the budget, so a hung list does not hold the job's deadline back.
            timeout = max(MIN_TIMEOUT, timeout - (time.monotonic() - asked))
        return await dashboard.get_job(self.endpoint, self.submission_id, timeout=timeout), None


@contextlib.contextmanager
def waiting(endpoint: DashboardEndpoint, submission_id: str) -> Iterator[WaitingJob]:
    """The job counts as waiting on its cluster inside the block; its entry (and the cluster's, when it
    was the last) is gone when the block ends, however it ends."""
    key = endpoint_key(endpoint)
    registry = clusters()
    cluster = registry.get(key)
    if cluster is None:
        cluster = registry[key] = ClusterStatuses(key, endpoint.base_url)
    cluster.waiting[submission_id] += 1
    try:
        yield WaitingJob(cluster, endpoint, submission_id)
    finally:
        cluster.waiting[submission_id] -= 1
        if cluster.waiting[submission_id] <= 0:
            del cluster.waiting[submission_id]
        if not cluster.waiting and registry.get(key) is cluster:
            del registry[key]
            if cluster.inflight is not None:
                cluster.inflight.cancel()
