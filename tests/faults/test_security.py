"""Fault matrix rows S1-S4: secrets, Ray token auth, TLS verification, namespace scope.

One real Airflow stack (api-server, scheduler, dag-processor, triggerer) runs the DAGs of
tests/faults/dags/flyray_security_dags.py on the control plane as the ``airflow-flyray`` service account
(docker/rbac.yaml), its Kubernetes traffic through a recording ApiProxy. The Ray heads run with token
authentication (``RAY_AUTH_MODE=token``, the token from a Kubernetes Secret), and the connection's
``dashboard_token`` is a canary, as is the service-account token in the kubeconfig.

Connection-field masking is switched off in the stack (``hide_sensitive_var_conn_fields = False``), so a
canary the provider emitted would appear in clear in the logs; the metadata DB is scanned raw as well.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import ipaddress
import json
import os
import re
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from airflow_provider_flyray.backends.address import AddressBackend
from airflow_provider_flyray.backends.local_process import start_local_cluster, stop_local_cluster
from airflow_provider_flyray.cluster import ClusterRef
from airflow_provider_flyray.errors import TLSVerificationError
from airflow_provider_flyray.hooks.ray_cluster import RayClusterHook
from airflow_provider_flyray.naming import TaskIdentity
from tests.infra.postgres import PostgresServer
from tests.infra.stack import AirflowStack
from tests.support import REPO, leftovers, tenants
from tests.support.airflow_runs import airflow_stack
from tests.support.job_counter import JobCounter
from tests.support.ray_jobs import run_trigger
from tests.support.tenants import flyray_conn, provider_tenant, write_kubeconfig
from tests.support.waits import wait_for_dashboard

pytestmark = [pytest.mark.kube, pytest.mark.airflow, pytest.mark.ray]

DAGS = REPO / "tests" / "faults" / "dags" / "flyray_security_dags.py"
TOKEN_SECRET = "ray-dashboard-token"


@dataclass
class Tenant(tenants.Tenant):
    """The service account's tenant (``token``: canary 2; ``kubeconfig`` through the recording proxy) and
    the Ray token-auth Secret's token."""

    dashboard_token: str = ""  # canary 1


@dataclass
class Run:
    dag_id: str
    run_id: str
    state: str
    seconds: float
    log: str
    cluster: str | None = None
    probe: dict[str, int] = field(default_factory=dict)
    triggers: list[tuple[str, str]] = field(default_factory=list)  # (classpath, stored kwargs) while deferred


@pytest.fixture(scope="module")
def tenant(kube_control_plane, tmp_path_factory) -> Iterator[Tenant]:
    workdir = tmp_path_factory.mktemp("sec")
    with provider_tenant(kube_control_plane, workdir, "flyray-sec", through_proxy=True) as base:
        dashboard_token = f"flyray-canary-{uuid.uuid4()}"
        base.core.create_namespaced_secret(
            base.namespace,
            {
                "metadata": {"name": TOKEN_SECRET},
                "data": {"auth_token": base64.b64encode(dashboard_token.encode()).decode()},
            },
        )
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
        yield Tenant(**fields, dashboard_token=dashboard_token)


@pytest.fixture(scope="module")
def stack(tenant, tmp_path_factory, metadata_db) -> Iterator[AirflowStack]:
    home = tmp_path_factory.mktemp("airflow-sec")
    env = {
        "AIRFLOW_CONN_RAY_SEC": tenant.conn("pod", dashboard_token=tenant.dashboard_token),
        "AIRFLOW_CONN_RAY_SEC_WRONG": tenant.conn("pod", dashboard_token=f"wrong-{uuid.uuid4()}"),
        "AIRFLOW_CONN_RAY_SEC_PROXY": tenant.conn("proxy", namespace="default", dashboard_token=tenant.dashboard_token),
        "FLYRAY_SEC_NAMESPACE": tenant.namespace,
        "FLYRAY_SEC_SHIP_DIR": str(ship_tree(tmp_path_factory.mktemp("ship") / "project")),
        "FLYRAY_SEC_SHIP_CLUSTER": SHIP_CLUSTER,
        # No masking of connection fields: a canary the provider logged would show in clear.
        "AIRFLOW__CORE__HIDE_SENSITIVE_VAR_CONN_FIELDS": "False",
    }
    with airflow_stack(home, [DAGS], env, metadata_db) as stack:
        yield stack


