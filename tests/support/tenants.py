"""Namespaces and the provider's tenants on the test control plane.

A tenant is what the docs tell an Airflow deployment to set up: docker/rbac.yaml applied in a namespace
(the ``airflow-flyray`` ServiceAccount, its Role and RoleBinding), a TokenRequest token of that account, a
kubeconfig holding only the token, and flyray connections using it.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config, utils
from kubernetes.client.rest import ApiException

from tests.infra.kube.api_proxy import ApiProxy
from tests.infra.kube.fixtures import ControlPlane
from tests.support import REPO

RBAC = REPO / "docker" / "rbac.yaml"
# RayJob mode only: a Role with rayjobs verbs and read-only RayClusters (instead of RBAC).
RAYJOB_RBAC = REPO / "docker" / "rbac-rayjob.yaml"
SERVICE_ACCOUNT = "airflow-flyray"


def unique(prefix: str) -> str:
    """``prefix`` and six hex digits: a name no other run uses."""
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@contextlib.contextmanager
def namespace(core: client.CoreV1Api, prefix: str) -> Iterator[str]:
    """A fresh namespace ``prefix-xxxxxx``, deleted at the end."""
    name = unique(prefix)
    core.create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        delete_namespace(core, name)


def delete_namespace(core: client.CoreV1Api, name: str, wait: float = 0) -> None:
    """Delete a namespace (its RayClusters and pods with it). ``wait``: wait up to that many seconds until
    it is gone; a failed delete is then only a warning (for scripts that must go on cleaning up)."""
    if not wait:
        core.delete_namespace(name)
        return
    with contextlib.suppress(ApiException):
        core.delete_namespace(name)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            core.read_namespace(name)
        except ApiException as exc:
            if exc.status == 404:
                return
        time.sleep(1)
    print(f"warning: namespace {name} still terminating after {wait:.0f}s", flush=True)


def mint_token(core: client.CoreV1Api, namespace: str, seconds: int = 3600) -> str:
    """A bound service-account token from the TokenRequest API (audience: the API server's)."""
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds)
    )
    deadline = time.time() + 30
    while True:
        try:
            return core.create_namespaced_service_account_token(SERVICE_ACCOUNT, namespace, request).status.token
        except ApiException as exc:  # the ServiceAccount is created by the apply just before
            if exc.status != 404 or time.time() > deadline:
                raise
            time.sleep(0.5)


def wait_for_binding(
    admin: client.ApiClient, namespace: str, timeout: float = 15, resource: str = "rayclusters"
) -> None:
    """The RBAC authorizer reads Roles through an informer: wait until it has seen the new binding."""
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=f"system:serviceaccount:{namespace}:{SERVICE_ACCOUNT}",
            resource_attributes=client.V1ResourceAttributes(
                namespace=namespace, group="ray.io", resource=resource, verb="create"
            ),
        )
    )
    deadline = time.time() + timeout
    while not client.AuthorizationV1Api(admin).create_subject_access_review(review).status.allowed:
        assert time.time() < deadline, f"the RoleBinding for {resource} never took effect"
        time.sleep(0.2)


def grant_provider_role(admin: client.ApiClient, namespace: str, seconds: int = 3600, rbac: Path = RBAC) -> str:
    """docker/rbac.yaml (or ``rbac``) applied in ``namespace`` (as `kubectl -n NAMESPACE apply -f`: the
    manifest names no namespace); returns a token of its ServiceAccount once the authorizer honours it."""
    utils.create_from_yaml(admin, str(rbac), namespace=namespace)
    token = mint_token(client.CoreV1Api(admin), namespace, seconds=seconds)
    wait_for_binding(admin, namespace, resource="rayjobs" if rbac == RAYJOB_RBAC else "rayclusters")
    return token


def write_kubeconfig(path: Path, server: str, ca_file: str | None, token: str, namespace: str) -> str:
    """A kubeconfig holding only ``token``; ``ca_file`` None for a plain-HTTP ``server`` (a loopback proxy)."""
    cluster = {"server": server} if ca_file is None else {"server": server, "certificate-authority": ca_file}
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "flyray", "cluster": cluster}],
                "users": [{"name": SERVICE_ACCOUNT, "user": {"token": token}}],
                "contexts": [
                    {
                        "name": SERVICE_ACCOUNT,
                        "context": {"cluster": "flyray", "user": SERVICE_ACCOUNT, "namespace": namespace},
                    }
                ],
                "current-context": SERVICE_ACCOUNT,
            }
        )
    )
    path.chmod(0o600)
    return str(path)


