"""Test infrastructure, kept apart from the tests: the KubeRay control plane (``tests.infra.kube``,
``python -m tests.infra.kube build|up|down|status``) and a real Airflow stack (``tests.infra.stack``,
``python -m tests.infra.stack demo``). The tests' own helpers build on these in ``tests.support``."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
