"""docker/rbac.yaml on the real control plane (kube-apiserver with `--authorization-mode=Node,RBAC`).

The provider runs end to end as the `airflow-flyray` service account (a TokenRequest token in a
kubeconfig, nothing else), a namespace outside its Role is refused with a message naming the namespace
and the action, and the Role grants exactly the calls the provider makes: nothing more.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Iterator

import pytest
import requests
from kubernetes import client, utils
from kubernetes.client.rest import ApiException

from airflow_provider_flyray.backends.raycluster import proxy_dashboard_url
from airflow_provider_flyray.cluster import ClusterRef
from airflow_provider_flyray.config import RayJobConfig
from airflow_provider_flyray.hooks.ray_cluster import RayClusterHook
from airflow_provider_flyray.manifest import task_cluster_manifest
from airflow_provider_flyray.naming import (
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    TaskIdentity,
)
from airflow_provider_flyray.reuse import ReusePolicy
from tests.support import REPO, pools
from tests.support.airflow_runs import dags_test
from tests.support.leftovers import clusters_in, wait_until_empty
from tests.support.ray_jobs import SMALL_HEAD, create_cluster, run_trigger
from tests.support.tenants import RAYJOB_RBAC, Tenant, provider_tenant

pytestmark = [pytest.mark.kube]

TOKEN_AUTH_RBAC = REPO / "docker" / "rbac-token-auth.yaml"

# (apiGroup, resource, verb): every Kubernetes call in airflow_provider_flyray/core/kube.py.
EXPECTED_RULES = {
    *{("ray.io", "rayclusters", verb) for verb in ("create", "get", "list", "watch", "delete")},
    *{("", "pods", verb) for verb in ("get", "list", "watch")},
    ("", "pods/log", "get"),
    ("", "events", "list"),
    ("", "services/proxy", "get"),
    ("", "services/proxy", "create"),
    ("", "services/proxy", "update"),  # PUT: uploading a local working_dir / py_modules package
}
# Granted to every authenticated user by the default ClusterRoles (self access reviews), not by us.
DEFAULT_GROUPS = {"authorization.k8s.io", "authentication.k8s.io"}


@pytest.fixture(scope="module")
def tenant(kube_control_plane, tmp_path_factory) -> Iterator[Tenant]:
    """docker/rbac.yaml applied in a fresh namespace, a second namespace without it, the service
    account's kubeconfig, and its connections: `ray_rbac_proxy` (dashboard through the API server's
    service proxy), `ray_rbac_pod` (head pod IP) and `ray_rbac_other` (the namespace without a Role)."""
    with (
        provider_tenant(kube_control_plane, tmp_path_factory.mktemp("rbac"), "flyray-rbac", other=True) as tenant,
        pytest.MonkeyPatch.context() as mp,
    ):
        mp.setenv("AIRFLOW_CONN_RAY_RBAC_PROXY", tenant.conn("proxy"))
        mp.setenv("AIRFLOW_CONN_RAY_RBAC_POD", tenant.conn("pod"))
        mp.setenv("AIRFLOW_CONN_RAY_RBAC_OTHER", tenant.conn("proxy", namespace=tenant.other))
        yield tenant


def forbidden(call) -> ApiException:
    with pytest.raises(ApiException) as info:
        call()
    assert info.value.status == 403, f"expected 403, got {info.value.status}: {info.value.body}"
    return info.value


def granted_rules(tenant: Tenant, namespace: str) -> set[tuple[str, str, str]]:
    """What the service account may do in `namespace`, as the API server's authorizer sees it."""
    review = client.AuthorizationV1Api(tenant.sa).create_self_subject_rules_review(
        client.V1SelfSubjectRulesReview(spec=client.V1SelfSubjectRulesReviewSpec(namespace=namespace))
    )
    assert not review.status.incomplete, review.status.evaluation_error
    return {
        (group, resource, verb)
        for rule in review.status.resource_rules
        for group in rule.api_groups or [""]
        for resource in rule.resources or []
        for verb in rule.verbs
        if group not in DEFAULT_GROUPS
    }


