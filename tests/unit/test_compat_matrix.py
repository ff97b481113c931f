"""The compatibility run's plan and its reading of pytest's results (tests/compat/matrix.py)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.compat import matrix

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="1" failures="1"
skipped="1" tests="5" time="12.5"><testcase classname="tests.unit.test_a" name="test_ok" time="0.1"/>
<testcase classname="tests.unit.test_a" name="test_ok_too" time="0.1"/>
<testcase classname="tests.unit.test_a" name="test_bad" time="0.2"><failure message="AssertionError: 1 != 2&#10;more lines">trace</failure></testcase>
<testcase classname="tests.unit.test_b" name="test_setup" time="0.0"><error message="fixture 'x' not found">e</error></testcase>
<testcase classname="tests.unit.test_b" name="test_skip" time="0.0"><skipped message="not here"/></testcase>
</testsuite></testsuites>"""


def test_a_junit_report_is_counted_with_its_failures_named():
    result = matrix.summarise_junit(JUNIT)
    assert (result.passed, result.failed, result.skipped, result.seconds) == (2, 2, 1, 12.5)
    assert result.failures == [
        "tests.unit.test_a::test_bad: AssertionError: 1 != 2",
        "tests.unit.test_b::test_setup: fixture 'x' not found",
    ]
    assert not result.ok and result.cell() == "2 passed, **2 failed**, 1 skipped"


def test_a_suite_that_ran_nothing_or_did_not_run_is_not_ok():
    assert not matrix.SuiteResult().ok
    assert not matrix.SuiteResult(passed=3, note="install failed: x").ok
    assert matrix.SuiteResult(passed=3, skipped=1).ok


def test_every_airflow_line_the_package_claims_has_its_lowest_and_highest_patch():
    declared = re.search(r'"apache-airflow>=([\d.]+)"', (matrix_path().parents[2] / "pyproject.toml").read_text())
    assert declared is not None
    lowest = tuple(int(part) for part in declared.group(1).split("."))
    versions = [tuple(int(part) for part in v.split(".")) for v in matrix.AIRFLOW_VERSIONS]
    assert lowest in versions  # the declared bound itself is tested
    for line in [(3, 0), (3, 1), (3, 2), (3, 3)]:
        if line >= lowest[:2]:  # a line the package claims: its lowest claimed and its highest patch
            claimed = [v for v in versions if v[:2] == line and v >= lowest]
            assert claimed and (line != lowest[:2] or min(claimed) == lowest), line


def test_the_legs_cover_each_version_once_and_the_newest_airflow_for_ray_and_kuberay():
    legs = matrix.legs()
    names = [leg.name for leg in legs]
    assert len(names) == len(set(names))
    assert [leg.airflow for leg in legs if leg.name.startswith("airflow-")] == matrix.AIRFLOW_VERSIONS
    ray_legs = [leg for leg in legs if leg.name.startswith("ray-")]
    assert {leg.ray for leg in ray_legs} == set(matrix.RAY_VERSIONS) - {matrix.DEFAULT_RAY}  # newest: in airflow legs
    assert {leg.kuberay for leg in legs if leg.kuberay} == set(matrix.KUBERAY_VERSIONS)
    assert all(leg.airflow == matrix.AIRFLOW_VERSIONS[-1] for leg in legs if leg.kuberay or leg in ray_legs)
    assert matrix.Leg("x", "3.1.0").airflow_step == ["--exclude-newer", "2025-09-26", "apache-airflow==3.1.0"]
    assert set(matrix.AIRFLOW_RELEASED) == set(matrix.AIRFLOW_VERSIONS)
    for paths in matrix.SUITES.values():
        assert all((matrix_path().parents[2] / path).exists() for path in paths), paths


def test_the_table_shows_each_leg_its_versions_and_its_failures():
    failing = matrix.summarise_junit(JUNIT)
    run = {
        "date": "2026-12-04",
        "command": "python -m tests.compat",
        "machine": "2 cores",
        "minutes": 3.0,
        "legs": [
            {
                "name": "airflow-3.1.0",
                "airflow": "3.1.0",
                "kuberay": None,
                "installed": {"apache-airflow": "3.1.0", "ray": "2.60.0"},
                "suites": {"unit": {"cell": failing.cell(), "failures": failing.failures}},
            }
        ],
    }
    text = matrix.markdown(run)
    assert "| airflow-3.1.0 | 3.1.0 | ? | ? | ? | 2.60.0 | - | 2 passed, **2 failed**, 1 skipped |" in text
    assert "- airflow-3.1.0 / unit: `tests.unit.test_a::test_bad: AssertionError: 1 != 2`" in text
    assert "as on its release day" in text


def matrix_path() -> Path:
    return Path(matrix.__file__)
