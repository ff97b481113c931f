"""Local code shipped to a real local Ray head: the trigger's check, the worker's upload, Airflow runs.

- The trigger's half (a cluster that was still starting when the worker deferred): it asks the
  dashboard for each package, reports the missing ones without submitting; after the worker's upload
  (``operators/shipping.upload_missing``, the same code the operator runs) the job runs with them.
- Through ``airflow dags test``: FlyteRayOperator with a relative ``working_dir`` (``.gitignore``
  honoured), twice on one head: the second run finds the package and uploads nothing; the README's
  ``py_modules`` example DAG (a ``@task.ray`` function importing a helper package from the DAG folder,
  on the head and on a Ray worker task).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import pytest

from airflow_provider_flyray.backends import backend_for
from airflow_provider_flyray.cluster import ClusterRef
from airflow_provider_flyray.core.session import RaySession
from airflow_provider_flyray.jobs_api import JobSubmission
from airflow_provider_flyray.naming import TaskIdentity, job_metadata_for, submission_id_for
from airflow_provider_flyray.operators.shipping import upload_missing
from airflow_provider_flyray.packaging import local_packages
from airflow_provider_flyray.triggers.ray_job import RayJobTrigger
from tests.support.airflow_runs import dags_test, home_with_test_dags
from tests.support.ray_jobs import first_event, rest

pytestmark = [pytest.mark.ray]
LOG = logging.getLogger(__name__)


def code_tree(root: Path, token: str) -> dict[str, str]:
    """A working_dir and a py_modules package, unique to ``token`` (so the head cannot have them yet)."""
    (root / "project").mkdir(parents=True)
    (root / "project" / "main.py").write_text("import shipped_lib\nprint('SHIPPED', shipped_lib.TOKEN)\n")
    (root / "shipped_lib").mkdir()
    (root / "shipped_lib" / "__init__.py").write_text(f"TOKEN = {token!r}\n")
    return {"working_dir": str(root / "project"), "py_modules": [str(root / "shipped_lib")]}


def submission_for(runtime_env: dict) -> JobSubmission:
    identity = TaskIdentity("shipping", "t", uuid.uuid4().hex)
    env, packages = local_packages(runtime_env, None)
    return JobSubmission(
        submission_id_for(identity),
        "python main.py",
        runtime_env=env,
        metadata=job_metadata_for(identity),
        packages=packages,
    )


def event_of(ref: ClusterRef, submission: JobSubmission) -> dict:
    trigger = RayJobTrigger(
        ray_conn_id="ray_local",
        cluster=ref.to_dict(),
        submission=submission.to_dict(),
        owner_key=submission.metadata["airflow_task_key"],
        poll_interval=1,
    )
    return asyncio.run(asyncio.wait_for(first_event(trigger), 120))


def upload(ref: ClusterRef, submission: JobSubmission) -> JobSubmission:
    async def run() -> JobSubmission:
        async with RaySession("ray_local", log=LOG) as session:
            endpoint = await backend_for(ref).dashboard(session, ref)
            return await upload_missing(session, endpoint, submission, LOG)

    return asyncio.run(run())


def test_trigger_reports_missing_packages_then_the_job_runs_with_the_uploaded_code(address_ref, tmp_path):
    token = uuid.uuid4().hex
    submission = submission_for(code_tree(tmp_path, token))
    uris = [p.uri for p in submission.packages]
    assert len(uris) == 2 and all(u.startswith("gcs://_ray_pkg_") for u in uris)

    missing = event_of(address_ref, submission)
    assert missing["status"] == "packages_missing", missing
    assert sorted(missing["missing_packages"]) == sorted(uris)
    assert JobSubmission.from_dict(missing["submission"]) == submission
    # Nothing was submitted: the job waits for its code.
    assert all(j["submission_id"] != submission.submission_id for j in rest(f"{address_ref.address}/api/jobs/"))

    uploaded = upload(address_ref, submission)
    assert [p.uploads for p in uploaded.packages] == [1, 1]
    done = event_of(address_ref, uploaded)
    assert done["status"] == "success", done
    assert f"SHIPPED {token}" in done["log_tail"]

    # The same code again (another task): the cluster has both packages, nothing is uploaded.
    again = submission_for(code_tree(tmp_path / "again", token))
    assert [p.uri for p in again.packages] == uris
    assert [p.uploads for p in upload(address_ref, again).packages] == [0, 0]
    second = event_of(address_ref, again)
    assert second["status"] == "success" and f"SHIPPED {token}" in second["log_tail"], second


def test_operator_ships_a_relative_working_dir_once(tmp_path, local_head):
    # The module's shared head (tests/integration/conftest.py): no run of this module shipped this tree yet.
    assert local_head.address
    home = home_with_test_dags(tmp_path / "home", {"FLYRAY_SHIPPING_ADDRESS": local_head.address})
    project = Path(home["AIRFLOW__CORE__DAGS_FOLDER"]) / "shipping_project"
    (project / "ignored.log").write_text("the project's .gitignore keeps this off the cluster\n")

    first = dags_test("flyray_shipping_operator", home)
    assert "state=success" in first, first[-4000:]
    assert "[ray] SHIPPED_OK from the shipped working_dir" in first
    assert "[ray] IGNORED_FILE_PRESENT False" in first
    assert "runtime_env.working_dir: uploaded" in first and "not uploaded" not in first

    second = dags_test("flyray_shipping_operator", home)
    assert "state=success" in second, second[-4000:]
    assert "[ray] SHIPPED_OK from the shipped working_dir" in second
    assert "is already on the cluster, not uploaded" in second and "runtime_env.working_dir: uploaded" not in second


def test_py_modules_example_imports_the_dag_folders_helper_on_head_and_workers(airflow_db):
    output = dags_test("example_flyray_py_modules")
    assert "state=success" in output, output[-4000:]
    assert "FLYRAY_RESULT shouted: ['RAY!', 'AIRFLOW!', 'KUBERAY!'] longest: airflow" in output
    assert "runtime_env.py_modules[0]: uploaded" in output
