"""Running Airflow from the tests and the benchmarks: ``airflow db migrate`` and ``airflow dags test``
subprocesses, AIRFLOW_HOMEs and dags folders, a real Airflow stack (tests.infra.stack) for the length of
a block, and waiting for a task's state in it."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tests.infra.stack import AirflowStack
from tests.support import REPO, TEST_DAGS

E2E_DAGS = TEST_DAGS / "flyray_e2e_dags.py"
FAULT_DAGS = TEST_DAGS / "flyray_fault_dags.py"
# The task of each example DAG; the test, e2e and fault DAGs call theirs "job".
TASKS = {"example_flyray_local": "estimate_pi", "example_flyray_kuberay": "train"}


def task_of(dag_id: str) -> str:
    return TASKS.get(dag_id, "job")


def example_dags() -> list[Path]:
    """The README's example DAGs (dags/)."""
    return sorted((REPO / "dags").glob("*.py"))


def migrate(env: dict[str, str] | None = None, timeout: float = 300) -> None:
    """``airflow db migrate`` of the AIRFLOW_HOME that ``env`` (over this process's environment) selects."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


@functools.cache
def dags_test_reads_the_db() -> bool:
    """Airflow 3.0.0's ``dags test`` finds the DAG in the metadata DB (its serialized form), not in the
    dags folder: a DAG never parsed by a dag processor "could not be found" (fixed by 3.0.6)."""
    from airflow.cli.commands import dag_command

    return hasattr(dag_command, "_parse_and_get_dag")


_SERIALIZED_HOMES: set[str] = set()


def dags_test(dag_id: str, env: dict[str, str] | None = None, conf: dict | None = None, timeout: float = 900) -> str:
    """``airflow dags test DAG_ID`` with ``env`` over this process's environment; its stdout and stderr."""
    # Plain text: the tests read the output, and some Airflow versions colour it when they can.
    full_env = {**os.environ, "NO_COLOR": "1", "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False", **(env or {})}
    home = full_env.get("AIRFLOW_HOME", "")
    if dags_test_reads_the_db() and home not in _SERIALIZED_HOMES:
        # What a dag processor would have done first (`airflow dags reserialize`, once per home).
        subprocess.run(
            [sys.executable, "-m", "airflow", "dags", "reserialize"], check=True, capture_output=True, env=full_env
        )
        _SERIALIZED_HOMES.add(home)
    command = [sys.executable, "-m", "airflow", "dags", "test", dag_id]
    if conf:
        command += ["-c", json.dumps(conf)]
    result = subprocess.run(command, capture_output=True, text=True, env=full_env, timeout=timeout)
    return result.stdout + result.stderr


def xcoms(env: dict[str, str], dag_id: str) -> dict[tuple[str, int, str], Any]:
    """(task_id, map_index, key) -> value of every XCom of the DAG's runs, from the metadata DB."""
    db = Path(env["AIRFLOW_HOME"]) / "airflow.db"
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT task_id, map_index, key, value FROM xcom WHERE dag_id = ?", (dag_id,)).fetchall()
    # The column is JSON text; SQLite's numeric affinity hands a bare number back as a number.
    return {(t, i, k): json.loads(v) if isinstance(v, str | bytes) else v for t, i, k, v in rows}


def home_with_test_dags(home: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """A second AIRFLOW_HOME whose dags folder holds tests/dags (DAGs that fail on purpose), migrated;
    returns the environment that selects it (plus ``env``)."""
    dags = home / "dags"
    shutil.copytree(TEST_DAGS, dags)
    selected = {"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(dags), **(env or {})}
    migrate(selected)
    return selected


def dags_folder(home: Path, dag_files: Iterable[Path]) -> Path:
    """``home``/dags holding a copy of each of ``dag_files``."""
    dags = home / "dags"
    dags.mkdir(parents=True)
    for source in dag_files:
        shutil.copy(source, dags / source.name)
    return dags


@contextlib.contextmanager
def airflow_stack(
    home: Path,
    dag_files: Iterable[Path],
    extra_env: dict[str, str] | None = None,
    database_url: str | None = None,
) -> Iterator[AirflowStack]:
    """A real Airflow stack in ``home`` with copies of ``dag_files``, started for the block and stopped
    after it (also when it fails to start); ``stack.startup_seconds`` is what the start took.
    ``database_url``: its metadata DB (a PostgreSQL database of the session's server); SQLite without."""
    stack = AirflowStack(
        home=home, dags_folder=dags_folder(home, dag_files), extra_env=dict(extra_env or {}), database_url=database_url
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


def wait_for_state(
    stack: AirflowStack, dag_id: str, run_id: str, states: set[str], timeout: float = 300, task_id: str | None = None
) -> dict[str, Any]:
    """The task instance once its state is one of ``states`` (``task_id``: the DAG's task by default)."""
    task_id = task_id or task_of(dag_id)
    deadline = time.monotonic() + timeout
    while True:
        ti = stack.task_instance(dag_id, run_id, task_id)
        if ti["state"] in states:
            return ti
        assert time.monotonic() < deadline, f"{dag_id}: task still {ti['state']}, expected {states}"
        time.sleep(0.5)
