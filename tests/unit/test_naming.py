"""Names and ids: valid for Kubernetes/KubeRay, unique across runs and tries, stable within a try."""

from __future__ import annotations

import re

import pytest

from airflow_provider_flyray.naming import (
    MAX_CLUSTER_NAME,
    TaskIdentity,
    cluster_name_for,
    is_valid_cluster_name,
    job_metadata_for,
    label_value,
    labels_for,
    submission_id_for,
    task_family_selector,
)

RUN = "manual__2026-11-28T01:21:00.051814+00:00"


@pytest.mark.parametrize(
    "identity",
    [
        TaskIdentity("d", "t", RUN),
        TaskIdentity("My_DAG.with:odd+chars", "Task_ID", RUN, map_index=7, try_number=3),
        TaskIdentity("x" * 250, "y" * 250, RUN),
        TaskIdentity("123dag", "456", RUN),
        TaskIdentity("___", "...", RUN),
    ],
)
def test_cluster_names_are_valid_kuberay_names(identity):
    name = cluster_name_for(identity)
    assert len(name) <= MAX_CLUSTER_NAME
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name), name
    assert is_valid_cluster_name(name)
    assert cluster_name_for(identity) == name  # deterministic


def test_names_differ_across_runs_map_indexes_and_tries_even_with_long_prefixes():
    base = TaskIdentity("d" * 100, "t" * 100, RUN)
    variants = [
        base,
        TaskIdentity(base.dag_id, base.task_id, RUN + "x"),
        TaskIdentity(base.dag_id, base.task_id, RUN, map_index=0),
        TaskIdentity(base.dag_id, base.task_id, RUN, map_index=1),
        TaskIdentity(base.dag_id, base.task_id, RUN, try_number=2),
    ]
    assert len({cluster_name_for(v) for v in variants}) == len(variants)
    assert len({submission_id_for(v) for v in variants}) == len(variants)


def test_submission_id_is_per_try_and_url_safe():
    first, second = TaskIdentity("d", "t", RUN), TaskIdentity("d", "t", RUN, try_number=2)
    assert submission_id_for(first).endswith("-try1") and submission_id_for(second).endswith("-try2")
    assert re.fullmatch(r"[a-z0-9-]+", submission_id_for(first))
    assert first.task_key == second.task_key  # both tries belong to one task instance


def test_labels_are_valid_and_the_family_selector_spans_runs_and_tries():
    identity = TaskIdentity("dag", "task", RUN, map_index=3, try_number=2)
    labels = labels_for(identity)
    assert labels["app.kubernetes.io/managed-by"] == "airflow-provider-flyray"
    assert labels["run_id"] == "manual__2026-11-28T01_21_00.051814_00_00"
    assert labels["map_index"] == "3" and labels["try_number"] == "2"
    for value in labels.values():
        assert len(value) <= 63 and re.fullmatch(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", value)
    assert (
        task_family_selector(identity) == "app.kubernetes.io/managed-by=airflow-provider-flyray,dag_id=dag,task_id=task"
    )


def test_long_label_values_stay_unique():
    a, b = label_value("r" * 100 + "a"), label_value("r" * 100 + "b")
    assert a != b and len(a) <= 63 and len(b) <= 63


def test_job_metadata_carries_the_full_identity():
    meta = job_metadata_for(TaskIdentity("d", "t", RUN, 2, 4))
    assert meta["airflow_task_key"] == f"d|t|{RUN}|2"
    assert meta["airflow_try_number"] == "4"
    assert all(isinstance(v, str) for v in meta.values())
