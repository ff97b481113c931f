"""``@task.ray`` through real Airflow (`airflow dags test`) on real local Ray.

Three runs: the README's example DAG (a transient local head, the connection's ``local`` backend), and
tests/dags/flyray_decorator_dags.py's two DAGs (successes, failures) on one local head started here,
whose address the DAGs read from ``FLYRAY_DECORATOR_ADDRESS``. Results are read back three ways: the
downstream ``@task`` that prints what it received, the XCom rows in that AIRFLOW_HOME's metadata DB, and
the task log (the run's output). Failure messages are the exceptions as Airflow has them (written by the
DAG's ``on_failure_callback``).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_flyray.backends.local_process import local_cluster_pids, start_local_cluster, stop_local_cluster
from airflow_provider_flyray.function_driver import FRAME_PREFIX
from tests.support.airflow_runs import dags_test, home_with_test_dags, xcoms
from tests.support.ray_jobs import rest
from tests.support.waits import wait_for_dashboard

pytestmark = [pytest.mark.airflow, pytest.mark.ray]

FRAME = re.compile(re.escape(FRAME_PREFIX) + r"[0-9a-f]{32}:\d+/\d+:")
FORGED_MARKER = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def shared_head() -> Iterator[str]:
    ref = start_local_cluster("decorator-dags", num_cpus=2, object_store_memory=100_000_000)
    try:
        assert ref.address
        wait_for_dashboard(ref.address)
        yield ref.address
    finally:
        stop_local_cluster(ref)
        assert local_cluster_pids(ref) == []


@pytest.fixture(scope="module")
def home(tmp_path_factory, shared_head) -> dict[str, str]:
    root = tmp_path_factory.mktemp("airflow-decorator")
    failures = root / "failures"
    failures.mkdir()
    return home_with_test_dags(
        root / "home", {"FLYRAY_DECORATOR_ADDRESS": shared_head, "FLYRAY_DECORATOR_FAILURES": str(failures)}
    )


def printed(output: str, prefix: str) -> Any:
    line = next(line for line in output.splitlines() if prefix in line)
    return json.loads(line.split(prefix, 1)[1])


def ray_jobs_of(address: str, task_id: str) -> list[dict[str, Any]]:
    return [j for j in rest(address + "/api/jobs/") if (j.get("metadata") or {}).get("airflow_task_id") == task_id]


def test_example_decorator_dag_returns_the_squares(airflow_db):
    output = dags_test("example_flyray_decorator")
    assert "FLYRAY_RESULT squares: [0, 1, 4, 9, 16]" in output, output[-4000:]
    assert "state=success" in output
    assert "Released local Ray cluster" in output
    assert not FRAME.search(output), "a result frame reached the task log"
    values = xcoms({"AIRFLOW_HOME": str(airflow_db)}, "example_flyray_decorator")
    assert values[("ray_squares", -1, "return_value")] == [0, 1, 4, 9, 16]
    assert values[("report", -1, "return_value")] == 30


@pytest.fixture(scope="module")
def results_run(home) -> tuple[str, float]:
    started = time.monotonic()
    output = dags_test("flyray_decorator_results", home)
    return output, time.monotonic() - started


def test_results_reach_xcom_and_downstream_tasks(results_run, home):
    output, _ = results_run
    assert "state=success" in output and "state=failed" not in output, output[-6000:]
    received = printed(output, "DEC_REPORT ")
    assert received == {
        "mapped": [4, 9],
        "total": 6,
        "count": 3,
        "fast": 25,
        "partial": [11, 12],
        "forged": "genuine",
        "blocking": 36,
        "quiet": "quiet result",
    }
    values = xcoms(home, "flyray_decorator_results")
    # Mapped: one result per map index.
    assert values[("square", 0, "return_value")] == 4 and values[("square", 1, "return_value")] == 9
    assert values[("add", 0, "return_value")] == 11 and values[("add", 1, "return_value")] == 12
    # multiple_outputs: one XCom per key (and the whole dict as return_value, as Airflow does).
    assert values[("stats", -1, "total")] == 6 and values[("stats", -1, "count")] == 3
    # .override(task_id=...): its own task, its own XCom.
    assert values[("square_fast", -1, "return_value")] == 25
    assert values[("square_blocking", -1, "return_value")] == 36


def test_templates_in_arguments_are_rendered(results_run):
    output, _ = results_run
    shown = printed(output, "DEC_TEMPLATED ")
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", shown["ds"]), shown
    assert shown["value"] == [shown["ds"], "px"]


def test_prints_stream_as_ray_lines_and_frames_never_reach_the_task_log(results_run):
    output, _ = results_run
    assert "[ray] squaring 2" in output and "[ray] squaring 3" in output, output[-6000:]
    assert "[ray] VISIBLE PRINT one" in output
    # The function cannot see its marker, and the forged lines are shown as the function printed them.
    assert "[ray] MARKER IN ENV False" in output
    assert f"[ray] ##flyray:{FORGED_MARKER}:1/1:" in output
    assert "[ray] ##flyray: not a frame at all" in output
    # A last print without a newline: its text is shown, the frame that followed it on the line is not.
    assert "[ray] no newline at the end" in output
    real_frames = [m.group(0) for m in FRAME.finditer(output) if FORGED_MARKER not in m.group(0)]
    assert real_frames == [], real_frames[:3]
    # get_logs=False: nothing of the job in the task log, the result still comes back.
    assert "HIDDEN PRINT" not in output


def test_override_and_non_deferrable_tasks(results_run):
    output, _ = results_run
    # deferrable=False waits on the worker; the others defer.
    lines = output.splitlines()
    blocking = [line for line in lines if "square_blocking" in line]
    assert blocking and not any("DEFERRED" in line for line in blocking)
    assert "[ray] squaring 6" in output


@pytest.fixture(scope="module")
def failures_run(home) -> tuple[str, dict[str, str]]:
    output = dags_test("flyray_decorator_failures", home)
    folder = Path(home["FLYRAY_DECORATOR_FAILURES"])
    return output, {p.stem: p.read_text() for p in folder.glob("*.txt")}


def test_raising_function_fails_with_its_exception_and_remote_traceback(failures_run, home):
    output, failures = failures_run
    assert "state=failed" in output
    message = failures["boom"]
    dag_file = Path(home["AIRFLOW__CORE__DAGS_FOLDER"]) / "flyray_decorator_dags.py"
    source = dag_file.read_text().splitlines()
    raise_line = next(i for i, line in enumerate(source, 1) if 'raise ValueError(f"boom' in line)
    call_line = next(i for i, line in enumerate(source, 1) if line.strip() == "inner(n)")
    assert "the function raised ValueError: boom 7: the remote failure" in message, message
    assert "--- remote traceback ---" in message
    assert f'File "{dag_file}", line {call_line}, in boom' in message, message
    assert f'File "{dag_file}", line {raise_line}, in inner' in message, message
    assert 'raise ValueError(f"boom {value}: the remote failure")' in message
    remote = message.split("--- remote traceback ---", 1)[1].split("--- last ", 1)[0]
    assert remote.count('File "') == 2 and "flyray_driver" not in remote and "function_driver" not in remote
    # The last lines of the job's log follow, without the traceback a second time.
    assert "BEFORE BOOM" in message
    assert message.count(f"line {raise_line}, in inner") == 1, message
    # The task log has the traceback too (streamed from the job's stderr).
    assert f'[ray]   File "{dag_file}", line {raise_line}, in inner' in output


def test_non_json_result_fails_naming_its_type(failures_run):
    _, failures = failures_run
    message = failures["bad_result"]
    assert "result['when'] (set) is not JSON-serialisable" in message, message
    assert message.count("is not JSON-serialisable") == 1, message


@pytest.mark.parametrize(
    ("task_id", "field", "words"),
    [
        ("bad_arg_datetime", "op_args[0]", "argument 'value' (datetime.datetime)"),
        ("bad_arg_set", "op_kwargs['other']", "argument 'other'['tags'] (set)"),
    ],
)
def test_non_json_arguments_fail_before_any_job_is_submitted(failures_run, shared_head, task_id, field, words):
    output, failures = failures_run
    message = failures[task_id]
    assert message.startswith(f"{field}: {words} cannot be sent to the Ray job as JSON"), message
    slug = f"flyray-decorator-failures-{task_id.replace('_', '-')}"
    assert f"Submitted Ray job {slug}" not in output
    assert ray_jobs_of(shared_head, task_id) == []
    assert ray_jobs_of(shared_head, "boom"), "the raising function's job is on the head"