SHIP_CLUSTER = "sec-ship-existing"


def ship_tree(root: Path) -> Path:
    """The working_dir the shipping DAGs send: a token unique to this session (no cluster has it)."""
    root.mkdir(parents=True)
    (root / "main.py").write_text(f"print('FLYRAY_RESULT shipped', {uuid.uuid4().hex!r})\n")
    return root


def db_rows(stack: AirflowStack, sql: str) -> list[tuple[Any, ...]]:
    """Rows of the stack's metadata DB (PostgreSQL, tests/infra/postgres.py), read outside Airflow."""
    assert stack.database_url, "the security stack keeps its metadata in PostgreSQL"
    dsn = stack.database_url.replace("postgresql+psycopg2://", "postgresql://", 1)
    with contextlib.closing(psycopg2.connect(dsn, connect_timeout=10)) as db:
        db.autocommit = True
        with db.cursor() as cursor:
            cursor.execute(sql)
            return list(cursor.fetchall())


def raw_db_files(postgres: PostgresServer, stack: AirflowStack) -> list[Path]:
    """The files that hold the stack's database on disk: its heap files and the server's WAL."""
    database = (stack.database_url or "").rsplit("/", 1)[-1]
    ((oid,),) = db_rows(stack, f"SELECT oid FROM pg_database WHERE datname = '{database}'")
    return sorted(
        p for d in (postgres.data / "base" / str(oid), postgres.data / "pg_wal") for p in d.iterdir() if p.is_file()
    )


def probe_auth(pod_ip: str, token: str) -> dict[str, int]:
    """What the head's dashboard answers without a token, with a wrong one and with the right one."""
    out: dict[str, int] = {}
    for name, headers in (
        ("none", {}),
        ("wrong", {"Authorization": "Bearer not-the-token"}),
        ("right", {"Authorization": f"Bearer {token}"}),
    ):
        request = urllib.request.Request(f"http://{pod_ip}:8265/api/version", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=3) as answer:
                out[name] = answer.status
        except urllib.error.HTTPError as exc:
            out[name] = exc.code
    return out


def run_dag(stack: AirflowStack, tenant: Tenant, dag_id: str, timeout: float = 300) -> Run:
    """Trigger a DAG and follow it: sample the stored trigger while deferred, probe the head's auth."""
    started = time.monotonic()
    run_id = stack.trigger(dag_id)
    result = Run(dag_id, run_id, "", 0.0, "")
    seen: set[str] = set()
    while True:
        state = stack.run_state(dag_id, run_id)
        with contextlib.suppress(psycopg2.Error):
            for classpath, kwargs in db_rows(stack, "SELECT classpath, kwargs FROM trigger"):
                if kwargs not in seen:
                    seen.add(kwargs)
                    result.triggers.append((classpath, kwargs))
        clusters = leftovers.managed_clusters(tenant.custom, tenant.namespace, f"dag_id={dag_id}")
        if clusters:
            result.cluster = clusters[0]["metadata"]["name"]
            pod = leftovers.head_pod(tenant.core, tenant.namespace, result.cluster)
            if not result.probe and pod is not None and pod.status.pod_ip:
                with contextlib.suppress(OSError):
                    result.probe = probe_auth(pod.status.pod_ip, tenant.dashboard_token)
        if state in ("success", "failed"):
            break
        assert time.monotonic() - started < timeout, f"{dag_id} still {state}"
        time.sleep(0.5)
    result.state = state
    result.seconds = time.monotonic() - started
    result.log = stack.task_log(dag_id, run_id, "job")
    return result


