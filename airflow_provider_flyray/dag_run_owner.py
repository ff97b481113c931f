"""The owner of a cluster shared by the tasks of one DAG run: the run, through its setup task. Pure.

``RayCreateClusterOperator`` (the setup task) creates the cluster for its DAG run; the run's tasks use
it (``cluster=create.output``) without owning it; ``RayDeleteClusterOperator`` (the teardown) deletes it,
after checking this owner's key on the cluster. A retry of the setup task adopts the cluster by that key
(the name carries the try, as a task instance's does). A cluster whose run has finished but that still
exists (its teardown was killed) is an orphan: :func:`run_orphans` finds it for the next run's setup.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_flyray.naming import TaskIdentity, cluster_name_for, labels_for, task_family_selector
from airflow_provider_flyray.orphans import Orphan
from airflow_provider_flyray.owners import owner_key_of

# The last part of a DAG-run owner's key (a task instance's key ends with its map index instead).
DAG_RUN_KEY_SUFFIX = "dag-run"
SCOPE_LABEL = "flyray.airflow.apache.org/scope"
FINISHED_RUN_STATES = frozenset({"success", "failed"})


@dataclass(frozen=True)
class DagRunOwner:
    """One DAG run, through the id of the setup task that creates its cluster."""

    dag_id: str
    run_id: str
    setup_task_id: str
    try_number: int = 1

    @classmethod
    def from_ti(cls, ti: Any) -> DagRunOwner:
        return cls(ti.dag_id, ti.run_id, ti.task_id, int(getattr(ti, "try_number", 1) or 1))

    @property
    def _setup(self) -> TaskIdentity:
        return TaskIdentity(self.dag_id, self.setup_task_id, self.run_id, -1, self.try_number)

    @property
    def key(self) -> str:
        return f"{self.dag_id}|{self.setup_task_id}|{self.run_id}|{DAG_RUN_KEY_SUFFIX}"

    def cluster_name(self) -> str:
        return cluster_name_for(self._setup)

    def labels(self) -> dict[str, str]:
        return {**labels_for(self._setup), SCOPE_LABEL: "dag-run"}

    def family_selector(self) -> str:
        """The clusters of this setup task in every run of the DAG."""
        return f"{task_family_selector(self._setup)},{SCOPE_LABEL}=dag-run"


def run_of_key(key: str) -> tuple[str, str, str] | None:
    """``(dag_id, setup_task_id, run_id)`` of a DAG-run owner's key; None for any other key."""
    dag_id, _, rest = key.partition("|")
    task_id, _, rest = rest.partition("|")
    run_id, _, suffix = rest.rpartition("|")
    if suffix != DAG_RUN_KEY_SUFFIX or not (dag_id and task_id and run_id):
        return None
    return dag_id, task_id, run_id


def run_orphans(
    clusters: Iterable[Mapping[str, Any]], run_state: Callable[[str, str], str | None], current_key: str
) -> list[Orphan]:
    """The clusters of other runs of the DAG that Airflow reports finished: their teardown never ran to
    its end. A run still running (or unknown to Airflow) keeps its cluster."""
    orphans = []
    for cluster in clusters:
        meta = cluster.get("metadata") or {}
        key = owner_key_of(cluster)
        run = run_of_key(key) if key and key != current_key and not meta.get("deletionTimestamp") else None
        if run is None:
            continue
        state = run_state(run[0], run[2])
        if state in FINISHED_RUN_STATES:
            orphans.append(Orphan(str(meta.get("name")), str(key), f"its DAG run {run[2]} is {state}"))
    return orphans
