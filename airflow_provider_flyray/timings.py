"""Where a task's time went: named milestones (epoch seconds), carried worker -> trigger -> worker.

The operator marks ``execute_started`` and ``deferred``, the trigger adds ``trigger_started``,
``cluster_ready``, ``submitted`` and ``event``, ``execute_complete`` adds ``resumed`` and ``finished``
and writes them all as one ``flyray timings {json}`` line (the benchmarks read it). Nothing else in the
package keeps clocks for reporting.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

LOG_PREFIX = "flyray timings"


class Timings:
    """A task's milestones, by name, in epoch seconds (see the module docstring)."""

    def __init__(self, earlier: Mapping[str, float] | None = None) -> None:
        self._marks: dict[str, float] = dict(earlier or {})

    def mark(self, milestone: str, at: float | None = None) -> float:
        self._marks[milestone] = time.time() if at is None else at
        return self._marks[milestone]

    def since(self, milestone: str) -> float:
        """Seconds since ``milestone`` (0 when it was never marked)."""
        start = self._marks.get(milestone)
        return 0.0 if start is None else time.time() - start

    def to_dict(self) -> dict[str, float]:
        return dict(self._marks)

    def log_line(self, job_start_ms: Any = None, job_end_ms: Any = None) -> str:
        """The one machine-readable line, with the job's own start and end (Ray reports milliseconds)."""
        marks = dict(self._marks)
        for key, value in (("job_start_time", job_start_ms), ("job_end_time", job_end_ms)):
            if value:
                marks[key] = value / 1000
        return f"{LOG_PREFIX} {json.dumps(marks, sort_keys=True)}"
