"""Who owns a cluster, how that is written on it, and the one rule that decides its deletion. Pure.

An owner is what a cluster is created *for*: today a task instance (every try of one task in one run and
map index shares it, so a retry adopts its earlier try's cluster); a DAG run or a named shared pool are
further owners with the same shape. An owner says what the cluster is called, which labels and
annotations mark it, and which selector finds the clusters of its family (earlier runs, for the orphan
sweep). Whether an owned cluster is deleted is decided by :func:`should_delete` alone: the operator's
release and ``on_kill``, the trigger's ``on_kill`` and the orphan sweep all ask it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from airflow_provider_flyray.cluster import ClusterRef
from airflow_provider_flyray.config import OnFinishAction
from airflow_provider_flyray.naming import (
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    ON_FINISH_ANNOTATION,
    OWNER_ANNOTATION,
    TaskIdentity,
    cluster_name_for,
    labels_for,
    task_family_selector,
)


class Owner(Protocol):
    """What a cluster is created for."""

    @property
    def key(self) -> str:
        """The full, unsanitised identity written in the owner annotation and compared before any
        adopt or delete."""
        ...

    def cluster_name(self) -> str: ...

    def labels(self) -> dict[str, str]: ...

    def family_selector(self) -> str:
        """A label selector for the clusters of this owner and its earlier runs."""
        ...


@dataclass(frozen=True)
class TaskInstanceOwner:
    """A task instance (all its tries): the owner of a transient cluster."""

    identity: TaskIdentity

    @property
    def key(self) -> str:
        return self.identity.task_key

    def cluster_name(self) -> str:
        return cluster_name_for(self.identity)

    def labels(self) -> dict[str, str]:
        return labels_for(self.identity)

    def family_selector(self) -> str:
        return task_family_selector(self.identity)


def owner_annotations(owner: Owner, on_finish_action: OnFinishAction | str | None) -> dict[str, str]:
    """The owner's key, and the policy the cluster was created with (so a later run can tell an
    orphan from a cluster kept on purpose)."""
    annotations = {OWNER_ANNOTATION: owner.key}
    if on_finish_action is not None:
        annotations[ON_FINISH_ANNOTATION] = OnFinishAction.parse(on_finish_action).value
    return annotations


def owner_key_of(cluster: Mapping[str, Any]) -> str | None:
    return ((cluster.get("metadata") or {}).get("annotations") or {}).get(OWNER_ANNOTATION)


def is_managed(cluster: Mapping[str, Any]) -> bool:
    return ((cluster.get("metadata") or {}).get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE


def is_owned_by(cluster: Mapping[str, Any], owner_key: str) -> bool:
    return is_managed(cluster) and owner_key_of(cluster) == owner_key


class Ending(StrEnum):
    """How the owner's use of the cluster ended, as far as the deletion rule cares."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # The user marked the task failed or cleared it, or the worker was told to stop.
    KILLED = "killed"


def should_delete(action: OnFinishAction | str, ending: Ending) -> bool:
    """The one deletion rule: ``keep_cluster`` keeps; ``delete_succeeded_cluster`` keeps a failed job's
    cluster for inspection (a killed task has nothing to inspect); ``delete_cluster`` always deletes."""
    policy = OnFinishAction.parse(action)
    if policy is OnFinishAction.KEEP_CLUSTER:
        return False
    if policy is OnFinishAction.DELETE_SUCCEEDED_CLUSTER:
        return ending is not Ending.FAILED
    return True


def deletion_refusal(cluster: Mapping[str, Any] | None, ref: ClusterRef, owner_key: str | None) -> str | None:
    """Why this provider must not delete ``cluster`` (None: it may), whatever the policy says."""
    if not ref.owned:
        return f"{ref.describe()} was not created by this task"
    if cluster is None:
        return f"{ref.describe()} no longer exists"
    if not is_managed(cluster) or (owner_key is not None and not is_owned_by(cluster, owner_key)):
        return f"{ref.describe()} is not managed by this provider for this task"
    return None
