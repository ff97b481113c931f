"""Fault matrix row B: the bad-input catalogue through the real path.

Parse cases go through a real DagBag (what the dag-processor shows as the DAG file's import error); run
cases are tasks of one real DAG run (``dag.test()``: real task instances, the real in-process execution
API, real connections from ``AIRFLOW_CONN_*``), as the ``airflow-flyray`` service account of
docker/rbac.yaml whose Kubernetes traffic goes through a recording ApiProxy. Every case must fail with
a message naming the field and what is expected, and nothing may be created: the proxy sees zero
mutating requests, and the namespaces hold the same objects before and after.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client

from tests.infra.kube.api_proxy import ApiProxy
from tests.support import bad_inputs, leftovers, output_dir
from tests.support.bad_inputs import CASES, DAG_ID
from tests.support.tenants import provider_tenant

pytestmark = [pytest.mark.kube, pytest.mark.airflow]

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


@dataclass
class Env:
    namespace: str
    other: str
    proxy: ApiProxy
    good_extra: dict
    dags: Path
    core: client.CoreV1Api
    custom: client.CustomObjectsApi


@pytest.fixture(scope="module")
def env(kube_control_plane, tmp_path_factory) -> Iterator[Env]:
    home = tmp_path_factory.mktemp("bad-inputs")
    with provider_tenant(kube_control_plane, home, "flyray-bad", other=True, through_proxy=True) as tenant:
        dags = home / "dags"
        dags.mkdir()
        (dags / "bad_run.py").write_text(bad_inputs.dag_file(None))
        for case in CASES:
            if case.kind == "parse":
                (dags / f"bad_parse_{case.task_id}.py").write_text(bad_inputs.dag_file(case))
        yield Env(
            namespace=tenant.namespace,
            other=tenant.other,
            proxy=tenant.proxy,
            good_extra={
                "kube_config_path": tenant.kubeconfig,
                "namespace": tenant.namespace,
                "dashboard_access": "pod",
            },
            dags=dags,
            core=tenant.core,
            custom=tenant.custom,
        )


def inventory(env: Env) -> set[str]:
    """Everything in the two namespaces that the provider could create or that a create would bring."""
    found: set[str] = set()
    for ns in (env.namespace, env.other):
        items = env.custom.list_namespaced_custom_object("ray.io", "v1", ns, "rayclusters")["items"]
        found |= {f"{ns}/raycluster/{c['metadata']['name']}" for c in items}
        found |= {f"{ns}/pod/{p.metadata.name}" for p in env.core.list_namespaced_pod(ns).items}
        found |= {f"{ns}/service/{s.metadata.name}" for s in env.core.list_namespaced_service(ns).items}
        found |= {f"{ns}/secret/{s.metadata.name}" for s in env.core.list_namespaced_secret(ns).items}
    return found


def one_line(error: object) -> str:
    text = str(error).strip().splitlines()
    # An import error is a traceback: its last line is the exception.
    return (text[-1] if text else "").strip()


@pytest.mark.scenario("B", "bad-input catalogue")
def test_bad_inputs_are_refused_before_anything_is_created(env, scenario, airflow_db, monkeypatch, capsys):
    from airflow.dag_processing.dagbag import DagBag

    scenario.expect(
        f"each of {len(CASES)} malformed inputs (config, names, quantities, templates, connection, RBAC) fails "
        "naming the field and what is expected; 0 mutating API requests; nothing created"
    )
    before = inventory(env)
    started = time.monotonic()
    for key, value in bad_inputs.connections(env.good_extra).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FLYRAY_BAD_OTHER_NS", env.other)
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(env.dags))
    from airflow import settings

    monkeypatch.setattr(settings, "DAGS_FOLDER", str(env.dags))  # dag.test() syncs this bundle to the DB

    # Parse: the dag-processor's view of each DAG file.
    bag = DagBag(dag_folder=str(env.dags))
    errors = {Path(path).name: text for path, text in bag.import_errors.items()}
    assert DAG_ID in bag.dags, f"the run DAG must parse: {errors.get('bad_run.py')}"
    messages: dict[str, str] = {}
    for case in CASES:
        if case.kind == "parse":
            messages[case.id] = one_line(errors.get(f"bad_parse_{case.task_id}.py", "parsed without an error"))

    # Run: one real DAG run, one task per case.
    bad_inputs.FAILURES.clear()
    run = bag.dags[DAG_ID].test()
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    for case in CASES:
        if case.kind == "run":
            error = bad_inputs.FAILURES.get(case.task_id, f"no failure recorded (state {states.get(case.task_id)})")
            messages[case.id] = one_line(error)
    seconds = time.monotonic() - started

    mutating = [f"{r.method} {r.path}" for r in env.proxy.records if r.method in MUTATING]
    reads = [f"{r.method} {r.path}" for r in env.proxy.records if r.method not in MUTATING]
    after = inventory(env)
    leaks = leftovers.leftovers(env.core, env.custom, env.namespace, "", timeout=0)
    leaks += sorted(after - before)
    scenario.leaks = leaks

    rows = []
    refused = 0
    for case in CASES:
        message = messages[case.id]
        ok = case.field in message and case.expected in message
        if case.kind == "run":
            ok = ok and str(states.get(case.task_id)) == "failed"
        refused += ok
        rows.append((case.id, case.kind, case.field, "ok" if ok else "MISSING", message))
    table = "\n".join(
        [f"{'case':26} {'kind':5} {'field':40} {'check':7} message", "-" * 140]
        + [f"{cid:26} {kind:5} {field:40} {ok:7} {message[:300]}" for cid, kind, field, ok, message in rows]
    )
    with capsys.disabled():
        print(f"\n\nbad-input catalogue ({len(CASES)} cases, {seconds:.1f}s):\n{table}\n")
        print(f"Kubernetes requests through the proxy: {len(reads)} reads, {len(mutating)} mutating")
    (output_dir() / "bad-inputs.txt").write_text(table + "\n")

    scenario.observe(
        f"{refused}/{len(CASES)} refused before any create, each naming the field and what is expected; "
        f"{len(mutating)} mutating API requests ({len(reads)} reads); {len(after - before)} new objects",
        cases=[{"case": r[0], "kind": r[1], "field": r[2], "check": r[3], "message": r[4]} for r in rows],
        reads=reads,
    )
    assert not mutating, mutating
    assert after == before, sorted(after ^ before)
    assert not leaks, leaks
    missing = [r for r in rows if r[3] != "ok"]
    assert not missing, "\n".join(f"{r[0]}: expected {r[2]!r} in {r[4]!r}" for r in missing)
    assert len(CASES) >= 30