def flyray_conn(**extra: Any) -> str:
    """A flyray connection with these extras, as the JSON of an ``AIRFLOW_CONN_*`` variable."""
    return json.dumps({"conn_type": "flyray", "extra": extra})


def dashboard_url_template(proxy_url: str) -> str:
    """A connection's ``dashboard_url_template`` for UI links through a `kubectl proxy` at ``proxy_url``."""
    return proxy_url + "/api/v1/namespaces/{namespace}/services/{service}:dashboard/proxy"


@dataclass
class Tenant:
    """docker/rbac.yaml applied in ``namespace``, and the ServiceAccount's token and kubeconfig."""

    namespace: str
    other: str  # a namespace the service account has no Role in ("" unless asked for)
    token: str  # the service account's bearer token
    kubeconfig: str  # holding only ``token``, for ``server``
    server: str  # the API server, or the recording proxy in front of it
    ca_file: str  # the control plane's CA
    admin: client.ApiClient
    proxy: ApiProxy | None = None  # the recording proxy ``server`` points at, if any

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{SERVICE_ACCOUNT}"

    @cached_property
    def sa(self) -> client.ApiClient:
        """An API client as the service account."""
        return config.new_client_from_config(self.kubeconfig)

    @cached_property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.admin)

    @cached_property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.admin)

    def write_kubeconfig(self, path: Path, server: str, ca_file: str | None = None) -> str:
        """Another kubeconfig with the service account's token, for ``server`` (e.g. a fault-injecting proxy)."""
        return write_kubeconfig(path, server, ca_file, self.token, self.namespace)

    def conn(self, dashboard_access: str, kubeconfig: str | None = None, **extra: Any) -> str:
        """A flyray connection as the service account (``kubeconfig``: another of its kubeconfigs)."""
        fields = {"kube_config_path": kubeconfig or self.kubeconfig, "namespace": self.namespace}
        return flyray_conn(**{**fields, "dashboard_access": dashboard_access, **extra})


@contextlib.contextmanager
def provider_tenant(
    plane: ControlPlane,
    workdir: Path,
    prefix: str,
    *,
    other: bool = False,
    through_proxy: bool = False,
    token_seconds: int = 3600,
    wait_deleted: float = 0,
    rbac: Path = RBAC,
) -> Iterator[Tenant]:
    """A fresh namespace ``prefix-xxxxxx`` with docker/rbac.yaml applied, the ServiceAccount's token and
    its kubeconfig ``workdir/airflow-flyray.kubeconfig``: to the API server (CA checked), or, with
    ``through_proxy``, to a recording ApiProxy started here (plain HTTP on loopback). ``other``: also
    ``prefix-other-xxxxxx``, without the Role. Everything is removed at the end (``wait_deleted``: see
    delete_namespace)."""
    admin = plane.api_client()
    core = client.CoreV1Api(admin)
    name = unique(prefix)
    other_name = f"{prefix}-other-{name.rsplit('-', 1)[1]}" if other else ""
    created: list[str] = []
    proxy: ApiProxy | None = None
    try:
        for n in (name, other_name):
            if n:
                core.create_namespace({"metadata": {"name": n}})
                created.append(n)
        if through_proxy:
            proxy = plane.api_proxy().start()
        token = grant_provider_role(admin, name, seconds=token_seconds, rbac=rbac)
        server, ca_file = (proxy.url, None) if proxy else (plane.server, plane.ca_file)
        kubeconfig = write_kubeconfig(workdir / f"{SERVICE_ACCOUNT}.kubeconfig", server, ca_file, token, name)
        yield Tenant(name, other_name, token, kubeconfig, server, plane.ca_file, admin, proxy)
    finally:
        if proxy is not None:
            proxy.stop()
        for n in created:
            delete_namespace(core, n, wait=wait_deleted)
