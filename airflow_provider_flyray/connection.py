"""The ``flyray`` connection's fields, parsed and validated. Pure.

Kubernetes fields are the cncf-kubernetes ones (``in_cluster``, ``kube_config_path``, ``kube_config``,
``cluster_context``, ``namespace``, ``disable_verify_ssl``): the hook hands them to ``KubernetesHook``.
This module adds the Ray side: backend, how to reach the dashboard, the links' URL template, token, TLS.
"""

from __future__ import annotations

import difflib
import json
import re
import string
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from airflow_provider_flyray.errors import ConfigError

DEFAULT_NAMESPACE = "default"
# Where the connection's clusters come from: KubeRay (default) or a Ray head on the Airflow machine.
KUBERNETES_BACKEND = "kubernetes"
LOCAL_BACKEND = "local"
CONNECTION_BACKENDS = (KUBERNETES_BACKEND, LOCAL_BACKEND)
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
TEMPLATE_FIELDS = frozenset({"namespace", "cluster", "service", "submission_id"})
# Every extras field this connection reads: its own and those KubernetesHook reads.
KNOWN_EXTRAS = frozenset(
    {
        "backend",
        "namespace",
        "dashboard_access",
        "dashboard_address",
        "dashboard_url_template",
        "dashboard_token",
        "dashboard_token_secret",
        "verify_tls",
        "kuberay_resource",
        "in_cluster",
        "kube_config_path",
        "kube_config",
        "cluster_context",
        "disable_verify_ssl",
        "disable_tcp_keepalive",
        "xcom_sidecar_container_image",
        "xcom_sidecar_container_resources",
    }
)


# The connection fields that tell the Kubernetes client where its credentials are, and what each expects.
KUBE_CREDENTIAL_FIELDS = {
    "kube_config_path": "the path of a readable kubeconfig file on this machine",
    "kube_config": "a kubeconfig's content, YAML or JSON",
    "in_cluster": "true only when Airflow runs in a pod with a service account",
}


def extras_from_text(text: str | None) -> dict[str, Any]:
    """The extras of a connection's ``extra`` text. Airflow reads text that is not JSON as ``{}`` (with
    only a log line), which would silently select the Kubernetes backend: refuse it, naming the field."""
    if text is None or not str(text).strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            "connection.extra",
            f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); expected a JSON object "
            'like {"backend": "local"} or {"kube_config_path": "/path/to/kubeconfig"}',
        ) from None
    if not isinstance(value, dict):
        raise ConfigError("connection.extra", f"expected a JSON object of fields, got {type(value).__name__}")
    return value


def kube_credentials_error(extras: dict[str, Any], problem: str) -> ConfigError:
    """The error for a Kubernetes client that could not load its configuration (``problem``): which
    connection field it came from and what that field expects, or, with none set, the fields to set."""
    given = [
        name
        for name in KUBE_CREDENTIAL_FIELDS
        if extras.get(name) not in (None, "", False)
        or extras.get(f"extra__kubernetes__{name}") not in (None, "", False)
    ]
    if given:
        name = given[0]
        return ConfigError(
            f"connection.extra.{name}",
            f"the Kubernetes client could not use it ({problem}); expected {KUBE_CREDENTIAL_FIELDS[name]}",
        )
    fields = ", ".join(f"{name} ({what})" for name, what in KUBE_CREDENTIAL_FIELDS.items())
    return ConfigError(
        "connection.extra",
        f"the kubernetes backend found no Kubernetes credentials ({problem}); set one of {fields}, "
        "or use backend 'local' (a Ray head on this machine) or address= (an existing Ray dashboard)",
    )


class DashboardAccess(StrEnum):
    SERVICE = "service"  # <cluster>-head-svc.<ns>.svc.cluster.local: Airflow runs inside the cluster
    PROXY = "proxy"  # the API server's service proxy: works from anywhere the API server is reachable
    POD = "pod"  # the head pod's IP: flat pod network reachable from Airflow
    ADDRESS = "address"  # an explicit dashboard URL (e.g. an Ingress); `dashboard_address`


def _flag(extras: dict[str, Any], key: str, default: bool) -> bool:
    value = extras.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"connection.extra.{key}", f"expected true or false, got {value!r}")


def check_namespace(value: Any, field: str = "namespace") -> str:
    if not isinstance(value, str) or not _DNS1123_LABEL.match(value) or len(value) > 63:
        raise ConfigError(field, f"{value!r} is not a valid Kubernetes namespace (lowercase letters, digits, '-')")
    return value


def check_http_url(value: Any, field: str) -> str:
    if not isinstance(value, str) or not re.match(r"^https?://[^\s/]+", value.strip()):
        raise ConfigError(field, f"expected an http(s) URL like 'http://ray-head:8265', got {value!r}")
    return value.strip().rstrip("/")


KUBERAY_RESOURCE_FIELD = "kuberay_resource"


