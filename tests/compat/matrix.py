"""What the compatibility run (``make compat``, ``python -m tests.compat``) runs, and how its results read.

Pure: the legs (which Airflow, Ray head and KubeRay operator; which suites), the summary of a suite's
JUnit XML, and the Markdown table. The I/O (venvs, pytest runs, the control plane) is in ``__main__``.
"""

from __future__ import annotations

import datetime
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from typing import Any

# The lowest and highest patch release of each Airflow minor line on PyPI on the run's day (3.0.5 was
# never published). The lowest the package claims is pyproject.toml's bound; older ones run to show why.
AIRFLOW_VERSIONS = ["3.0.0", "3.0.6", "3.1.0", "3.1.8", "3.2.0", "3.2.2", "3.3.0", "3.3.2"]
# Ray heads of the local-Ray Jobs API paths: the lowest the package claims (token auth) and the newest.
RAY_VERSIONS = ["2.52.0", "2.60.0"]
KUBERAY_VERSIONS = ["v1.4.0", "v1.5.0"]
DEFAULT_RAY = "2.60.0"
DEFAULT_KUBERAY = "v1.5.0"

# Each Airflow installed as on its release day: its dependencies no newer than its upload to PyPI (plus a
# day), which is what the constraint files Airflow's install guide requires pin; the provider is then
# installed into it by pip's rules, which keep what is installed where it fits. Without that first step
# pip takes today's newest dependencies, and some break old Airflows themselves: 3.0.6's in-process
# execution API rejects every task with cadwyn 9 / fastapi 0.165, 3.1.0 does not import with structlog
# 25.5+ (they declare only lower bounds).
AIRFLOW_RELEASED = {  # the wheel's upload time on PyPI (its simple index)
    "3.0.0": "2025-04-22",
    "3.0.6": "2025-08-29",
    "3.1.0": "2025-09-25",
    "3.1.8": "2026-03-11",
    "3.2.0": "2026-04-07",
    "3.2.2": "2026-05-29",
    "3.3.0": "2026-07-06",
    "3.3.2": "2026-09-17",
}


def installed_as_of(airflow: str) -> str:
    """The cut-off date of the Airflow install step (the day after the release)."""
    return (datetime.date.fromisoformat(AIRFLOW_RELEASED[airflow]) + datetime.timedelta(days=1)).isoformat()


SUITES: dict[str, list[str]] = {
    "unit": ["tests/unit"],
    # `airflow dags test` of the example DAGs (dags/) and the test DAGs, on the local Ray backend.
    "dags": ["tests/integration/test_dags_local.py"],
    # The trigger and the Jobs API paths against a real local Ray head (its version: the venv's ray).
    "local-ray": ["tests/integration/test_trigger_local_ray.py", "tests/integration/test_trigger_raw_log_local.py"],
    # The KubeRay tests on the control plane (its operator: the leg's KubeRay version).
    "kuberay": [
        "tests/kube",
        "tests/integration/test_kuberay.py",
        "tests/integration/test_rayjob_kuberay.py",
        "tests/integration/test_decorator_kuberay.py",
        "tests/integration/test_run_cluster_kuberay.py",
        "tests/integration/test_rbac.py",
    ],
}


@dataclass(frozen=True)
class Leg:
    """One installation and the suites run on it."""

    name: str
    airflow: str
    ray: str = DEFAULT_RAY
    kuberay: str | None = None  # None: no control plane
    suites: tuple[str, ...] = ("unit", "dags", "local-ray")

    @property
    def airflow_step(self) -> list[str]:
        """uv pip arguments of the first install: Airflow as on its release day."""
        return ["--exclude-newer", installed_as_of(self.airflow), f"apache-airflow=={self.airflow}"]

    @property
    def provider_step(self) -> list[str]:
        """uv pip arguments of the second: the provider (its [test] extra follows) and the Ray head."""
        return [f"apache-airflow=={self.airflow}", f"ray[default]=={self.ray}"]


