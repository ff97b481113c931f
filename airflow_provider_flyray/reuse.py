"""Pools: clusters shared by the tasks whose cluster config matches, across tasks and DAG runs. Pure.

``reuse=ReusePolicy(idle_ttl=..., scope="dag_run" | "global", key=None)`` on the operator or the
decorator puts the task's job on its pool's cluster. The pool is named by its key (by default a hash
of the cluster spec the config renders to), so tasks with the same config share one RayCluster and a
different config gets its own. An explicit ``key`` with a different config than the pool's cluster is
refused, naming the first fields that differ, so a job never runs on a cluster it did not ask for.

The pool owns the cluster, not a task: each task holds a Lease while its job runs
(:mod:`airflow_provider_flyray.pool_leases`) and the cluster is deleted once no Lease has been live for
``idle_ttl`` seconds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from airflow_provider_flyray.config import RayJobConfig
from airflow_provider_flyray.dag_run_owner import SCOPE_LABEL
from airflow_provider_flyray.errors import ConfigError
from airflow_provider_flyray.manifest import build_raycluster_manifest
from airflow_provider_flyray.naming import (
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    MAX_CLUSTER_NAME,
    dns_slug,
    is_valid_cluster_name,
)

Scope = Literal["dag_run", "global"]
SCOPES: tuple[str, ...] = ("dag_run", "global")
# A holder renews its Lease every third of this; a holder that died stops holding after it.
DEFAULT_LEASE_SECONDS = 60
MIN_LEASE_SECONDS = 5
POOL_KEY_PREFIX = "pool"
POOL_NAME_PREFIX = "flyray-pool"
MAX_KEY_LENGTH = 200
# Every pool cluster carries these (a pool's cluster is found by its name; the sweep lists them all).
POOL_LABELS = {MANAGED_BY_LABEL: MANAGED_BY_VALUE, SCOPE_LABEL: "pool"}


@dataclass(frozen=True)
class ReusePolicy:
    """How a task shares its cluster (Flyte 2's ``ReusePolicy``, with leases).

    :param idle_ttl: seconds (or a timedelta) the cluster stays after its last holder let go; 0 deletes
        it when the last job ends.
    :param scope: ``"dag_run"``: the tasks of one DAG run share it; ``"global"``: every DAG run does.
    :param key: the pool's name; default: a hash of the cluster config (same config, same pool).
    :param lease_seconds: how long a holder's Lease lasts without renewal (a killed holder stops
        holding the cluster after this).
    """

    idle_ttl: float | timedelta = 600.0
    scope: Scope = "dag_run"
    key: str | None = None
    lease_seconds: int = DEFAULT_LEASE_SECONDS

    def __post_init__(self) -> None:
        ttl = self.idle_ttl.total_seconds() if isinstance(self.idle_ttl, timedelta) else self.idle_ttl
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl < 0:
            raise ConfigError("reuse.idle_ttl", f"expected seconds >= 0 or a timedelta, got {self.idle_ttl!r}")
        object.__setattr__(self, "idle_ttl", float(ttl))
        if self.scope not in SCOPES:
            raise ConfigError("reuse.scope", f"expected one of {list(SCOPES)}, got {self.scope!r}")
        if self.key is not None and (
            not isinstance(self.key, str) or not self.key.strip() or len(self.key) > MAX_KEY_LENGTH
        ):
            raise ConfigError(
                "reuse.key", f"expected a non-empty string of at most {MAX_KEY_LENGTH} characters, got {self.key!r}"
            )
        lease = self.lease_seconds
        if isinstance(lease, bool) or not isinstance(lease, int) or lease < MIN_LEASE_SECONDS:
            raise ConfigError("reuse.lease_seconds", f"expected whole seconds >= {MIN_LEASE_SECONDS}, got {lease!r}")

    @property
    def idle_seconds(self) -> float:
        assert isinstance(self.idle_ttl, float)
        return self.idle_ttl


def reuse_policy_from(value: Any) -> ReusePolicy | None:
    """``reuse=``: a ReusePolicy, a dict of its fields, or None."""
    if value is None or isinstance(value, ReusePolicy):
        return value
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"idle_ttl", "scope", "key", "lease_seconds"})
        if unknown:
            raise ConfigError("reuse", f"unknown fields {unknown}; known: idle_ttl, scope, key, lease_seconds")
        return ReusePolicy(**dict(value))
    raise ConfigError("reuse", f"expected a ReusePolicy or a dict of its fields, got {type(value).__name__}")


# ---- the cluster spec a pool is made of ------------------------------------------------------------------


def pool_spec(config: RayJobConfig) -> dict[str, Any]:
    """The RayCluster spec ``config`` renders to, without anything that names a task or a pool."""
    return build_raycluster_manifest(config, name="pool", namespace="pool", labels={})["spec"]


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def spec_fingerprint(spec: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()[:16]


def spec_differences(ours: Any, theirs: Any, path: str = "spec", limit: int = 3) -> list[str]:
    """The first ``limit`` places where two specs differ, as ``path: ours != theirs``."""
    if isinstance(ours, Mapping) and isinstance(theirs, Mapping):
        found: list[str] = []
        for key in sorted(set(ours) | set(theirs)):
            found += spec_differences(ours.get(key), theirs.get(key), f"{path}.{key}", limit - len(found))
            if len(found) >= limit:
                break
        return found
    if isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        found = []
        for index, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            found += spec_differences(a, b, f"{path}[{index}]", limit - len(found))
            if len(found) >= limit:
                break
        return found
    if ours == theirs or limit <= 0:
        return []
    return [f"{path}: {canonical_json(ours)[:80]} here, {canonical_json(theirs)[:80]} on the pool's cluster"]


# ---- the pool as an owner --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolOwner:
    """A pool: owns its cluster (the name and the owner annotation come from the key)."""

    scope: str
    pool_key: str
    fingerprint: str
    dag_id: str | None = None
    run_id: str | None = None

    @classmethod
    def of(cls, policy: ReusePolicy, config: RayJobConfig, dag_id: str, run_id: str) -> PoolOwner:
        fingerprint = spec_fingerprint(pool_spec(config))
        pool_key = policy.key or f"config-{fingerprint}"
        if policy.scope == "dag_run":
            return cls(policy.scope, pool_key, fingerprint, dag_id, run_id)
        return cls(policy.scope, pool_key, fingerprint)

    @property
    def key(self) -> str:
        if self.scope == "dag_run":
            return f"{POOL_KEY_PREFIX}|dag_run|{self.dag_id}|{self.run_id}|{self.pool_key}"
        return f"{POOL_KEY_PREFIX}|global|{self.pool_key}"

    def cluster_name(self) -> str:
        """``flyray-pool-<readable key>-<hash10>``: one name per pool, valid for KubeRay."""
        suffix = f"-{hashlib.sha256(self.key.encode()).hexdigest()[:10]}"
        readable = dns_slug(self.pool_key if not self.pool_key.startswith("config-") else "")
        prefix = f"{POOL_NAME_PREFIX}-{readable}".rstrip("-")[: MAX_CLUSTER_NAME - len(suffix)].rstrip("-")
        name = f"{prefix}{suffix}"
        assert is_valid_cluster_name(name), name
        return name

    def labels(self) -> dict[str, str]:
        return dict(POOL_LABELS)

    def family_selector(self) -> str:
        return pool_selector()


def pool_selector() -> str:
    """Every pool cluster of this provider (in one namespace)."""
    return ",".join(f"{k}={v}" for k, v in POOL_LABELS.items())
