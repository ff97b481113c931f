"""Who holds a pool's cluster, and when it may go: Lease objects and the idle verdict. Pure.

Each task using a pool holds one ``coordination.k8s.io/v1`` Lease (named by the pool's cluster and the
task instance, so a retry renews its earlier try's Lease), renewed by its trigger while the job runs. A
Lease is live until ``renewTime + leaseDurationSeconds``; a holder that was killed stops holding when
that passes. :func:`pool_verdict` is the one rule that deletes a pool's cluster: no live Lease, and
idle (since it was made, last acquired or released, or its last Lease ran out) for its ``idle_ttl``.

The sweep that applies the verdict and the acquire that takes a Lease cannot both win: an acquirer
writes its Lease *before* it touches the cluster (a new ``last-used`` annotation changes the cluster's
resourceVersion), and the sweep deletes the cluster with the resourceVersion it judged as a
precondition. Either the sweep saw the Lease, or its delete fails, or the acquirer finds the cluster
gone and creates it again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from airflow_provider_flyray.naming import MANAGED_BY_LABEL, MANAGED_BY_VALUE, OWNER_ANNOTATION

POOL_LABEL = "flyray.airflow.apache.org/pool"
POOL_SPEC_ANNOTATION = "flyray.airflow.apache.org/pool-spec"
POOL_FINGERPRINT_ANNOTATION = "flyray.airflow.apache.org/pool-fingerprint"
IDLE_TTL_ANNOTATION = "flyray.airflow.apache.org/idle-ttl-seconds"
LAST_USED_ANNOTATION = "flyray.airflow.apache.org/last-used"
# Clocks of the machines writing and judging a Lease may differ this much.
CLOCK_SKEW = 5.0


def micro_time(epoch: float) -> str:
    """Kubernetes' MicroTime (RFC 3339 with microseconds, UTC)."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def epoch_of(value: Any) -> float | None:
    """A Kubernetes timestamp (string or datetime) in epoch seconds; None when absent or unreadable."""
    if isinstance(value, datetime):
        return value.timestamp() if value.tzinfo else value.replace(tzinfo=UTC).timestamp()
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.timestamp() if parsed.tzinfo else parsed.replace(tzinfo=UTC).timestamp()


def lease_name(cluster_name: str, holder_key: str) -> str:
    return f"{cluster_name}-{hashlib.sha256(holder_key.encode()).hexdigest()[:10]}"


def lease_manifest(
    *, cluster_name: str, namespace: str, holder_key: str, lease_seconds: int, now: float
) -> dict[str, Any]:
    """A holder's Lease on a pool's cluster, freshly renewed at ``now``."""
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": lease_name(cluster_name, holder_key),
            "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE, POOL_LABEL: cluster_name},
            "annotations": {OWNER_ANNOTATION: holder_key},
        },
        "spec": {
            "holderIdentity": holder_key,
            "leaseDurationSeconds": int(lease_seconds),
            "acquireTime": micro_time(now),
            "renewTime": micro_time(now),
        },
    }


def lease_end(lease: Mapping[str, Any]) -> float | None:
    """When the Lease stops holding (epoch seconds), None for a Lease that never held."""
    spec = lease.get("spec") or {}
    renewed = epoch_of(spec.get("renewTime") or spec.get("renew_time"))
    duration = spec.get("leaseDurationSeconds", spec.get("lease_duration_seconds"))
    if renewed is None or not isinstance(duration, int | float):
        return None
    return renewed + float(duration)


def is_live(lease: Mapping[str, Any], now: float) -> bool:
    end = lease_end(lease)
    return end is not None and now < end + CLOCK_SKEW and not (lease.get("metadata") or {}).get("deletionTimestamp")


def holder_of(lease: Mapping[str, Any]) -> str:
    spec = lease.get("spec") or {}
    return str(spec.get("holderIdentity") or spec.get("holder_identity") or "")


@dataclass(frozen=True)
class PoolVerdict:
    delete: bool
    reason: str
    live_holders: tuple[str, ...] = ()


def idle_ttl_of(cluster: Mapping[str, Any]) -> float | None:
    raw = ((cluster.get("metadata") or {}).get("annotations") or {}).get(IDLE_TTL_ANNOTATION)
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def idle_since(cluster: Mapping[str, Any], leases: Iterable[Mapping[str, Any]]) -> float | None:
    """The last moment anything used the cluster: made, acquired, released, or a Lease's end."""
    meta = cluster.get("metadata") or {}
    moments = [
        epoch_of(meta.get("creationTimestamp")),
        epoch_of((meta.get("annotations") or {}).get(LAST_USED_ANNOTATION)),
        *(lease_end(lease) for lease in leases),
    ]
    known = [m for m in moments if m is not None]
    return max(known) if known else None


def pool_verdict(cluster: Mapping[str, Any], leases: Iterable[Mapping[str, Any]], now: float) -> PoolVerdict:
    """Whether the sweep deletes this pool cluster now (``leases``: the Leases naming it)."""
    leases = list(leases)
    if (cluster.get("metadata") or {}).get("deletionTimestamp"):
        return PoolVerdict(False, "already being deleted")
    live = tuple(sorted(holder_of(lease) for lease in leases if is_live(lease, now)))
    if live:
        return PoolVerdict(False, f"held by {len(live)} task(s)", live)
    ttl = idle_ttl_of(cluster)
    if ttl is None:
        return PoolVerdict(False, f"has no readable {IDLE_TTL_ANNOTATION} annotation; delete it by hand")
    since = idle_since(cluster, leases)
    idle = 0.0 if since is None else max(0.0, now - since)
    if since is not None and idle >= ttl:
        return PoolVerdict(True, f"idle for {idle:.0f}s with no live lease (idle_ttl {ttl:.0f}s)")
    return PoolVerdict(False, f"idle for {idle:.0f}s of its idle_ttl {ttl:.0f}s")


def stale_leases(leases: Iterable[Mapping[str, Any]], now: float) -> list[str]:
    """The names of Leases that no longer hold anything (the sweep removes them)."""
    return [str((lease.get("metadata") or {}).get("name")) for lease in leases if not is_live(lease, now)]