def legs(airflow: list[str] | None = None, ray: list[str] | None = None, kuberay: list[str] | None = None) -> list[Leg]:
    """Every Airflow version with the newest Ray; every other Ray head and every KubeRay operator with
    the newest Airflow (the Ray and KubeRay legs run only the suites those versions change)."""
    airflows = AIRFLOW_VERSIONS if airflow is None else airflow
    newest = AIRFLOW_VERSIONS[-1]
    chosen = [Leg(f"airflow-{version}", version) for version in airflows]
    for version in RAY_VERSIONS if ray is None else ray:
        if version != DEFAULT_RAY or newest not in airflows:
            chosen.append(Leg(f"ray-{version}", newest, ray=version, suites=("local-ray",)))
    for version in KUBERAY_VERSIONS if kuberay is None else kuberay:
        chosen.append(Leg(f"kuberay-{version}", newest, kuberay=version, suites=("kuberay",)))
    return chosen


# ---- results ----------------------------------------------------------------------------------------


@dataclass
class SuiteResult:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)  # test ids, then the first line of each message
    note: str = ""  # why the suite did not run, or failed before any test

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.note and self.passed > 0

    def cell(self) -> str:
        if self.note:
            return f"not run: {self.note}"
        text = f"{self.passed} passed"
        if self.failed:
            text += f", **{self.failed} failed**"
        if self.skipped:
            text += f", {self.skipped} skipped"
        return text


def summarise_junit(xml_text: str) -> SuiteResult:
    """Counts and failing test ids from pytest's ``--junitxml`` output."""
    root = ElementTree.fromstring(xml_text)
    result = SuiteResult()
    for suite in root.iter("testsuite"):
        result.seconds += float(suite.get("time", 0))
        for case in suite.iter("testcase"):
            test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
            problem = case.find("failure")
            if problem is None:
                problem = case.find("error")
            if problem is not None:
                result.failed += 1
                message = (problem.get("message") or "").strip().splitlines()
                result.failures.append(f"{test_id}: {message[0][:300] if message else problem.tag}")
            elif case.find("skipped") is not None:
                result.skipped += 1
            else:
                result.passed += 1
    return result


def markdown(run: dict[str, Any]) -> str:
    """The results table (docs/compatibility.md shows it; benchmarks/results keeps each run's)."""
    suites = [name for name in SUITES if any(name in leg["suites"] for leg in run["legs"])]
    lines = [
        f"Compatibility run of {run['date']} (`{run['command']}`, {run['machine']}; {run['minutes']:.0f} min).",
        "",
        "| leg | Airflow | task SDK | cncf-kubernetes | common-compat | Ray | KubeRay | " + " | ".join(suites) + " |",
        "|---|---|---|---|---|---|---|" + "---|" * len(suites),
    ]
    for leg in run["legs"]:
        versions = leg["installed"]
        cells = [leg["suites"][name]["cell"] if name in leg["suites"] else "-" for name in suites]
        lines.append(
            f"| {leg['name']} | {versions.get('apache-airflow', '?')} | {versions.get('apache-airflow-task-sdk', '?')}"
            f" | {versions.get('apache-airflow-providers-cncf-kubernetes', '?')}"
            f" | {versions.get('apache-airflow-providers-common-compat', '?')} | {versions.get('ray', '?')}"
            f" | {leg['kuberay'] or '-'} | " + " | ".join(cells) + " |"
        )
    failures = [
        (leg["name"], name, f) for leg in run["legs"] for name, s in leg["suites"].items() for f in s["failures"]
    ]
    if failures:
        lines += ["", "Failures:", ""]
        lines += [f"- {leg} / {suite}: `{failure}`" for leg, suite, failure in failures]
    lines += [
        "",
        "Each leg installs Airflow as on its release day (`uv pip install --exclude-newer <day after>`, what its",
        "constraint files pin), then the provider and the Ray head by pip's rules (tests/compat/matrix.py).",
    ]
    return "\n".join(lines) + "\n"