def test_the_role_grants_exactly_what_the_provider_uses(tenant):
    assert granted_rules(tenant, tenant.namespace) == EXPECTED_RULES
    assert granted_rules(tenant, tenant.other) == set()
    assert granted_rules(tenant, "default") == set()


def end_to_end(tenant: Tenant, conn_id: str, check_cluster=None) -> None:
    """Create (hook), wait + submit + logs (trigger), delete (hook): all as the service account."""
    ns = tenant.namespace
    hook = RayClusterHook(conn_id)
    ok, message = hook.test_connection()
    assert ok, message
    identity = TaskIdentity("rbac", conn_id.replace("_", "-"), uuid.uuid4().hex)
    ref = create_cluster(hook, ns, identity, RayJobConfig(head_node_config=SMALL_HEAD))
    try:
        # A worker that lost the task finds its cluster with a labelled list: allowed too.
        found = hook.list_clusters(ns, f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}")
        assert [c["metadata"]["name"] for c in found] == [ref.name]

        event = run_trigger(conn_id, ref, identity, "python -c \"print('ran as ' + 'airflow-flyray')\"")
        assert event["status"] == "success", event["reason"]
        assert "ran as airflow-flyray" in event["log_tail"]

        # The startup-failure path (pods, events) works as the service account too.
        async def failure_details() -> tuple[list, list]:
            async with hook.async_session() as session:
                kube = await session.kube()
                pods = await kube.list_pods(ref.namespace, ref.name)
                names = {ref.name} | {p["metadata"]["name"] for p in pods}
                return pods, await kube.list_events(ref.namespace, names)

        pods, events = asyncio.run(failure_details())
        assert pods, "the head pod is listed"
        assert any((e.get("involvedObject") or {}).get("name") == ref.name for e in events), events
        if check_cluster is not None:
            check_cluster(ref)
    finally:
        assert hook.delete_cluster(ref, identity.task_key)
    wait_until_empty(tenant.core, tenant.custom, ns, timeout=90)
    assert hook.list_clusters(ns, f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}") == []


def test_provider_end_to_end_as_the_service_account(tenant):
    """The whole provider as `airflow-flyray`, the dashboard at the head pod's IP; meanwhile the Role's
    `services/proxy` rule is shown to be enough for the Jobs API through the API server's proxy."""

    def proxy_with_the_service_account_token(ref: ClusterRef) -> None:
        url = proxy_dashboard_url(tenant.server, ref) + "/api/version"
        answer = requests.get(
            url, headers={"Authorization": f"Bearer {tenant.token}"}, verify=tenant.ca_file, timeout=30
        )
        assert answer.status_code == 200, answer.text
        assert "ray_version" in answer.json()
        anonymous = requests.get(url, verify=tenant.ca_file, timeout=30)
        assert anonymous.status_code == 403 and "system:anonymous" in anonymous.text, anonymous.text

    end_to_end(tenant, "ray_rbac_pod", proxy_with_the_service_account_token)


def test_provider_end_to_end_as_the_service_account_through_the_proxy(tenant):
    end_to_end(tenant, "ray_rbac_proxy")


def test_a_namespace_outside_the_role_is_refused_clearly(tenant):
    other = tenant.other
    hook = RayClusterHook("ray_rbac_other")
    identity = TaskIdentity("rbac", "elsewhere", uuid.uuid4().hex)
    manifest = task_cluster_manifest(RayJobConfig(head_node_config=SMALL_HEAD), identity, other)
    with pytest.raises(PermissionError) as create:
        hook.create_or_adopt_cluster(manifest, identity.task_key)
    message = str(create.value)
    assert message.startswith(f"create RayCluster {other}/{manifest['metadata']['name']}: Kubernetes refused (403)")
    assert f'User "{tenant.user}" cannot create resource "rayclusters" in API group "ray.io"' in message
    assert f'in the namespace "{other}"' in message
    assert "Role" in message

    with pytest.raises(
        PermissionError,
        match=rf'list RayClusters in {other}: Kubernetes refused \(403\).*cannot list resource "rayclusters"',
    ):
        hook.list_clusters(other, f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}")

    ok, message = hook.test_connection()
    assert not ok and "403" in message and other in message, message

    # The trigger (async client) reports the refusal as its event instead of waiting for a cluster.
    ref = ClusterRef("raycluster", name=manifest["metadata"]["name"], namespace=other, owned=True)
    started = time.time()
    event = run_trigger("ray_rbac_other", ref, identity, "echo never", timeout=60)
    assert event["status"] == "error", event
    assert "PermissionError" in event["reason"] and "Kubernetes refused (403)" in event["reason"], event
    assert f'in the namespace "{other}"' in event["reason"], event
    assert time.time() - started < 30
    assert clusters_in(tenant.custom, other) == []


