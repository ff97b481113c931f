"""The orphan sweep's decision: which clusters of earlier runs of a task may be deleted."""

from __future__ import annotations

from airflow_provider_flyray.naming import ON_FINISH_ANNOTATION, OWNER_ANNOTATION, TaskIdentity
from airflow_provider_flyray.orphans import TaskKey, earlier_owners, find_orphans

CURRENT = TaskIdentity("etl", "train", "manual__2026-11-28T10:00:00+00:00").task_key


def cluster(name: str, run_id: str, action: str | None = "delete_cluster", map_index: int = -1, **meta) -> dict:
    annotations = {OWNER_ANNOTATION: TaskIdentity("etl", "train", run_id, map_index).task_key}
    if action is not None:
        annotations[ON_FINISH_ANNOTATION] = action
    return {"metadata": {"name": name, "annotations": annotations, **meta}}


def test_task_key_round_trips_run_ids_with_separators_and_map_indexes():
    key = TaskKey.parse(TaskIdentity("etl", "train", "scheduled__2026-01-01T00:00:00+00:00", 3).task_key)
    assert key == TaskKey("etl", "train", "scheduled__2026-01-01T00:00:00+00:00", 3)
    assert key.state_in({key.run_id: {"train_3": "failed"}}) == "failed"
    assert TaskKey.parse("not-a-key") is None and TaskKey.parse("a|b|c|x") is None


def test_finished_task_instances_leave_orphans_unless_the_policy_kept_the_cluster():
    clusters = [
        cluster("failed-run", "r1"),
        cluster("succeeded-run", "r2"),
        cluster("kept", "r3", action="keep_cluster"),
        cluster("kept-failure", "r4", action="delete_succeeded_cluster"),
        cluster("deleted-on-success", "r5", action="delete_succeeded_cluster"),
        cluster("mapped", "r6", map_index=2),
    ]
    states = {
        "r1": {"train": "failed"},
        "r2": {"train": "success"},
        "r3": {"train": "success"},
        "r4": {"train": "failed"},
        "r5": {"train": "success"},
        "r6": {"train_2": "upstream_failed"},
    }
    orphans = find_orphans(clusters, states, CURRENT)
    assert [o.name for o in orphans] == ["failed-run", "succeeded-run", "deleted-on-success", "mapped"]
    assert orphans[0].reason == "its task instance (run r1) is failed"


def test_live_unknown_and_foreign_clusters_are_left_alone():
    clusters = [
        cluster("retrying", "r1"),
        cluster("deferred", "r2"),
        cluster("unknown-run", "r3"),
        cluster("older-version", "r4", action=None),
        cluster("being-deleted", "r5", deletionTimestamp="2026-11-28T10:00:00Z"),
        {"metadata": {"name": "by-hand", "annotations": {}}},
        {
            "metadata": {
                "name": "current",
                "annotations": {OWNER_ANNOTATION: CURRENT, ON_FINISH_ANNOTATION: "delete_cluster"},
            }
        },
    ]
    states = {
        "r1": {"train": "up_for_retry"},
        "r2": {"train": "deferred"},
        "r4": {"train": "failed"},
        "r5": {"train": "failed"},
    }
    assert find_orphans(clusters, states, CURRENT) == []
    # Airflow is asked only about the other runs' task instances.
    assert [k.run_id for k in earlier_owners(clusters, CURRENT)] == ["r1", "r2", "r3", "r4", "r5"]


def test_task_clusters_record_their_owner_and_policy():
    from airflow_provider_flyray.config import RayJobConfig
    from airflow_provider_flyray.manifest import task_cluster_manifest

    identity = TaskIdentity("etl", "train", "r1")
    annotations = task_cluster_manifest(RayJobConfig(), identity, "ns", on_finish_action="keep_cluster")["metadata"][
        "annotations"
    ]
    assert annotations == {OWNER_ANNOTATION: identity.task_key, ON_FINISH_ANNOTATION: "keep_cluster"}
