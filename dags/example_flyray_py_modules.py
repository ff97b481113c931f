"""Local code on the cluster: a ``@task.ray`` function that imports a helper package from the DAG folder.

``runtime_env={"py_modules": ["flyray_example_helpers"]}`` names a directory next to this file (relative
paths are relative to the DAG file's folder). The worker zips it deterministically, names it by content
hash as Ray's own client does (``gcs://_ray_pkg_<hash>.zip``), uploads it only if the cluster lacks it,
and submits the job with that URI: the same works for a local ``working_dir``. Ray tasks on the workers
import it too.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

with DAG(
    dag_id="example_flyray_py_modules",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "ray"],
):

    @task.ray(ray_conn_id="ray_local", runtime_env={"py_modules": ["flyray_example_helpers"]}, poll_interval=2)
    def shout_all(words: list[str]) -> dict[str, object]:
        import flyray_example_helpers as helpers
        import ray

        @ray.remote
        def on_a_worker(word: str) -> str:
            import flyray_example_helpers

            return flyray_example_helpers.shout(word)

        return {"shouted": ray.get([on_a_worker.remote(w) for w in words]), "longest": helpers.longest(words)}

    @task
    def report(summary: dict[str, object]) -> None:
        print("FLYRAY_RESULT shouted:", summary["shouted"], "longest:", summary["longest"])

    report(shout_all(["ray", "airflow", "kuberay"]))