@pytest.fixture(scope="module")
def runs(stack, tenant) -> Iterator[dict[str, Run]]:
    """The three runs every row looks at, one after the other (2 shared cores): right token (pod IP),
    wrong token, right token through the API server's service proxy."""
    with JobCounter(
        tenant.core, tenant.custom, tenant.namespace, headers={"Authorization": f"Bearer {tenant.dashboard_token}"}
    ) as counter:
        out = {
            dag_id: run_dag(stack, tenant, dag_id) for dag_id in ("sec_token_ok", "sec_token_wrong", "sec_token_proxy")
        }
    for dag_id, run in out.items():
        run.probe.setdefault("jobs", len(counter.jobs_for(dag_id)))
    yield out


# ---- S2 -------------------------------------------------------------------------------------------


@pytest.mark.scenario("S2", "Ray token auth (KubeRay 1.5: env from a Secret)")
def test_token_auth_end_to_end(runs, tenant, scenario):
    scenario.expect(
        "head started with RAY_AUTH_MODE=token (token from a Secret via secretKeyRef) refuses requests without "
        "(401) or with a wrong token (403); the right dashboard_token runs the job (pod IP: Authorization, "
        "proxy: X-Ray-Authorization); a wrong one fails the task naming 403 and dashboard_token; nothing left"
    )
    ok, wrong, proxied = runs["sec_token_ok"], runs["sec_token_wrong"], runs["sec_token_proxy"]
    leaks = leftovers.leftovers(tenant.core, tenant.custom, tenant.namespace, "", timeout=60)
    scenario.leaks = leaks
    scenario.jobs = sum(r.probe.get("jobs", 0) for r in runs.values())
    failure = next((line for line in wrong.log.splitlines() if "HTTP 403" in line), "")
    scenario.observe(
        f"auth probe {ok.probe.get('none')}/{ok.probe.get('wrong')}/{ok.probe.get('right')} "
        f"(none/wrong/right); right token: {ok.state} in {ok.seconds:.0f}s (pod IP), "
        f"{proxied.state} in {proxied.seconds:.0f}s (API-server proxy); wrong token: {wrong.state} in "
        f"{wrong.seconds:.0f}s: {failure.strip()[:200]}",
        probe=ok.probe,
    )
    assert ok.probe.get("none") == 401 and ok.probe.get("wrong") == 403 and ok.probe.get("right") == 200, ok.probe
    assert ok.state == "success", ok.log[-3000:]
    assert "FLYRAY_RESULT token auth ok, nodes: 1" in ok.log, ok.log[-3000:]
    assert proxied.state == "success", proxied.log[-3000:]
    assert "FLYRAY_RESULT token auth ok" in proxied.log, proxied.log[-3000:]
    assert wrong.state == "failed"
    assert "HTTP 403" in wrong.log and "dashboard_token" in wrong.log, wrong.log[-3000:]
    assert runs["sec_token_wrong"].probe.get("jobs") == 0  # refused before any submission
    assert runs["sec_token_ok"].probe.get("jobs") == 1 and runs["sec_token_proxy"].probe.get("jobs") == 1
    assert not leaks, leaks


# ---- S4 -------------------------------------------------------------------------------------------


