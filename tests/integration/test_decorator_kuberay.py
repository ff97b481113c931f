"""``@task.ray`` on the KubeRay control plane, through real Airflow (`airflow dags test`): the README's
KubeRay example (a transient cluster with a worker group, then the same result checked on an existing
cluster, both through the API server's service proxy), and a decorated function run as the provider's
least-privilege ServiceAccount (token in a kubeconfig) on a head with Ray token authentication, whose
result comes back through the service proxy; every request of that run is recorded by a proxy in front
of the API server."""

from __future__ import annotations

import base64
import json
import os
import re
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
from kubernetes import client

from airflow_provider_flyray.config import RayJobConfig
from airflow_provider_flyray.function_driver import FRAME_PREFIX
from airflow_provider_flyray.hooks.ray_cluster import RayClusterHook
from airflow_provider_flyray.naming import TaskIdentity
from tests.support import tenants
from tests.support.airflow_runs import dags_test, home_with_test_dags, xcoms
from tests.support.leftovers import clusters_in, wait_until_empty
from tests.support.ray_jobs import SMALL_HEAD, create_cluster

pytestmark = [pytest.mark.kube, pytest.mark.airflow, pytest.mark.ray]

FRAME = re.compile(re.escape(FRAME_PREFIX) + r"[0-9a-f]{32}:\d+/\d+:")


@pytest.fixture
def namespace(kube_control_plane, core, monkeypatch):
    """A fresh namespace and `ray_kube` (pod-IP dashboard) / `ray_kube_proxy` (service proxy)
    connections to it, as cluster admin."""
    with tenants.namespace(core, "flyray-dec") as name:
        extra = {"kube_config_path": kube_control_plane.kubeconfig, "namespace": name, "dashboard_access": "pod"}
        monkeypatch.setenv("AIRFLOW_CONN_RAY_KUBE", tenants.flyray_conn(**extra))
        monkeypatch.setenv("AIRFLOW_CONN_RAY_KUBE_PROXY", tenants.flyray_conn(**{**extra, "dashboard_access": "proxy"}))
        yield name


def released_cluster(output: str, namespace: str) -> str:
    """The name in the operator's "Released RayCluster <ns>/<name>" line."""
    found = re.search(rf"Released RayCluster {re.escape(namespace)}/([a-z0-9-]+)", output)
    assert found, output[-4000:]
    return found.group(1)


def test_example_decorator_dag_on_transient_and_existing_clusters(core, custom, namespace, airflow_db):
    """dags/example_flyray_decorator_kuberay.py with the proxy connection: the squares on a transient
    cluster (head + `test-group` worker), then checked on an existing 1-CPU cluster; both results in
    XCom; the transient cluster is gone, the existing one untouched."""
    hook = RayClusterHook("ray_kube")
    identity = TaskIdentity("shared", "decorated", uuid.uuid4().hex)
    ref = create_cluster(hook, namespace, identity, RayJobConfig(head_node_config=SMALL_HEAD))
    try:
        output = dags_test(
            "example_flyray_decorator_kuberay",
            {"AIRFLOW_CONN_RAY_DEFAULT": os.environ["AIRFLOW_CONN_RAY_KUBE_PROXY"]},
            conf={"n": 6, "cluster_name": ref.name, "namespace": namespace},
        )
        assert "state=success" in output and "state=failed" not in output, output[-6000:]
        assert "FLYRAY_RESULT squares: [0, 1, 4, 9, 16, 25]" in output, output[-4000:]
        assert "FLYRAY_RESULT on the existing cluster: {'same': True, 'cpus': 1.0}" in output, output[-4000:]
        assert not FRAME.search(output), "a result frame reached the task log"
        transient = released_cluster(output, namespace)
        assert transient != ref.name
        values = xcoms({"AIRFLOW_HOME": str(airflow_db)}, "example_flyray_decorator_kuberay")
        assert values[("ray_squares", -1, "return_value")] == [0, 1, 4, 9, 16, 25]
        assert values[("check_on_existing", -1, "return_value")] == {"same": True, "cpus": 1.0}
        # The existing cluster was used and left alone; the transient one (and its pods) is gone.
        wait_until_empty(core, custom, namespace, f"ray.io/cluster={transient}")
        assert [c["metadata"]["name"] for c in clusters_in(custom, namespace)] == [ref.name]
    finally:
        hook.delete_cluster(ref, identity.task_key)
    wait_until_empty(core, custom, namespace)


