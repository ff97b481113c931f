"""Which RayClusters earlier runs of a task left behind, and may be deleted (pure).

A worker killed with no retry left (SIGKILL, a lost node) never runs this provider's code again, so
the RayCluster it created stays up. The next run of the same task looks for such clusters: one is an
orphan when Airflow reports its task instance finished and the cluster's recorded ``on_finish_action``
would have deleted it. Anything else (a task instance still running, deferred, up for retry, unknown to
Airflow) is left alone: deleting a live cluster is worse than keeping a dead one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_flyray.config import OnFinishAction
from airflow_provider_flyray.naming import ON_FINISH_ANNOTATION
from airflow_provider_flyray.owners import Ending, owner_key_of, should_delete

VALID_ACTIONS = frozenset(a.value for a in OnFinishAction)
FINISHED_STATES = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})


@dataclass(frozen=True)
class TaskKey:
    """A parsed ``TaskIdentity.task_key``: ``dag|task|run|map_index``."""

    dag_id: str
    task_id: str
    run_id: str
    map_index: int

    @classmethod
    def parse(cls, key: str) -> TaskKey | None:
        dag_id, _, rest = key.partition("|")
        task_id, _, rest = rest.partition("|")
        run_id, _, map_index = rest.rpartition("|")
        if not (dag_id and task_id and run_id) or not map_index.lstrip("-").isdigit():
            return None
        return cls(dag_id, task_id, run_id, int(map_index))

    def state_in(self, task_states: Mapping[str, Mapping[str, Any]]) -> str | None:
        """This task instance's state in the answer of Airflow's ``get_task_states``."""
        per_run = task_states.get(self.run_id) or {}
        state = per_run.get(self.task_id if self.map_index < 0 else f"{self.task_id}_{self.map_index}")
        return None if state is None else str(state)


@dataclass(frozen=True)
class Orphan:
    name: str
    owner_key: str
    reason: str


def earlier_owners(clusters: Iterable[Mapping[str, Any]], current_key: str) -> list[TaskKey]:
    """The task instances (other than the current one) that own the given clusters."""
    keys = {owner_key_of(c) for c in clusters} - {None, current_key}
    return sorted(filter(None, (TaskKey.parse(k) for k in keys if k)), key=lambda k: (k.run_id, k.map_index))


def find_orphans(
    clusters: Iterable[Mapping[str, Any]], task_states: Mapping[str, Mapping[str, Any]], current_key: str
) -> list[Orphan]:
    orphans = []
    for cluster in clusters:
        meta = cluster.get("metadata") or {}
        owner = owner_key_of(cluster)
        if not owner or owner == current_key or meta.get("deletionTimestamp"):
            continue
        key = TaskKey.parse(owner)
        action = (meta.get("annotations") or {}).get(ON_FINISH_ANNOTATION)
        if key is None or action not in VALID_ACTIONS:  # not ours to judge (made by hand, or by an older version)
            continue
        state = key.state_in(task_states)
        if state not in FINISHED_STATES:
            continue
        if not should_delete(action, Ending.SUCCEEDED if state == "success" else Ending.FAILED):
            continue
        orphans.append(Orphan(meta["name"], owner, f"its task instance (run {key.run_id}) is {state}"))
    return orphans