@pytest.mark.scenario("S4", "namespace scope of every Kubernetes request")
def test_every_request_is_scoped_to_the_namespace(runs, tenant, scenario):
    scenario.expect(
        "every Kubernetes request of the 3 runs (worker, triggerer, dashboard through the service proxy) is under "
        "/namespaces/<task namespace>/; none cluster-wide, none in the connection's 'default'"
    )
    prefix = re.compile(rf"^/(api/v1|apis/ray\.io/v1)/namespaces/{re.escape(tenant.namespace)}/")
    records = list(tenant.proxy.records)
    outside = sorted({f"{r.method} {r.path.split('?')[0]}" for r in records if not prefix.match(r.path)})
    kinds = tenant.proxy.counts()
    verbs = sorted({r.method for r in records})
    scenario.observe(
        f"{len(records)} requests ({kinds['kube']} kube, {kinds['watch']} watch, {kinds['dashboard']} dashboard "
        f"via service proxy; verbs {verbs}); {len(outside)} outside /namespaces/{tenant.namespace}/",
        outside=outside,
    )
    assert records and kinds["dashboard"] > 0 and kinds["watch"] > 0, kinds
    assert not outside, outside


# ---- S1 -------------------------------------------------------------------------------------------


def db_fernet(stack: AirflowStack) -> Fernet | None:
    text = (stack.home / "airflow.cfg").read_text()
    match = re.search(r"^fernet_key[ \t]*=[ \t]*(\S+)[ \t]*$", text, re.MULTILINE)
    return Fernet(match.group(1).encode()) if match else None


def find(canaries: dict[str, str], text: str) -> list[str]:
    return [name for name, value in canaries.items() if value in text]


@pytest.mark.scenario("S1", "canary secrets never stored or logged")
def test_canaries_never_leak(runs, stack, tenant, scenario, postgres):
    canaries = {"dashboard_token": tenant.dashboard_token, "kube token": tenant.token}
    scenario.expect(
        "after a successful and a failing (403) run, neither canary (dashboard_token, service-account token) is in "
        "task logs (API + files), component logs, XCom, rendered fields, trigger kwargs (stored and decrypted), "
        "task failure messages or anywhere in the metadata DB"
    )
    # The scanner sees a canary where there is one (control).
    assert find(canaries, Path(tenant.kubeconfig).read_text()) == ["kube token"]
    assert find(canaries, str(runs["sec_token_ok"].probe)) == []
    hits: dict[str, list[str]] = {}
    places = 0

    def scan(place: str, text: str) -> None:
        nonlocal places
        places += 1
        if found := find(canaries, text):
            hits[place] = found

    masked = encrypted_rows = 0
    for run in runs.values():
        scan(f"task log (API) {run.dag_id}", run.log)
        masked += run.log.count("***")
        base = f"/api/v2/dags/{run.dag_id}/dagRuns/{run.run_id}/taskInstances/job"
        ti = stack.api("GET", base)
        scan(f"task instance + rendered fields (API) {run.dag_id}", json.dumps(ti))
        assert ti["rendered_fields"], ti  # the rendered template fields are there, and scanned
        scan(f"XCom (API) {run.dag_id}", json.dumps(stack.api("GET", base + "/xcomEntries")))
        for key in ("return_value",):
            with contextlib.suppress(urllib.error.HTTPError):
                scan(f"XCom {key} {run.dag_id}", json.dumps(stack.xcom(run.dag_id, run.run_id, "job", key)))
        fernet = db_fernet(stack)
        assert run.triggers, f"no trigger row seen while {run.dag_id} was deferred"
        for classpath, stored in run.triggers:
            assert classpath.endswith("RayJobTrigger")
            scan(f"trigger kwargs (stored) {run.dag_id}", stored)
            # As Trigger._decrypt_kwargs: Fernet-encrypted, or plain JSON on some write paths.
            encrypted = not stored.startswith("{")
            encrypted_rows += encrypted
            plain = fernet.decrypt(stored.encode()).decode() if encrypted and fernet else stored
            assert "ray_conn_id" in plain and run.dag_id in plain  # really decrypted
            scan(f"trigger kwargs (decrypted) {run.dag_id}", plain)
    scan("event log (API)", json.dumps(stack.api("GET", "/api/v2/eventLogs?limit=1000")))
    files = [p for p in (stack.home / "logs").rglob("*") if p.is_file()]
    for path in files:
        scan(f"file {path.relative_to(stack.home)}", path.read_text(errors="replace"))
    public = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    tables = [row[0] for row in db_rows(stack, f"{public} AND table_type = 'BASE TABLE'")]
    assert "trigger" in tables and "xcom" in tables, tables
    for table in tables:
        scan(f"DB table {table}", "\n".join(map(repr, db_rows(stack, f'SELECT * FROM "{table}"'))))
    # What a copy of the database holds: its dump, and its files on disk (heap and WAL).
    scan("DB dump (pg_dump)", postgres.dump((stack.database_url or "").rsplit("/", 1)[-1]))
    raw_files = raw_db_files(postgres, stack)
    assert raw_files, "no file of the database found on disk"
    for path in raw_files:
        scan(f"raw DB file {path.relative_to(postgres.data)}", path.read_bytes().decode("latin-1"))
    wrong = runs["sec_token_wrong"]
    failure = [line for line in wrong.log.splitlines() if "HTTP 403" in line]
    scenario.observe(
        f"{len(hits)} of {places} places hold a canary ({len(files)} log files, {len(tables)} DB tables, its dump and "
        f"{len(raw_files)} raw DB files, {sum(len(r.triggers) for r in runs.values())} trigger rows ({encrypted_rows} Fernet-encrypted) stored "
        f"+ decrypted, task logs/XCom/"
        f"rendered fields of 3 runs); masking off, {masked} '***' in task logs",
        hits=hits,
    )
    assert failure, wrong.log[-3000:]  # the failure message itself was scanned (task log, files)
    assert masked == 0  # nothing was hidden by Airflow's masker: the logs scanned are the raw output
    assert not hits, hits