class KubeRayResource(StrEnum):
    """What the provider creates on Kubernetes for a task: a RayCluster it deletes, or a RayJob
    whose cluster KubeRay owns (:mod:`airflow_provider_flyray.rayjob`)."""

    RAYCLUSTER = "RayCluster"
    RAYJOB = "RayJob"

    @classmethod
    def parse(cls, value: Any, field: str = KUBERAY_RESOURCE_FIELD) -> KubeRayResource:
        for member in cls:
            if isinstance(value, str) and value.strip().lower() == member.value.lower():
                return member
        raise ConfigError(field, f"got {value!r}; expected 'RayCluster' (default) or 'RayJob'")


@dataclass(frozen=True, repr=False)
class ConnectionSettings:
    backend: str = KUBERNETES_BACKEND
    namespace: str = DEFAULT_NAMESPACE
    dashboard_access: DashboardAccess = DashboardAccess.SERVICE
    dashboard_address: str | None = None
    dashboard_url_template: str | None = None
    dashboard_token: str | None = None
    dashboard_token_secret: str | None = None
    verify_tls: bool = True
    # What a task creates on Kubernetes unless it says otherwise: a RayCluster, or a RayJob (KubeRay owns it).
    kuberay_resource: KubeRayResource = KubeRayResource.RAYCLUSTER

    def __repr__(self) -> str:  # the token must never reach a log through a repr
        return (
            f"ConnectionSettings(backend={self.backend!r}, namespace={self.namespace!r}, "
            f"dashboard_access={self.dashboard_access.value!r}, token={'set' if self.dashboard_token else 'unset'})"
        )


def parse_connection_extras(
    extras: dict[str, Any], *, default_access: DashboardAccess | None = None
) -> ConnectionSettings:
    """Validate the Ray fields of a ``flyray`` connection's extras."""
    for key in extras:
        # A misspelt field would silently fall back to its default (e.g. another dashboard access or
        # namespace): refuse keys that are close to a known one. Other unknown keys are left alone.
        close = [] if key in KNOWN_EXTRAS else difflib.get_close_matches(str(key), KNOWN_EXTRAS, n=1, cutoff=0.8)
        if close:
            raise ConfigError(f"connection.extra.{key}", f"unknown field; did you mean {close[0]!r}?")
    backend = str(extras.get("backend") or KUBERNETES_BACKEND).strip().lower()
    if backend not in CONNECTION_BACKENDS:
        raise ConfigError("connection.extra.backend", f"got {backend!r}; expected 'kubernetes' or 'local'")
    namespace = check_namespace(extras.get("namespace") or DEFAULT_NAMESPACE, "connection.extra.namespace")
    access_text = (
        str(extras.get("dashboard_access") or (default_access or DashboardAccess.SERVICE).value).strip().lower()
    )
    try:
        access = DashboardAccess(access_text)
    except ValueError:
        allowed = ", ".join(repr(a.value) for a in DashboardAccess)
        raise ConfigError(
            "connection.extra.dashboard_access", f"got {access_text!r}; expected one of {allowed}"
        ) from None
    address = extras.get("dashboard_address") or None
    if address is not None:
        address = check_http_url(address, "connection.extra.dashboard_address")
    if access is DashboardAccess.ADDRESS and not address:
        raise ConfigError("connection.extra.dashboard_address", "is required when dashboard_access is 'address'")
    template = extras.get("dashboard_url_template") or None
    if template is not None:
        template = check_http_url(template, "connection.extra.dashboard_url_template")
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name}
        unknown = sorted(names - TEMPLATE_FIELDS)
        if unknown:
            raise ConfigError(
                "connection.extra.dashboard_url_template",
                f"unknown placeholders {unknown}; use {sorted(TEMPLATE_FIELDS)}",
            )
    token = extras.get("dashboard_token") or None
    if token is not None and not isinstance(token, str):
        raise ConfigError("connection.extra.dashboard_token", "expected a string")
    secret = extras.get("dashboard_token_secret") or None
    if secret is not None and (not isinstance(secret, str) or not secret.strip()):
        raise ConfigError("connection.extra.dashboard_token_secret", "expected a Secret name")
    return ConnectionSettings(
        backend=backend,
        namespace=namespace,
        dashboard_access=access,
        dashboard_address=address,
        dashboard_url_template=template,
        dashboard_token=token,
        dashboard_token_secret=secret,
        verify_tls=_flag(extras, "verify_tls", True),
        kuberay_resource=KubeRayResource.parse(
            extras.get("kuberay_resource") or KubeRayResource.RAYCLUSTER.value, "connection.extra.kuberay_resource"
        ),
    )


def browser_dashboard_url(
    settings: ConnectionSettings, *, namespace: str | None, cluster: str, service: str, direct_url: str | None
) -> str | None:
    """The dashboard URL for the UI buttons, or None when no browser-reachable URL is known.

    The template wins. Otherwise only addresses a browser can open are used: an explicit address or a
    pod IP on a flat network. Service DNS names and the
    API-server proxy are not browser-reachable, so they give no button rather than a broken one.
    """
    if settings.dashboard_url_template:
        return settings.dashboard_url_template.format(
            namespace=namespace or "", cluster=cluster, service=service, submission_id=""
        ).rstrip("/")
    if direct_url and settings.dashboard_access in (DashboardAccess.POD, DashboardAccess.ADDRESS):
        return direct_url.rstrip("/")
    return None