def probe_auth(pod_ip: str, token: str) -> dict[str, int]:
    """What the head's dashboard answers without a token and with the right one."""
    out: dict[str, int] = {}
    for name, headers in (("none", {}), ("right", {"Authorization": f"Bearer {token}"})):
        request = urllib.request.Request(f"http://{pod_ip}:8265/api/version", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=3) as answer:
                out[name] = answer.status
        except urllib.error.HTTPError as exc:
            out[name] = exc.code
        except OSError:  # not answering yet
            return {}
    return out


def probe_while_running(core: client.CoreV1Api, namespace: str, token: str, run: Future) -> dict[str, int]:
    """Probe the head's dashboard auth (through the pod network) while ``run`` goes on."""
    while not run.done():
        for pod in core.list_namespaced_pod(namespace, label_selector="ray.io/node-type=head").items:
            if pod.status.pod_ip and (probe := probe_auth(pod.status.pod_ip, token)).get("right") == 200:
                return probe
        time.sleep(0.5)
    return {}


def test_decorated_result_through_the_service_proxy_with_token_auth(kube_control_plane, core, custom, tmp_path):
    """docker/rbac.yaml's ServiceAccount (its token only, through a recording proxy in front of the API
    server), `dashboard_access: proxy`, a head with Ray token auth and the connection's
    `dashboard_token`: the cluster is made, the job submitted and its result read, all through the API
    server's service proxy; the function's value is in XCom, computed on the task's own head pod."""
    with tenants.provider_tenant(kube_control_plane, tmp_path, "flyray-dec-sa", through_proxy=True) as tenant:
        assert tenant.proxy is not None
        ray_token = f"flyray-dec-{uuid.uuid4()}"
        tenant.core.create_namespaced_secret(
            tenant.namespace,
            {
                "metadata": {"name": "ray-dashboard-token"},
                "data": {"auth_token": base64.b64encode(ray_token.encode()).decode()},
            },
        )
        conn = tenant.conn("proxy", dashboard_token=ray_token)
        env = home_with_test_dags(tmp_path / "home", {"AIRFLOW_CONN_RAY_KUBE_SA": conn})
        with ThreadPoolExecutor(1) as pool:
            run = pool.submit(dags_test, "flyray_decorator_kube_sa", env)
            probe = probe_while_running(core, tenant.namespace, ray_token, run)
            output = run.result()
        assert "state=success" in output and "state=failed" not in output, output[-6000:]
        # Ray token auth was on: the head refused a request without the token.
        assert probe == {"none": 401, "right": 200}, probe
        assert not FRAME.search(output), "a result frame reached the task log"
        cluster = released_cluster(output, tenant.namespace)
        value = xcoms(env, "flyray_decorator_kube_sa")[("where_it_ran", -1, "return_value")]
        assert value["cubes"] == [0, 1, 8, 27], value
        # The head pod ran it: its hostname is `<cluster>-head-<suffix>` with KubeRay 1.5.0 and was
        # `<cluster>-head` with 1.4.0 (make compat).
        assert value["host"] == f"{cluster}-head" or value["host"].startswith(f"{cluster}-head-"), value

        records = list(tenant.proxy.records)
        dashboard = f"/api/v1/namespaces/{tenant.namespace}/services/{cluster}-head-svc:dashboard/proxy/api/jobs/"
        submitted = [r for r in records if r.method == "POST" and r.path.split("?")[0] == dashboard]
        assert [r.status for r in submitted] == [200], [(r.method, r.path, r.status) for r in records]
        created = [r for r in records if r.method == "POST" and r.path.endswith(f"/{tenant.namespace}/rayclusters")]
        assert [r.status for r in created] == [201], created
        job_reads = [r for r in records if r.kind == "dashboard" and r.method == "GET" and r.status == 200]
        assert job_reads, "the job's status and log were never read through the service proxy"
        # Least privilege held: nothing was refused, nothing asked outside the tenant's namespace.
        assert not [r for r in records if r.status in (401, 403)], [r for r in records if r.status in (401, 403)]
        assert all(f"/namespaces/{tenant.namespace}/" in r.path for r in records), {r.path for r in records}
        assert ray_token not in output  # the token never reaches the task log
        wait_until_empty(core, custom, tenant.namespace)
        print(json.dumps({"requests": len(records), "value": value, "probe": probe}))