# ---- S3 -------------------------------------------------------------------------------------------


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert, key): a CA nobody trusts."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class TlsTerminator:
    """HTTPS on 127.0.0.1 in front of a plain-HTTP server: bytes piped both ways (HTTP and WebSocket)."""

    def __init__(self, upstream_port: int, cert: Path, key: Path) -> None:
        self.upstream_port = upstream_port
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="tls-terminator")

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(Exception):
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    def __enter__(self) -> TlsTerminator:
        self.thread.start()
        server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.context), self.loop
        ).result(10)
        self.server = server
        self.port = server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def close() -> None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


LIST_CLUSTERS = """
import sys
from airflow_provider_flyray.hooks.ray_cluster import RayClusterHook
print("RAYCLUSTERS", RayClusterHook("ray_sec_kube_ca").list_clusters(sys.argv[1], ""))
"""


def trigger_event(conn_id: str, ref: ClusterRef, entrypoint: str, timeout: float = 120) -> dict[str, Any]:
    """A job of a task of its own (owner key ``sec|tls|<hex>|-1``), the cluster given 60 s to answer."""
    identity = TaskIdentity("sec", "tls", uuid.uuid4().hex)
    return run_trigger(conn_id, ref, identity, entrypoint, timeout=timeout, startup_timeout=60)


