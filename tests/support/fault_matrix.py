"""The fault matrix's record: one row per scenario (expected, observed, leaks, duplicate jobs, seconds).

Every test in ``tests/faults`` takes the ``scenario`` fixture, says what it expects, and records what it
observed. The session prints the rows as a table and writes ``test-output/fault-matrix.{json,md}``; a
row whose test failed says so in its ``result`` column (``make faults`` prints the same table).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.support import output_dir


@dataclass
class Scenario:
    """One row. ``leaks`` lists what was left behind (empty is the goal); ``jobs`` counts Ray job
    submissions seen for the task (None where the scenario submits nothing)."""

    number: str
    name: str
    expected: str = ""
    observed: str = ""
    leaks: list[str] = field(default_factory=list)
    jobs: int | None = None
    seconds: float = 0.0
    result: str = "not run"
    details: dict[str, Any] = field(default_factory=dict)
    _started: float = field(default_factory=time.monotonic, repr=False)

    def expect(self, text: str) -> None:
        self.expected = text

    def observe(self, text: str, **details: Any) -> None:
        self.observed = text
        self.details.update(details)

    def finish(self, passed: bool) -> None:
        self.seconds = round(time.monotonic() - self._started, 1)
        self.result = "pass" if passed else "FAIL"


ROWS: list[Scenario] = []


def markdown(rows: list[Scenario]) -> str:
    head = "| # | scenario | expected | observed | leaks | Ray jobs | seconds | result |\n|---|---|---|---|---|---|---|---|"
    lines = [head]
    for r in rows:
        cells = [
            r.number,
            r.name,
            r.expected,
            r.observed,
            ", ".join(r.leaks) or "none",
            "-" if r.jobs is None else str(r.jobs),
            f"{r.seconds:.1f}",
            r.result,
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines)


def write(rows: list[Scenario]) -> Path:
    out = output_dir()
    ordered = sorted(rows, key=lambda r: _order(r.number))
    data = [{k: v for k, v in asdict(r).items() if not k.startswith("_")} for r in ordered]
    (out / "fault-matrix.json").write_text(json.dumps(data, indent=2, default=str))
    (out / "fault-matrix.md").write_text(markdown(ordered) + "\n")
    return out / "fault-matrix.md"


def _order(number: str) -> tuple[int, int, str]:
    """1, 2, ... 9a, 9b, ... 14, then S1..., then B."""
    digits = "".join(c for c in number if c.isdigit())
    return (0 if number[:1].isdigit() else 1 if number.startswith("S") else 2, int(digits or 0), number)


def compact(data: list[dict[str, Any]], width: int = 110) -> str:
    """The docs' version of the table (docs/reliability.md): shorter observations, same columns."""
    rows = [Scenario(**{k: v for k, v in row.items() if k in Scenario.__dataclass_fields__}) for row in data]
    for row in rows:
        if len(row.observed) > width:
            row.observed = row.observed[: width - 3].rstrip() + "..."
    return markdown(rows)


if __name__ == "__main__":  # python -m tests.support.fault_matrix: the last run's table, for docs/reliability.md
    print(compact(json.loads((output_dir() / "fault-matrix.json").read_text())))
