"""@task.ray on real Airflow (`airflow dags test`) and a real local Ray head: results in XCom, templates,
multiple_outputs, a forged frame, a raising function with its remote traceback."""

from __future__ import annotations

import pytest

from tests.support.airflow_runs import dags_test, home_with_test_dags

pytestmark = [pytest.mark.airflow, pytest.mark.ray]


@pytest.fixture(scope="module")
def test_dags_home(tmp_path_factory) -> dict[str, str]:
    return home_with_test_dags(tmp_path_factory.mktemp("airflow-decorator-dags"))


def test_example_returns_the_squares_to_the_downstream_task(airflow_db):
    output = dags_test("example_flyray_decorator")
    assert "FLYRAY_RESULT squares: [0, 1, 4, 9, 16]" in output, output[-4000:]
    assert "state=success" in output
    assert "##flyray:" not in output  # the result frames never reach the task log


def test_multiple_outputs_templates_and_a_forged_frame(test_dags_home):
    output = dags_test("flyray_decorator_outputs", test_dags_home)
    assert "FLYRAY_RESULT total 6 label run-3" in output, output[-4000:]
    assert "[ray] computing run-3" in output
    # The forged line (another marker) is shown as the job printed it; the real frames are not shown.
    forged = "##flyray:" + "0" * 32 + ":1/1:"
    assert forged in output and output.count("##flyray:") == 1
    assert "state=success" in output


def test_raising_function_fails_with_its_type_message_and_remote_traceback(test_dags_home):
    output = dags_test("flyray_decorator_raises", test_dags_home)
    assert "state=failed" in output, output[-4000:]
    assert "the function raised ValueError: bad n=7" in output
    assert "--- remote traceback ---" in output
    # The traceback points at the DAG file's line of the raise.
    assert 'flyray_decorator_dags.py", line ' in output and 'raise ValueError(f"bad n={n}")' in output
    assert "[ray] about to fail" in output
