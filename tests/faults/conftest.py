"""Fixtures of the fault matrix: the ``scenario`` row every test fills in, and the table at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import fault_matrix


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    row = getattr(item, "_flyray_scenario", None)
    if row is not None and report.when == "call":
        row.finish(report.passed)
        if report.failed and not row.observed:
            row.observed = str(call.excinfo.value)[:300] if call.excinfo else "failed"


@pytest.fixture
def scenario(request: pytest.FixtureRequest) -> fault_matrix.Scenario:
    """The test's row in the matrix. Mark the test ``@pytest.mark.scenario("9a", "kube API answers 500")``."""
    marker = request.node.get_closest_marker("scenario")
    number, name = marker.args if marker else ("-", request.node.name)
    # A module that runs another module's rows again in another mode names them its own way.
    number_prefix, name_prefix = getattr(request.module, "SCENARIO_PREFIX", ("", ""))
    row = fault_matrix.Scenario(number=f"{number_prefix}{number}", name=f"{name_prefix}{name}")
    request.node._flyray_scenario = row
    fault_matrix.ROWS.append(row)
    return row


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    if not fault_matrix.ROWS:
        return
    path = fault_matrix.write(fault_matrix.ROWS)
    terminalreporter.section("flyray fault matrix")
    terminalreporter.write_line(path.read_text())
    terminalreporter.write_line(f"(also {path.with_suffix('.json')})")