@pytest.mark.scenario("S3", "TLS verification on unless turned off")
def test_tls_is_verified_unless_turned_off(tenant, scenario, monkeypatch, tmp_path):
    scenario.expect(
        "a Ray dashboard over HTTPS with a self-signed cert is refused at once with a certificate error naming "
        "verify_tls; with verify_tls: false the job runs; a kubeconfig whose CA does not match the API server "
        "fails at once naming the certificate and disable_verify_ssl, worker and triggerer alike"
    )
    cert, key = self_signed(tmp_path, "dashboard")
    monkeypatch.setenv("AIRFLOW_CONN_RAY_SEC_TLS", flyray_conn())
    monkeypatch.setenv("AIRFLOW_CONN_RAY_SEC_TLS_OFF", flyray_conn(verify_tls=False))
    head = start_local_cluster(f"sec-tls-{uuid.uuid4().hex[:6]}", num_cpus=1, object_store_memory=100_000_000)
    try:
        wait_for_dashboard(head.address)
        upstream_port = int(head.address.rsplit(":", 1)[1])
        with TlsTerminator(upstream_port, cert, key) as tls:
            ref = AddressBackend.ref_for(f"https://127.0.0.1:{tls.port}")
            started = time.monotonic()
            refused = trigger_event("ray_sec_tls", ref, "echo never")
            refused_after = time.monotonic() - started
            worked = trigger_event("ray_sec_tls_off", ref, "echo FLYRAY_RESULT over https")
    finally:
        stop_local_cluster(head)

    # The kube side: the API server's certificate against a CA that did not sign it.
    other_ca, _ = self_signed(tmp_path, "other-ca")
    kubeconfig = write_kubeconfig(
        tmp_path / "untrusted.kubeconfig", "https://127.0.0.1:6443", str(other_ca), tenant.token, tenant.namespace
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_RAY_SEC_KUBE_CA",
        flyray_conn(kube_config_path=str(kubeconfig), namespace=tenant.namespace),
    )
    started = time.monotonic()
    with pytest.raises(TLSVerificationError) as kube_refused:
        RayClusterHook("ray_sec_kube_ca").list_clusters(tenant.namespace, "")
    kube_after = time.monotonic() - started
    ref = ClusterRef("raycluster", name="sec-tls-nothing", namespace=tenant.namespace, owned=True)
    trigger_refused = trigger_event("ray_sec_kube_ca", ref, "echo never", timeout=60)
    # The opt-out, in a subprocess: KubernetesHook turns verification off process-wide.
    opt_out = flyray_conn(kube_config_path=str(kubeconfig), namespace=tenant.namespace, disable_verify_ssl=True)
    listed = subprocess.run(
        [sys.executable, "-c", LIST_CLUSTERS, tenant.namespace],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "AIRFLOW_CONN_RAY_SEC_KUBE_CA": opt_out},
    )

    scenario.observe(
        f"dashboard: refused in {refused_after:.1f}s ({refused['reason'][:160]}); verify_tls false: "
        f"{worked['status']}; kube API with an untrusted CA: worker refused in {kube_after:.1f}s, triggerer "
        f"{trigger_refused['status']} ({str(kube_refused.value)[:160]}); disable_verify_ssl true: "
        f"{'listed' if listed.returncode == 0 else 'failed'}",
    )
    assert refused["status"] == "error", refused
    assert "certificate" in refused["reason"].lower() and "verify_tls" in refused["reason"], refused["reason"]
    assert refused_after < 15, refused_after  # not retried until the startup deadline
    assert worked["status"] == "success", worked
    assert any("FLYRAY_RESULT over https" in line for line in worked["log_tail"]), worked["log_tail"]
    message = str(kube_refused.value)
    assert "certificate" in message.lower() and "disable_verify_ssl" in message and "list RayClusters" in message
    assert kube_after < 10, kube_after
    assert trigger_refused["status"] == "error" and "disable_verify_ssl" in trigger_refused["reason"], trigger_refused
    assert listed.returncode == 0 and "RAYCLUSTERS []" in listed.stdout, listed.stdout[-2000:] + listed.stderr[-2000:]
    scenario.leaks = leftovers.leftovers(tenant.core, tenant.custom, tenant.namespace, "", timeout=10)
    assert not scenario.leaks


# ---- S5 -------------------------------------------------------------------------------------------