def test_the_service_account_cannot_do_anything_else(tenant):
    ns = tenant.namespace
    core = client.CoreV1Api(tenant.sa)
    apps = client.AppsV1Api(tenant.sa)
    rbac = client.RbacAuthorizationV1Api(tenant.sa)
    custom = client.CustomObjectsApi(tenant.sa)
    deployment = {
        "metadata": {"name": "not-allowed"},
        "spec": {
            "selector": {"matchLabels": {"app": "x"}},
            "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "x", "image": "x"}]}},
        },
    }
    pod = {"metadata": {"name": "not-allowed"}, "spec": {"containers": [{"name": "x", "image": "x"}]}}
    forbidden(lambda: apps.create_namespaced_deployment(ns, deployment))
    forbidden(lambda: core.create_namespaced_pod(ns, pod))
    forbidden(lambda: core.delete_namespaced_pod("anything", ns))
    forbidden(lambda: core.delete_collection_namespaced_pod(ns))
    forbidden(lambda: core.list_namespaced_secret(ns))
    forbidden(lambda: core.read_namespaced_secret("anything", ns))
    forbidden(lambda: core.list_namespaced_service(ns))
    forbidden(lambda: core.list_namespaced_config_map(ns))
    forbidden(lambda: core.connect_get_namespaced_pod_proxy("anything", ns))
    forbidden(lambda: custom.patch_namespaced_custom_object("ray.io", "v1", ns, "rayclusters", "x", {}))
    forbidden(lambda: custom.delete_collection_namespaced_custom_object("ray.io", "v1", ns, "rayclusters"))
    forbidden(lambda: custom.create_namespaced_custom_object("ray.io", "v1", ns, "rayjobs", {}))
    forbidden(lambda: custom.list_cluster_custom_object("ray.io", "v1", "rayclusters"))
    forbidden(lambda: core.list_pod_for_all_namespaces())
    forbidden(lambda: core.list_namespace())
    # No way to widen its own rights.
    forbidden(lambda: rbac.create_namespaced_role(ns, {"metadata": {"name": "more"}, "rules": []}))
    forbidden(lambda: rbac.patch_namespaced_role("airflow-flyray", ns, {"rules": []}))
    forbidden(lambda: rbac.create_namespaced_role_binding(ns, {"metadata": {"name": "more"}, "roleRef": {}}))


def test_token_auth_secret_needs_the_optional_role(tenant):
    """docker/rbac-token-auth.yaml adds `secrets: get` and nothing else; without it the read is refused."""
    ns = tenant.namespace
    admin_core = client.CoreV1Api(tenant.admin)
    admin_core.create_namespaced_secret(
        ns,
        {"metadata": {"name": "ray-token"}, "data": {"auth_token": base64.b64encode(b"s3cret").decode()}},
    )
    hook = RayClusterHook("ray_rbac_proxy")
    with pytest.raises(PermissionError, match=rf"read Secret {ns}/ray-token: Kubernetes refused \(403\)"):
        hook.read_token_secret("ray-token", ns)
    created = utils.create_from_yaml(tenant.admin, str(TOKEN_AUTH_RBAC), namespace=ns)
    try:
        deadline = time.time() + 10  # the RBAC authorizer's informer catches up within moments
        while True:
            try:
                assert hook.read_token_secret("ray-token", ns) == "s3cret"
                break
            except PermissionError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        assert granted_rules(tenant, ns) == EXPECTED_RULES | {("", "secrets", "get")}
        forbidden(lambda: client.CoreV1Api(tenant.sa).list_namespaced_secret(ns))
        assert granted_rules(tenant, tenant.other) == set()
    finally:
        rbac = client.RbacAuthorizationV1Api(tenant.admin)
        for objects in created:
            for obj in objects:
                if obj.kind == "Role":
                    rbac.delete_namespaced_role(obj.metadata.name, ns)
                else:
                    rbac.delete_namespaced_role_binding(obj.metadata.name, ns)


