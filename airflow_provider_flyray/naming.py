"""Names, labels and ids derived from a task instance. Pure functions.

A RayCluster name is at most 53 characters (KubeRay appends ``-head-svc``) and a DNS-1035 label. It is
made of a readable prefix (dag and task id) and a hash of the full task instance identity, so two runs
of the same DAG, two map indexes or two tries never collide, while the same try always maps to the same
name (a re-run of the worker finds the cluster it created instead of making a second one).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from airflow_provider_flyray.errors import ConfigError

MAX_CLUSTER_NAME = 53
MAX_LABEL_VALUE = 63

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "airflow-provider-flyray"
# Full, unsanitised identity of the owning task instance, compared before any reattach or delete.
OWNER_ANNOTATION = "flyray.airflow.apache.org/owner"
# The cluster's on_finish_action, so a later run can tell an orphan from a cluster kept on purpose.
ON_FINISH_ANNOTATION = "flyray.airflow.apache.org/on-finish-action"

_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@dataclass(frozen=True)
class TaskIdentity:
    """Who owns a cluster or a job: the task instance, minus the try for the 'same task' questions."""

    dag_id: str
    task_id: str
    run_id: str
    map_index: int = -1
    try_number: int = 1

    @classmethod
    def from_ti(cls, ti: Any) -> TaskIdentity:
        map_index = getattr(ti, "map_index", -1)
        return cls(
            dag_id=ti.dag_id,
            task_id=ti.task_id,
            run_id=ti.run_id,
            map_index=-1 if map_index is None else int(map_index),
            try_number=int(getattr(ti, "try_number", 1) or 1),
        )

    @property
    def task_key(self) -> str:
        """The identity without the try number: the same for every try of one task instance."""
        return f"{self.dag_id}|{self.task_id}|{self.run_id}|{self.map_index}"


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def dns_slug(text: str) -> str:
    """Lowercase, ``[a-z0-9-]`` only, no repeated or edge dashes."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return re.sub(r"-{2,}", "-", slug)


def cluster_name_for(identity: TaskIdentity) -> str:
    """``<dag>-<task>-<hash10>-<try>``: readable, unique per task instance try, valid for KubeRay."""
    suffix = f"-{_digest(identity.task_key, 10)}-{identity.try_number}"
    prefix = dns_slug(f"{identity.dag_id}-{identity.task_id}")
    if not prefix or not prefix[0].isalpha():
        prefix = f"ray-{prefix}".rstrip("-")
    prefix = prefix[: MAX_CLUSTER_NAME - len(suffix)].rstrip("-")
    name = f"{prefix}{suffix}"
    assert is_valid_cluster_name(name), name
    return name


def submission_id_for(identity: TaskIdentity) -> str:
    """Deterministic Ray submission id of one task instance try (exactly-once submission, reattach)."""
    prefix = dns_slug(f"{identity.dag_id}-{identity.task_id}")[:40].rstrip("-") or "airflow"
    return f"{prefix}-{_digest(identity.task_key, 12)}-try{identity.try_number}"


def is_valid_cluster_name(name: str) -> bool:
    return len(name) <= MAX_CLUSTER_NAME and bool(_DNS1035_LABEL.match(name))


def check_cluster_name(value: Any, field: str = "cluster_name") -> str:
    """An existing RayCluster's name as KubeRay allows it (it refuses any other), or a ConfigError."""
    if not isinstance(value, str) or not is_valid_cluster_name(value):
        raise ConfigError(
            field,
            f"{value!r} is not a RayCluster name: 1-{MAX_CLUSTER_NAME} lowercase letters, digits and '-', "
            "starting with a letter and ending with a letter or digit",
        )
    return value


def label_value(text: str) -> str:
    """A Kubernetes label value for ``text``: sanitised, and hashed when too long to stay unique."""
    value = re.sub(r"[^A-Za-z0-9_.-]+", "_", text)
    value = value.strip("-_.")
    if len(value) > MAX_LABEL_VALUE:
        digest = _digest(text, 8)
        value = f"{value[: MAX_LABEL_VALUE - 9].rstrip('-_.')}-{digest}"
    assert _LABEL_VALUE.match(value), value
    return value


def labels_for(identity: TaskIdentity) -> dict[str, str]:
    """Labels on every object this provider creates (the cncf-kubernetes convention, plus managed-by)."""
    return {
        MANAGED_BY_LABEL: MANAGED_BY_VALUE,
        "dag_id": label_value(identity.dag_id),
        "task_id": label_value(identity.task_id),
        "run_id": label_value(identity.run_id),
        # -1 (not mapped) is not a valid label value.
        "map_index": str(identity.map_index) if identity.map_index >= 0 else "none",
        "try_number": str(identity.try_number),
    }


def task_family_selector(identity: TaskIdentity) -> str:
    """Label selector matching this provider's clusters of every run of this task (the orphan sweep)."""
    labels = labels_for(identity)
    return ",".join(f"{k}={labels[k]}" for k in (MANAGED_BY_LABEL, "dag_id", "task_id"))


def job_metadata_for(identity: TaskIdentity) -> dict[str, str]:
    """Metadata attached to the Ray job so a retry can recognise the jobs of earlier tries."""
    return {
        "airflow_dag_id": identity.dag_id,
        "airflow_task_id": identity.task_id,
        "airflow_run_id": identity.run_id,
        "airflow_map_index": str(identity.map_index),
        "airflow_try_number": str(identity.try_number),
        "airflow_task_key": identity.task_key,
    }
