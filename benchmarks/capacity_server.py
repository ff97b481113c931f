"""The load generator of the trigger capacity benchmark: a fake Ray 2.60 Jobs API on 127.0.0.1.

A thin wrapper: the server lives in :mod:`tests.support.recorded_ray` (:class:`FakeRayDashboard`), where
the trigger's unit tests use it as a test double too, with the bodies recorded from a real Ray 2.60
dashboard (``tests/support/recorded/ray-2.60``, made by :mod:`benchmarks.record_ray_shapes`). Jobs are
RUNNING from submission and flip to SUCCEEDED at a scheduled instant (seeded, the same for every
implementation); the WebSocket log tail replays Ray's tail loop (closes 2-4 s after the job ends).

It runs in its own process (``python -m benchmarks.capacity_server``) so its CPU is not charged to the
triggers; it prints ``{"port": N}`` on stdout once it listens. ``/bench/*`` are control endpoints for
the harness, not part of Ray's API.
"""

from __future__ import annotations

from tests.support.recorded_ray import (
    RECORDED,
    FakeRayDashboard,
    Job,
    Schedule,
    load_recorded,
    make_app,
    serve,
)
from tests.support.recorded_ray import main as _main

__all__ = ["RECORDED", "FakeRayDashboard", "Job", "Schedule", "load_recorded", "main", "make_app", "serve"]


def main(argv: list[str] | None = None) -> None:
    _main(argv, description=__doc__.split("\n")[0])


if __name__ == "__main__":
    main()