# Every Lease and pool-cluster call of airflow_provider_flyray/core/leases.py.
EXPECTED_POOL_RULES = {
    *{("coordination.k8s.io", "leases", verb) for verb in ("create", "patch", "delete", "list")},
    ("ray.io", "rayclusters", "patch"),
}


def test_pools_need_the_pool_role_which_grants_exactly_what_they_use(kube_control_plane, tmp_path):
    """Without docker/rbac-pools.yaml a pool task fails before creating anything, naming that file; with
    it the service account gains exactly the pools' calls."""
    with (
        provider_tenant(kube_control_plane, tmp_path, "flyray-rbac-pools") as tenant,
        pytest.MonkeyPatch.context() as mp,
    ):
        mp.setenv("AIRFLOW_CONN_RAY_RBAC_POOL", tenant.conn("pod"))
        identity = TaskIdentity("rbac", "pool", uuid.uuid4().hex)
        with pytest.raises(PermissionError, match=r"Kubernetes refused \(403\).*docker/rbac-pools.yaml"):
            pools.acquire("ray_rbac_pool", identity, ReusePolicy(idle_ttl=0), RayJobConfig(head_node_config=SMALL_HEAD))
        assert clusters_in(tenant.custom, tenant.namespace) == []
        assert pools.leases_in(tenant.admin, tenant.namespace) == []
        pools.grant_pool_role(tenant.admin, tenant.namespace)
        assert granted_rules(tenant, tenant.namespace) == EXPECTED_RULES | EXPECTED_POOL_RULES


# docker/rbac-rayjob.yaml: RayJob mode's calls (core/rayjobs.py), RayClusters read-only.
EXPECTED_RAYJOB_RULES = {
    *{("ray.io", "rayjobs", verb) for verb in ("create", "get", "list", "delete")},
    *{("ray.io", "rayclusters", verb) for verb in ("get", "list", "watch")},
    *{("", "pods", verb) for verb in ("get", "list", "watch")},
    ("", "pods/log", "get"),
    ("", "events", "list"),
    ("", "services/proxy", "get"),
    ("", "services/proxy", "create"),
    ("", "services/proxy", "update"),
}


def test_rayjob_mode_runs_with_only_the_rayjob_role_which_cannot_touch_rayclusters(
    kube_control_plane, tmp_path, airflow_db
):
    """docker/rbac-rayjob.yaml alone: exactly RayJob mode's rules; a RayJob task runs end to end as the
    service account (example_flyray_rayjob: an operator task and a @task.ray with local code); creating
    or deleting a RayCluster is refused."""
    with provider_tenant(kube_control_plane, tmp_path, "flyray-rbac-rayjob", rbac=RAYJOB_RBAC) as tenant:
        assert granted_rules(tenant, tenant.namespace) == EXPECTED_RAYJOB_RULES
        custom = client.CustomObjectsApi(tenant.sa)
        manifest = task_cluster_manifest(
            RayJobConfig(head_node_config=SMALL_HEAD), TaskIdentity("r", "t", "x"), tenant.namespace
        )
        forbidden(
            lambda: custom.create_namespaced_custom_object("ray.io", "v1", tenant.namespace, "rayclusters", manifest)
        )
        output = dags_test("example_flyray_rayjob", {"AIRFLOW_CONN_RAY_DEFAULT": tenant.conn("pod")})
        assert "state=success" in output and "state=failed" not in output, output[-6000:]
        assert output.count("(KubeRay stops its job and deletes its cluster)") == 2
        wait_until_empty(tenant.core, tenant.custom, tenant.namespace, timeout=90)
