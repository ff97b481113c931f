"""RayJob mode on the real control plane (kube-apiserver, controller-manager, KubeRay operator, pods as
processes): the example DAG through `airflow dags test` (an operator task and a `@task.ray` function
shipping local code, each on a RayJob whose cluster KubeRay makes), and what the RayJob carries."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from tests.support import tenants
from tests.support.airflow_runs import dags_test
from tests.support.leftovers import rayjobs_in, wait_until_empty

pytestmark = [pytest.mark.kube, pytest.mark.airflow]


@pytest.fixture
def namespace(kube_control_plane, core, monkeypatch):
    with tenants.namespace(core, "flyray-rayjob") as name:
        extra = {"kube_config_path": kube_control_plane.kubeconfig, "namespace": name, "dashboard_access": "pod"}
        monkeypatch.setenv("AIRFLOW_CONN_RAY_DEFAULT", tenants.flyray_conn(**extra))
        yield name


def test_the_rayjob_example_runs_on_clusters_kuberay_makes(core, custom, namespace, airflow_db):
    seen: dict[str, dict] = {}
    stop = threading.Event()

    def watch() -> None:  # what the RayJobs looked like while they ran
        while not stop.is_set():
            for rayjob in rayjobs_in(custom, namespace):
                seen.setdefault(rayjob["metadata"]["name"], rayjob)
            time.sleep(0.3)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        output = dags_test(
            "example_flyray_rayjob", {"AIRFLOW_CONN_RAY_DEFAULT": os.environ["AIRFLOW_CONN_RAY_DEFAULT"]}
        )
    finally:
        stop.set()
        watcher.join()
    assert "state=success" in output and "state=failed" not in output, output[-6000:]
    assert "RAYJOB hello from" in output
    assert "RAYJOB result: ['RAY!', 'JOB!']" in output, output[-4000:]
    assert output.count("Created RayJob") == 2
    assert output.count("(KubeRay stops its job and deletes its cluster)") == 2
    assert len(seen) == 2, sorted(seen)
    for rayjob in seen.values():
        spec = rayjob["spec"]
        assert len(rayjob["metadata"]["name"]) <= 47
        assert spec["submissionMode"] == "InteractiveMode"
        assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] >= 60
        assert 600 < spec["activeDeadlineSeconds"] <= 660, "execution_timeout (10 min) plus the margin"
        assert spec["jobId"].endswith("-try1") and spec["metadata"]["airflow_task_id"] in ("hello", "shout")
        assert "rayClusterSpec" in spec and "clusterSelector" not in spec
    shout = next(r for r in seen.values() if r["spec"]["metadata"]["airflow_task_id"] == "shout")
    assert "gcs://_ray_pkg_" in json.dumps(shout["spec"]["runtimeEnvYAML"]), "local code, named by content"
    wait_until_empty(core, custom, namespace)