@pytest.fixture
def ship_cluster(tenant) -> Iterator[str]:
    """An existing token-auth RayCluster (made here, as a platform team would) for sec_ship_existing."""
    from airflow_provider_flyray.manifest import build_raycluster_manifest
    from airflow_provider_flyray.naming import MANAGED_BY_LABEL, MANAGED_BY_VALUE
    from tests.faults.dags.flyray_security_dags import TOKEN_HEAD

    # The managed-by label only lets the JobCounter see it; no owner annotation: the provider never deletes it.
    labels = {MANAGED_BY_LABEL: MANAGED_BY_VALUE}
    manifest = build_raycluster_manifest(TOKEN_HEAD, name=SHIP_CLUSTER, namespace=tenant.namespace, labels=labels)
    tenant.custom.create_namespaced_custom_object("ray.io", "v1", tenant.namespace, "rayclusters", manifest)
    try:
        yield SHIP_CLUSTER
    finally:
        tenant.custom.delete_namespaced_custom_object("ray.io", "v1", tenant.namespace, "rayclusters", SHIP_CLUSTER)
        leftovers.wait_until_empty(tenant.core, tenant.custom, tenant.namespace, timeout=120)


def package_calls(tenant: Tenant, since: float) -> dict[str, int]:
    """Package requests through the recording proxy (the dashboard behind the service proxy) since ``since``."""
    calls = [r for r in list(tenant.proxy.records) if r.at >= since and "/api/packages/" in r.path]
    return {
        "get": sum(r.method == "GET" for r in calls),
        "get_404": sum(r.method == "GET" and r.status == 404 for r in calls),
        "put": sum(r.method == "PUT" for r in calls),
        "put_ok": sum(r.method == "PUT" and r.status == 200 for r in calls),
    }


@pytest.mark.scenario("S5", "local code through the API-server proxy with token auth")
def test_local_code_ships_through_the_proxy_with_token_auth(stack, tenant, ship_cluster, scenario):
    scenario.expect(
        "a local working_dir reaches token-auth heads through the API server's service proxy: a transient cluster "
        "(found missing by the trigger, uploaded by the worker, deferred again) and an existing one (uploaded "
        "before deferral); a second run on the existing cluster uploads nothing; one job per run; nothing left"
    )
    figures: dict[str, Any] = {}
    with JobCounter(
        tenant.core, tenant.custom, tenant.namespace, headers={"Authorization": f"Bearer {tenant.dashboard_token}"}
    ) as counter:
        for label, dag_id in (
            ("transient", "sec_ship_transient"),
            ("existing_first", "sec_ship_existing"),
            ("existing_second", "sec_ship_existing"),
        ):
            since = time.monotonic()
            run = run_dag(stack, tenant, dag_id)
            figures[label] = {"state": run.state, "seconds": round(run.seconds, 1), **package_calls(tenant, since)}
            assert run.state == "success", run.log[-4000:]
            assert "FLYRAY_RESULT shipped" in run.log, run.log[-4000:]
            figures[label]["log"] = run.log
        jobs = {dag_id: len(counter.jobs_for(dag_id)) for dag_id in ("sec_ship_transient", "sec_ship_existing")}
    leaks = leftovers.leftovers(tenant.core, tenant.custom, tenant.namespace, "", timeout=60)
    leaks = [leak for leak in leaks if SHIP_CLUSTER not in leak]  # the existing cluster is the fixture's
    scenario.leaks, scenario.jobs = leaks, sum(jobs.values())
    transient, first, second = figures["transient"], figures["existing_first"], figures["existing_second"]
    scenario.observe(
        f"transient: {transient['state']} in {transient['seconds']}s, {transient['put_ok']} upload; existing: "
        f"{first['put_ok']} upload then {second['put_ok']} (GET {second['get']}, of which 404: {second['get_404']}); "
        f"jobs {jobs}",
        packages={k: {f: v for f, v in d.items() if f != "log"} for k, d in figures.items()},
    )
    assert "Deferring again" in transient["log"] and "uploaded" in transient["log"], transient["log"][-4000:]
    assert transient["put_ok"] == 1 and first["put_ok"] == 1, figures
    assert second["put"] == 0 and second["get"] >= 1 and second["get_404"] == 0, second
    assert "already on the cluster, not uploaded" in second["log"]
    assert jobs == {"sec_ship_transient": 1, "sec_ship_existing": 2}, jobs
    assert not leaks, leaks
