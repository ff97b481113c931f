"""RayClusterHook: every Kubernetes and Ray dashboard call this provider makes.

Synchronous methods (``kubernetes`` + ``requests``) serve the worker; :class:`AsyncRaySession`
(``kubernetes_asyncio`` + ``aiohttp``) serves the trigger. Both send the requests built in
:mod:`~airflow_provider_flyray.jobs_api` and read states with :mod:`~airflow_provider_flyray.status`:
they differ only in transport.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import cached_property
from typing import Any, TypeVar

import aiohttp
import requests
from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook, KubernetesHook
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException
from kubernetes_asyncio import client as ak8s
from kubernetes_asyncio import watch as awatch
from kubernetes_asyncio.client.exceptions import ApiException as AsyncApiException
from urllib3.exceptions import HTTPError as Urllib3HTTPError
from urllib3.exceptions import SSLError as Urllib3SSLError

from airflow_provider_flyray import jobs_api
from airflow_provider_flyray.cluster import Backend, ClusterRef
from airflow_provider_flyray.connection import (
    ConnectionSettings,
    DashboardAccess,
    parse_connection_extras,
)
from airflow_provider_flyray.errors import (
    ClusterNotOwnedError,
    ConfigError,
    DashboardUnreachableError,
    RayJobsApiError,
    TLSVerificationError,
)
from airflow_provider_flyray.jobs_api import ApiRequest, DashboardEndpoint, JobSubmission
from airflow_provider_flyray.manifest import (
    DASHBOARD_PORT,
    RAY_API_GROUP,
    RAY_API_VERSION,
    RAYCLUSTER_PLURAL,
    head_service_name,
)
from airflow_provider_flyray.naming import MANAGED_BY_LABEL, MANAGED_BY_VALUE, OWNER_ANNOTATION
from airflow_provider_flyray.retries import MAX_ATTEMPTS, backoff_delay, is_retryable_status
from airflow_provider_flyray.status import Startup, StartupVerdict, dashboard_port_of, interpret_startup

T = TypeVar("T")
DASHBOARD_TIMEOUT = 30.0
# A job status answers in milliseconds: a hung status call means the dashboard is unreachable, and
# the trigger should find out (and retry) well before the general timeout.
STATUS_TIMEOUT = 10.0
RAY_TOKEN_SECRET_KEY = "auth_token"
RBAC_HINT = "Check the service account's Role (docker/rbac.yaml lists what the provider needs) and the namespace."


# --------------------------------------------------------------------------------------------------
# Pure helpers shared by both transports
# --------------------------------------------------------------------------------------------------


def is_owned_by(cluster: dict[str, Any], owner_key: str) -> bool:
    meta = cluster.get("metadata") or {}
    return (meta.get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE and (meta.get("annotations") or {}).get(
        OWNER_ANNOTATION
    ) == owner_key


def is_managed(cluster: dict[str, Any]) -> bool:
    return ((cluster.get("metadata") or {}).get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE


def deletion_refusal(cluster: dict[str, Any] | None, ref: ClusterRef, owner_key: str | None) -> str | None:
    """Why this provider must not delete ``cluster`` (None: it may). Shared by both transports."""
    if not ref.owned:
        return f"{ref.describe()} was not created by this task"
    if cluster is None:
        return f"{ref.describe()} no longer exists"
    if not is_managed(cluster) or (owner_key is not None and not is_owned_by(cluster, owner_key)):
        return f"{ref.describe()} is not managed by this provider for this task"
    return None


def direct_dashboard_url(settings: ConnectionSettings, ref: ClusterRef, cluster: dict[str, Any] | None) -> str | None:
    """The dashboard base URL for the service/pod/address modes; None when it cannot be known yet."""
    if ref.address:
        return ref.address
    if settings.dashboard_access is DashboardAccess.ADDRESS:
        return settings.dashboard_address
    if cluster is None:
        return None
    port = dashboard_port_of(cluster, DASHBOARD_PORT)
    if settings.dashboard_access is DashboardAccess.SERVICE:
        return f"http://{head_service_name(ref.name)}.{ref.namespace}.svc.cluster.local:{port}"
    if settings.dashboard_access is DashboardAccess.POD:
        pod_ip = ((cluster.get("status") or {}).get("head") or {}).get("podIP")
        return f"http://{pod_ip}:{port}" if pod_ip else None
    return None


def proxy_dashboard_url(api_host: str, ref: ClusterRef) -> str:
    service = head_service_name(ref.name)
    return f"{api_host.rstrip('/')}/api/v1/namespaces/{ref.namespace}/services/{service}:dashboard/proxy"


def token_headers(token: str | None, access: DashboardAccess) -> dict[str, str]:
    """Ray token header. Through the API-server proxy ``Authorization`` belongs to Kubernetes, so the
    token goes in ``X-Ray-Authorization`` (what KubeRay itself sends)."""
    if not token:
        return {}
    header = "X-Ray-Authorization" if access is DashboardAccess.PROXY else "Authorization"
    return {header: f"Bearer {token}"}


def kube_auth_endpoint(configuration: Any, base_url: str, extra_headers: dict[str, str]) -> DashboardEndpoint:
    """A DashboardEndpoint that authenticates to the API server like the Kubernetes client does."""
    headers = dict(extra_headers)
    # kubernetes(_asyncio) keep a token under "BearerToken" (already "Bearer ..."-prefixed) when loaded
    # from a kubeconfig or in-cluster; older configurations use "authorization" with a prefix.
    # (Read from the dicts: kubernetes_asyncio's get_api_key_with_prefix is a coroutine.)
    api_keys, prefixes = configuration.api_key or {}, configuration.api_key_prefix or {}
    for key in ("BearerToken", "authorization"):
        if api_keys.get(key):
            prefix = prefixes.get(key)
            headers["Authorization"] = f"{prefix} {api_keys[key]}" if prefix else str(api_keys[key])
            break
    return DashboardEndpoint(
        base_url=base_url,
        headers=headers,
        verify_tls=bool(configuration.verify_ssl),
        ca_file=configuration.ssl_ca_cert,
        client_cert_file=configuration.cert_file,
        client_key_file=configuration.key_file,
    )


def cluster_token_secret_name(
    settings: ConnectionSettings, cluster: dict[str, Any] | None, ref: ClusterRef
) -> str | None:
    """The Secret holding the Ray token: the connection's, or KubeRay's for a token-auth cluster."""
    if settings.dashboard_token:
        return None
    if settings.dashboard_token_secret:
        return settings.dashboard_token_secret
    auth = ((cluster or {}).get("spec") or {}).get("authOptions") or {}
    if str(auth.get("mode", "")).lower() == "token":
        return str(auth.get("secretName") or ref.name)
    return None


KUBE_TLS_HINT = (
    "fix the kubeconfig's certificate-authority (the CA that signed the API server's certificate), "
    "or set the connection's `disable_verify_ssl: true` to skip verification (not recommended)"
)
DASHBOARD_TLS_HINT = (
    "make this machine trust the dashboard's certificate, "
    "or set the connection's `verify_tls: false` to skip verification (not recommended)"
)


def tls_failure(exc: BaseException) -> str | None:
    """The certificate problem behind ``exc``, or None when it is not a TLS verification failure (a
    certificate that is not trusted now will not be trusted on a retry: it must fail at once)."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return str(exc.certificate_error)
    if isinstance(exc, requests.exceptions.SSLError | Urllib3SSLError):
        return str(exc)
    reason = getattr(exc, "reason", None)  # urllib3's MaxRetryError wraps the SSLError
    if isinstance(reason, Urllib3SSLError):
        return str(reason)
    return None


def kube_tls_error(what: str, problem: str) -> TLSVerificationError:
    return TLSVerificationError(
        f"{what}: the Kubernetes API server's TLS certificate is not trusted ({problem}); {KUBE_TLS_HINT}"
    )


def dashboard_tls_error(endpoint: DashboardEndpoint, exc: BaseException) -> TLSVerificationError:
    return TLSVerificationError(
        f"the TLS certificate of the Ray dashboard at {endpoint.base_url} is not trusted "
        f"({tls_failure(exc) or exc}); {DASHBOARD_TLS_HINT}"
    )


def interpret_response(status: int, text: str, what: str) -> Any:
    """Decode a Jobs API answer or raise the matching error."""
    if status >= 400:
        raise jobs_api.error_for(status, text, what)
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError:
        raise RayJobsApiError(f"{what}: the dashboard answered with non-JSON: {text[:200]!r}", status=status) from None


# --------------------------------------------------------------------------------------------------
# The hook (synchronous surface, for the worker)
# --------------------------------------------------------------------------------------------------


class RayClusterHook(KubernetesHook):
    """Create, find and delete RayClusters and talk to their Ray dashboard.

    :param ray_conn_id: a connection of type ``flyray`` (default ``ray_default``; when that id does not
        exist the default kubeconfig / in-cluster credentials are used with the default settings).
    :param namespace: overrides the connection's namespace.
    """

    conn_name_attr = "ray_conn_id"
    default_conn_name = "ray_default"
    conn_type = "flyray"
    hook_name = "Ray (flyray: KubeRay or local)"

    def __init__(
        self, ray_conn_id: str | None = default_conn_name, namespace: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(conn_id=ray_conn_id, **kwargs)
        self.ray_conn_id = ray_conn_id
        self._namespace_override = namespace

    # ---- connection -------------------------------------------------------------------------------

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Form fields for Airflow 3.0/3.1 (3.2+ builds the form from provider info)."""
        from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import BooleanField, PasswordField, StringField

        widgets: dict[str, Any] = super().get_connection_form_widgets()
        widgets.update(
            {
                "backend": StringField(lazy_gettext("Backend (kubernetes|local)"), widget=BS3TextFieldWidget()),
                "dashboard_access": StringField(
                    lazy_gettext("Dashboard access (service|proxy|pod|address)"), widget=BS3TextFieldWidget()
                ),
                "dashboard_address": StringField(lazy_gettext("Dashboard address"), widget=BS3TextFieldWidget()),
                "dashboard_url_template": StringField(
                    lazy_gettext("Public dashboard URL template"), widget=BS3TextFieldWidget()
                ),
                "dashboard_token": PasswordField(lazy_gettext("Dashboard token"), widget=BS3PasswordFieldWidget()),
                "verify_tls": BooleanField(lazy_gettext("Verify dashboard TLS"), default=True),
            }
        )
        return widgets

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {"hidden_fields": ["host", "schema", "login", "password", "port", "extra"], "relabeling": {}}

    @cached_property
    def settings(self) -> ConnectionSettings:
        return parse_connection_extras(dict(self.conn_extras))

    def get_namespace(self) -> str:
        return self._namespace_override or self.settings.namespace

    def validate(self) -> ConnectionSettings:
        """Parse the connection now: bad fields fail before anything is created."""
        settings = self.settings
        path = self.conn_extras.get("kube_config_path")
        if settings.backend is Backend.KUBERNETES and path and not os.access(str(path), os.R_OK):
            # The Kubernetes client would only say "Invalid kube-config file. No configuration found."
            raise ConfigError(
                "connection.extra.kube_config_path",
                f"{path!r} does not exist or is not readable; expected the path of a kubeconfig file on the worker",
            )
        return settings

    # ---- Kubernetes, with retries -----------------------------------------------------------------

    def _kube_call(self, what: str, call: Callable[[], T]) -> T:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return call()
            except ApiException as exc:
                if exc.status == 403:
                    raise PermissionError(
                        f"{what}: Kubernetes refused (403): {_kube_reason(exc)}. {RBAC_HINT}"
                    ) from None
                if not is_retryable_status(exc.status) or attempt == MAX_ATTEMPTS:
                    raise
                delay = backoff_delay(attempt, _retry_after(exc))
            except (Urllib3HTTPError, OSError) as exc:
                if (problem := tls_failure(exc)) is not None:
                    raise kube_tls_error(what, problem) from None
                if attempt == MAX_ATTEMPTS:
                    raise
                delay = backoff_delay(attempt)
                self.log.warning("%s: connection problem (%s), retrying in %.1fs", what, type(exc).__name__, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")

    @cached_property
    def _custom(self) -> k8s.CustomObjectsApi:
        return k8s.CustomObjectsApi(self.api_client)

    @cached_property
    def _core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self.api_client)

    def create_cluster(self, manifest: dict[str, Any]) -> dict[str, Any]:
        namespace = manifest["metadata"]["namespace"]
        return self._kube_call(
            f"create RayCluster {namespace}/{manifest['metadata']['name']}",
            lambda: self._custom.create_namespaced_custom_object(
                RAY_API_GROUP, RAY_API_VERSION, namespace, RAYCLUSTER_PLURAL, manifest
            ),
        )

    def get_cluster(self, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            return self._kube_call(
                f"get RayCluster {namespace}/{name}",
                lambda: self._custom.get_namespaced_custom_object(
                    RAY_API_GROUP, RAY_API_VERSION, namespace, RAYCLUSTER_PLURAL, name
                ),
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list_clusters(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        result = self._kube_call(
            f"list RayClusters in {namespace}",
            lambda: self._custom.list_namespaced_custom_object(
                RAY_API_GROUP, RAY_API_VERSION, namespace, RAYCLUSTER_PLURAL, label_selector=label_selector
            ),
        )
        return list(result.get("items", []))

    def create_or_adopt_cluster(self, manifest: dict[str, Any], owner_key: str) -> tuple[dict[str, Any], bool]:
        """Create the RayCluster; if the name is taken by this task's own cluster, adopt it.

        Returns ``(cluster, created)``. A cluster with that name that is not ours raises
        :class:`ClusterNotOwnedError` and is never touched.
        """
        meta = manifest["metadata"]
        try:
            return self.create_cluster(manifest), True
        except ApiException as exc:
            if exc.status != 409:
                raise ConfigError("ray_job_config", f"Kubernetes refused the RayCluster: {_kube_reason(exc)}") from None
        existing = self.get_cluster(meta["name"], meta["namespace"])
        if existing is None or not is_owned_by(existing, owner_key):
            raise ClusterNotOwnedError(
                f"RayCluster {meta['namespace']}/{meta['name']} already exists and was not created by this task "
                f"(label {MANAGED_BY_LABEL} / annotation {OWNER_ANNOTATION} differ); it is left untouched. "
                "Delete it or rename the task."
            )
        return existing, False

    def delete_cluster(self, ref: ClusterRef, owner_key: str | None = None) -> bool:
        """Delete a cluster this provider created. Refuses clusters without our managed-by label."""
        if ref.backend is Backend.LOCAL:
            from airflow_provider_flyray.hooks.local_ray import stop_local_cluster

            stop_local_cluster(ref)
            return True
        if ref.backend is not Backend.KUBERNETES or not ref.owned or ref.namespace is None:
            return False
        refusal = deletion_refusal(self.get_cluster(ref.name, ref.namespace), ref, owner_key)
        if refusal:
            self.log.warning("Not deleting: %s", refusal)
            return False
        try:
            self._kube_call(
                f"delete {ref.describe()}",
                lambda: self._custom.delete_namespaced_custom_object(
                    RAY_API_GROUP,
                    RAY_API_VERSION,
                    ref.namespace,
                    RAYCLUSTER_PLURAL,
                    ref.name,
                    body=k8s.V1DeleteOptions(propagation_policy="Background"),
                ),
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        self.log.info("Deleted %s", ref.describe())
        return True

    def _secret_token(self, name: str, namespace: str) -> str:
        secret = self._kube_call(
            f"read Secret {namespace}/{name}", lambda: self._core.read_namespaced_secret(name, namespace)
        )
        raw = (secret.data or {}).get(RAY_TOKEN_SECRET_KEY)
        if not raw:
            raise ConfigError(
                "dashboard_token_secret", f"Secret {namespace}/{name} has no key {RAY_TOKEN_SECRET_KEY!r}"
            )
        return base64.b64decode(raw).decode()

    # ---- Ray dashboard (sync transport: requests) --------------------------------------------------

    def dashboard_endpoint(self, ref: ClusterRef) -> DashboardEndpoint:
        settings = self.settings
        cluster = (
            self.get_cluster(ref.name, ref.namespace) if ref.backend is Backend.KUBERNETES and ref.namespace else None
        )
        token = settings.dashboard_token
        secret_name = cluster_token_secret_name(settings, cluster, ref) if ref.backend is Backend.KUBERNETES else None
        if secret_name and ref.namespace:
            token = self._secret_token(secret_name, ref.namespace)
        if ref.backend is Backend.KUBERNETES and not ref.address and settings.dashboard_access is DashboardAccess.PROXY:
            configuration = self.api_client.configuration
            return kube_auth_endpoint(
                configuration, proxy_dashboard_url(configuration.host, ref), token_headers(token, DashboardAccess.PROXY)
            )
        url = direct_dashboard_url(settings, ref, cluster)
        if url is None:
            raise DashboardUnreachableError(
                f"the dashboard address of {ref.describe()} is not known yet (head pod not ready)"
            )
        access = DashboardAccess.ADDRESS if ref.address else settings.dashboard_access
        return DashboardEndpoint(url, token_headers(token, access), verify_tls=settings.verify_tls)

    @cached_property
    def _http(self) -> requests.Session:
        return requests.Session()

    def _dashboard_call(self, endpoint: DashboardEndpoint, request: ApiRequest, what: str) -> tuple[int, str]:
        try:
            response = self._http.request(
                request.method,
                endpoint.url(request.path),
                json=request.json,
                headers=endpoint.headers,
                timeout=DASHBOARD_TIMEOUT,
                **endpoint.requests_kwargs(),
            )
        except requests.exceptions.SSLError as exc:
            raise dashboard_tls_error(endpoint, exc) from None
        return response.status_code, response.text

    def get_job(self, endpoint: DashboardEndpoint, submission_id: str) -> dict[str, Any] | None:
        status, text = self._dashboard_call(endpoint, jobs_api.get_job_request(submission_id), "get job")
        if status == 404:
            return None
        return interpret_response(status, text, f"get Ray job {submission_id}")

    def submit_job(self, endpoint: DashboardEndpoint, submission: JobSubmission) -> str:
        status, text = self._dashboard_call(endpoint, jobs_api.submit_request(submission), "submit")
        if jobs_api.is_duplicate_submission(status, text):
            return submission.submission_id
        return str(interpret_response(status, text, "submit Ray job").get("submission_id", submission.submission_id))

    def stop_job(self, endpoint: DashboardEndpoint, submission_id: str) -> bool:
        status, text = self._dashboard_call(endpoint, jobs_api.stop_request(submission_id), "stop")
        if status == 404:
            return False
        return bool(interpret_response(status, text, f"stop Ray job {submission_id}").get("stopped"))

    def get_job_logs(self, endpoint: DashboardEndpoint, submission_id: str) -> str:
        status, text = self._dashboard_call(endpoint, jobs_api.logs_request(submission_id), "logs")
        return str(interpret_response(status, text, f"logs of Ray job {submission_id}").get("logs", ""))

    def list_jobs(self, endpoint: DashboardEndpoint) -> list[dict[str, Any]]:
        status, text = self._dashboard_call(endpoint, jobs_api.list_jobs_request(), "list")
        return list(interpret_response(status, text, "list Ray jobs"))

    def test_connection(self) -> tuple[bool, str]:
        try:
            settings = self.settings
            if settings.backend is Backend.LOCAL:
                from airflow_provider_flyray.hooks.local_ray import ray_executable

                return True, f"local backend: Ray found at {ray_executable()}"
            namespace = self.get_namespace()
            self._kube_call(
                f"list RayClusters in {namespace}",
                lambda: self._custom.list_namespaced_custom_object(
                    RAY_API_GROUP, RAY_API_VERSION, namespace, RAYCLUSTER_PLURAL, limit=1
                ),
            )
            return True, f"RayClusters readable in namespace {namespace}"
        except ApiException as exc:
            return False, f"Kubernetes answered {exc.status}: {_kube_reason(exc)}"
        except Exception as exc:
            return False, str(exc)

    def async_session(self, log: Any = None) -> AsyncRaySession:
        return AsyncRaySession(self.ray_conn_id, namespace=self._namespace_override, log=log)


def _retry_after(exc: Any) -> str | None:
    headers = getattr(exc, "headers", None) or {}
    return headers.get("Retry-After") if hasattr(headers, "get") else None


def _namespace(ref: ClusterRef) -> str:
    if not ref.namespace:
        raise ConfigError("namespace", f"{ref.describe()} has no namespace")
    return ref.namespace


def _kube_reason(exc: Any) -> str:
    with contextlib.suppress(Exception):
        body = json.loads(exc.body)
        return str(body.get("message") or exc.reason)
    return str(getattr(exc, "reason", exc))


# --------------------------------------------------------------------------------------------------
# The async surface (for the trigger): one kube client and one HTTP session per trigger run
# --------------------------------------------------------------------------------------------------


class AsyncRaySession:
    """Async Kubernetes + Ray dashboard calls sharing one ApiClient and one aiohttp session.

    Use as ``async with RayClusterHook(conn_id).async_session() as session: ...``. Looks the connection
    up asynchronously; nothing here blocks the event loop.
    """

    def __init__(self, ray_conn_id: str | None, namespace: str | None = None, log: Any = None) -> None:
        self.ray_conn_id = ray_conn_id
        self._namespace_override = namespace
        self.settings: ConnectionSettings = ConnectionSettings()
        self._extras: dict[str, Any] = {}
        self._stack = contextlib.AsyncExitStack()
        self._api: ak8s.ApiClient | None = None
        self.http: aiohttp.ClientSession | None = None
        self.log = log or logging.getLogger(__name__)

    async def __aenter__(self) -> AsyncRaySession:
        self._extras = await self._load_extras()
        self.settings = parse_connection_extras(self._extras)
        self.http = await self._stack.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None))
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def _load_extras(self) -> dict[str, Any]:
        from airflow.providers.common.compat.connection import get_async_connection
        from airflow.providers.common.compat.sdk import AirflowNotFoundException

        if not self.ray_conn_id:
            return {}
        try:
            connection = await get_async_connection(self.ray_conn_id)
        except AirflowNotFoundException:
            if self.ray_conn_id == RayClusterHook.default_conn_name:
                return {}
            raise
        return dict(connection.extra_dejson)

    async def kube(self) -> ak8s.ApiClient:
        if self._api is None:
            hook = AsyncKubernetesHook(conn_id=self.ray_conn_id, connection_extras=self._extras)
            self._api = await self._stack.enter_async_context(hook.get_conn())
        return self._api

    async def _kube_call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return await call()
            except AsyncApiException as exc:
                if exc.status == 403:
                    raise PermissionError(
                        f"{what}: Kubernetes refused (403): {_kube_reason(exc)}. {RBAC_HINT}"
                    ) from None
                if not is_retryable_status(exc.status) or attempt == MAX_ATTEMPTS:
                    raise
                delay = backoff_delay(attempt, _retry_after(exc))
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                if (problem := tls_failure(exc)) is not None:
                    raise kube_tls_error(what, problem) from None
                if attempt == MAX_ATTEMPTS:
                    raise
                delay = backoff_delay(attempt)
                self.log.warning("%s: connection problem (%s), retrying in %.1fs", what, type(exc).__name__, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    # ---- Kubernetes ------------------------------------------------------------------------------

    async def get_cluster(self, ref: ClusterRef) -> dict[str, Any] | None:
        api = ak8s.CustomObjectsApi(await self.kube())
        try:
            return await self._kube_call(
                f"get {ref.describe()}",
                lambda: api.get_namespaced_custom_object(
                    RAY_API_GROUP, RAY_API_VERSION, _namespace(ref), RAYCLUSTER_PLURAL, ref.name
                ),
            )
        except AsyncApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def list_pods(self, ref: ClusterRef) -> list[dict[str, Any]]:
        api_client = await self.kube()
        core = ak8s.CoreV1Api(api_client)
        pods = await self._kube_call(
            f"list pods of {ref.describe()}",
            lambda: core.list_namespaced_pod(_namespace(ref), label_selector=f"ray.io/cluster={ref.name}"),
        )
        return [api_client.sanitize_for_serialization(p) for p in pods.items]

    async def list_events(self, ref: ClusterRef, pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
        api_client = await self.kube()
        core = ak8s.CoreV1Api(api_client)
        names = {ref.name} | {(p.get("metadata") or {}).get("name") for p in pods}
        events = await self._kube_call(
            f"list events of {ref.describe()}", lambda: core.list_namespaced_event(_namespace(ref))
        )
        items = [api_client.sanitize_for_serialization(e) for e in events.items]
        return [e for e in items if (e.get("involvedObject") or {}).get("name") in names]

    async def pod_log_tail(self, ref: ClusterRef, pod: dict[str, Any], lines: int = 20) -> str:
        core = ak8s.CoreV1Api(await self.kube())
        name = str((pod.get("metadata") or {}).get("name"))
        with contextlib.suppress(Exception):
            return str(await core.read_namespaced_pod_log(name, _namespace(ref), tail_lines=lines, previous=False))
        return ""

    async def delete_cluster(self, ref: ClusterRef, owner_key: str | None = None) -> bool:
        if ref.backend is Backend.LOCAL:
            from airflow_provider_flyray.hooks.local_ray import stop_local_cluster

            await asyncio.to_thread(stop_local_cluster, ref)
            return True
        if ref.backend is not Backend.KUBERNETES or not ref.owned:
            return False
        refusal = deletion_refusal(await self.get_cluster(ref), ref, owner_key)
        if refusal:
            self.log.warning("Not deleting: %s", refusal)
            return False
        api = ak8s.CustomObjectsApi(await self.kube())
        try:
            await self._kube_call(
                f"delete {ref.describe()}",
                lambda: api.delete_namespaced_custom_object(
                    RAY_API_GROUP,
                    RAY_API_VERSION,
                    _namespace(ref),
                    RAYCLUSTER_PLURAL,
                    ref.name,
                    body=ak8s.V1DeleteOptions(propagation_policy="Background"),
                ),
            )
        except AsyncApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def wait_until_ready(self, ref: ClusterRef, deadline: float | None) -> StartupVerdict:
        """Watch the RayCluster and its pods until ready, failed, gone or past ``deadline`` (epoch s).

        Two watches (the RayCluster by name, its pods by label) feed one queue; every change is judged
        with :func:`interpret_startup`, so an unschedulable pod or a crash loop fails in seconds.
        """
        queue: asyncio.Queue[str] = asyncio.Queue()
        api_client = await self.kube()
        custom = ak8s.CustomObjectsApi(api_client)
        core = ak8s.CoreV1Api(api_client)

        async def pump(list_call: Callable[..., Any], tag: str, **kwargs: Any) -> None:
            while True:
                try:
                    async with awatch.Watch().stream(list_call, timeout_seconds=30, **kwargs) as stream:
                        async for _ in stream:
                            queue.put_nowait(tag)
                except asyncio.CancelledError:
                    raise
                except AsyncApiException as exc:
                    if exc.status == 403:
                        # Without `watch` rights the periodic re-check still works, only slower.
                        self.log.warning("cannot watch %s (403): missing 'watch' in the Role; polling instead", tag)
                        return
                    self.log.debug("watch %s restarted after %s", tag, exc)
                    await asyncio.sleep(1)
                except Exception as exc:  # a dropped watch is re-opened; state comes from fresh GETs
                    self.log.debug("watch %s restarted after %s", tag, exc)
                    await asyncio.sleep(1)
                queue.put_nowait(tag)

        watchers = [
            asyncio.create_task(
                pump(
                    custom.list_namespaced_custom_object,
                    "cluster",
                    group=RAY_API_GROUP,
                    version=RAY_API_VERSION,
                    namespace=ref.namespace,
                    plural=RAYCLUSTER_PLURAL,
                    field_selector=f"metadata.name={ref.name}",
                )
            ),
            asyncio.create_task(
                pump(
                    core.list_namespaced_pod,
                    "pods",
                    namespace=ref.namespace,
                    label_selector=f"ray.io/cluster={ref.name}",
                )
            ),
        ]
        try:
            while True:
                cluster, pods = await asyncio.gather(self.get_cluster(ref), self.list_pods(ref))
                verdict = interpret_startup(cluster, pods)
                if verdict.state is Startup.FAILED:
                    details = await self._failure_details(ref, pods)
                    return StartupVerdict(Startup.FAILED, f"{verdict.reason}{details}")
                if verdict.state is not Startup.PENDING:
                    return verdict
                remaining = None if deadline is None else deadline - time.time()
                if remaining is not None and remaining <= 0:
                    details = await self._failure_details(ref, pods)
                    return StartupVerdict(Startup.FAILED, f"startup_timeout reached: {verdict.reason}{details}")
                # Wake on any change; the periodic wake bounds the lag of KubeRay's status updates.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(queue.get(), timeout=min(5.0, remaining) if remaining else 5.0)
                await asyncio.sleep(0.05)  # coalesce bursts of events into one evaluation
                while not queue.empty():
                    queue.get_nowait()
        finally:
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)

    async def wait_for_deletion(self, ref: ClusterRef, fallback_poll: float = 30.0) -> str:
        """Return a reason as soon as the RayCluster is deleted or marked for deletion.

        One long-lived watch per job (no polling), re-opened from a fresh GET when it ends; without
        `watch` rights it falls back to a GET every ``fallback_poll`` seconds.
        """
        custom = ak8s.CustomObjectsApi(await self.kube())
        can_watch = True
        while True:
            cluster = await self.get_cluster(ref)
            if cluster is None or (cluster.get("metadata") or {}).get("deletionTimestamp"):
                return f"{ref.describe()} was deleted while the Ray job was running"
            if not can_watch:
                await asyncio.sleep(fallback_poll)
                continue
            try:
                async with awatch.Watch().stream(
                    custom.list_namespaced_custom_object,
                    group=RAY_API_GROUP,
                    version=RAY_API_VERSION,
                    namespace=_namespace(ref),
                    plural=RAYCLUSTER_PLURAL,
                    field_selector=f"metadata.name={ref.name}",
                    resource_version=(cluster.get("metadata") or {}).get("resourceVersion"),
                    timeout_seconds=300,
                ) as stream:
                    async for event in stream:
                        obj = event.get("object") or {}
                        meta = obj.get("metadata") if isinstance(obj, dict) else None
                        if event.get("type") == "DELETED" or (meta or {}).get("deletionTimestamp"):
                            return f"{ref.describe()} was deleted while the Ray job was running"
            except asyncio.CancelledError:
                raise
            except AsyncApiException as exc:
                if exc.status == 403:
                    self.log.warning("cannot watch %s (403); checking it every %.0fs", ref.describe(), fallback_poll)
                    can_watch = False
                else:
                    await asyncio.sleep(1)
            except Exception as exc:  # dropped watch: re-open from a fresh GET
                self.log.debug("deletion watch of %s restarted after %s", ref.describe(), exc)
                await asyncio.sleep(1)

    async def _failure_details(self, ref: ClusterRef, pods: list[dict[str, Any]]) -> str:
        from airflow_provider_flyray.status import summarize_events

        parts = []
        with contextlib.suppress(Exception):
            events = summarize_events(await self.list_events(ref, pods))
            if events:
                parts.append(f"events: {events}")
        for pod in pods:
            if (((pod.get("metadata") or {}).get("labels") or {}).get("ray.io/node-type")) == "head":
                output = (await self.pod_log_tail(ref, pod)).strip()
                if output:
                    parts.append(f"head output:\n{output}")
        return ("; " + "; ".join(parts)) if parts else ""

    async def _secret_token(self, name: str, namespace: str) -> str:
        core = ak8s.CoreV1Api(await self.kube())
        secret = await self._kube_call(
            f"read Secret {namespace}/{name}", lambda: core.read_namespaced_secret(name, namespace)
        )
        raw = (secret.data or {}).get(RAY_TOKEN_SECRET_KEY)
        if not raw:
            raise ConfigError(
                "dashboard_token_secret", f"Secret {namespace}/{name} has no key {RAY_TOKEN_SECRET_KEY!r}"
            )
        return base64.b64decode(raw).decode()

    # ---- Ray dashboard (async transport: aiohttp) -------------------------------------------------

    async def dashboard_endpoint(self, ref: ClusterRef, cluster: dict[str, Any] | None = None) -> DashboardEndpoint:
        settings = self.settings
        if ref.backend is Backend.KUBERNETES and cluster is None:
            cluster = await self.get_cluster(ref)
        token = settings.dashboard_token
        secret_name = cluster_token_secret_name(settings, cluster, ref) if ref.backend is Backend.KUBERNETES else None
        if secret_name and ref.namespace:
            token = await self._secret_token(secret_name, ref.namespace)
        if ref.backend is Backend.KUBERNETES and not ref.address and settings.dashboard_access is DashboardAccess.PROXY:
            configuration = (await self.kube()).configuration
            endpoint = kube_auth_endpoint(
                configuration,
                proxy_dashboard_url(str(configuration.host), ref),
                token_headers(token, DashboardAccess.PROXY),
            )
            await asyncio.to_thread(lambda: endpoint.ssl_context)  # reads certificate files
            return endpoint
        url = direct_dashboard_url(settings, ref, cluster)
        if url is None:
            raise DashboardUnreachableError(
                f"the dashboard address of {ref.describe()} is not known (head pod has no IP)"
            )
        access = DashboardAccess.ADDRESS if ref.address else settings.dashboard_access
        return DashboardEndpoint(url, token_headers(token, access), verify_tls=settings.verify_tls)

    async def call(
        self, endpoint: DashboardEndpoint, request: ApiRequest, timeout: float = DASHBOARD_TIMEOUT
    ) -> tuple[int, str]:
        assert self.http is not None, "use AsyncRaySession as an async context manager"
        try:
            async with self.http.request(
                request.method,
                endpoint.url(request.path),
                json=request.json,
                headers=endpoint.headers,
                ssl=endpoint.ssl_context,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                return response.status, await response.text()
        except aiohttp.ClientConnectorCertificateError as exc:
            raise dashboard_tls_error(endpoint, exc) from None

    async def version(self, endpoint: DashboardEndpoint) -> dict[str, Any]:
        status, text = await self.call(endpoint, jobs_api.version_request(), timeout=5)
        return interpret_response(status, text, "dashboard version")

    async def get_job(self, endpoint: DashboardEndpoint, submission_id: str) -> dict[str, Any] | None:
        status, text = await self.call(endpoint, jobs_api.get_job_request(submission_id), timeout=STATUS_TIMEOUT)
        if status == 404:
            return None
        return interpret_response(status, text, f"get Ray job {submission_id}")

    async def submit_job(self, endpoint: DashboardEndpoint, submission: JobSubmission) -> str:
        status, text = await self.call(endpoint, jobs_api.submit_request(submission))
        if jobs_api.is_duplicate_submission(status, text):
            return submission.submission_id
        return str(interpret_response(status, text, "submit Ray job").get("submission_id", submission.submission_id))

    async def list_jobs(self, endpoint: DashboardEndpoint) -> list[dict[str, Any]]:
        status, text = await self.call(endpoint, jobs_api.list_jobs_request())
        return list(interpret_response(status, text, "list Ray jobs"))

    async def stop_job(self, endpoint: DashboardEndpoint, submission_id: str) -> bool:
        status, text = await self.call(endpoint, jobs_api.stop_request(submission_id))
        if status == 404:
            return False
        return bool(interpret_response(status, text, f"stop Ray job {submission_id}").get("stopped"))

    async def get_job_logs(self, endpoint: DashboardEndpoint, submission_id: str) -> str:
        status, text = await self.call(endpoint, jobs_api.logs_request(submission_id))
        return str(interpret_response(status, text, f"logs of Ray job {submission_id}").get("logs", ""))

    async def tail_job_logs(self, endpoint: DashboardEndpoint, submission_id: str) -> AsyncIterator[str]:
        """Text chunks from the WebSocket log tail; ends when Ray closes it (normally: the job ended)."""
        assert self.http is not None
        async with self.http.ws_connect(
            endpoint.ws_url(jobs_api.tail_path(submission_id)),
            headers=endpoint.headers,
            ssl=endpoint.ssl_context,
            # No pings: Ray's tail handler only writes, so its aiohttp server never answers a ping and a
            # heartbeat would drop (and replay from the start) every tail of a job quiet for 45 s. A dead
            # stream is noticed by the status checks instead, which re-open it.
            heartbeat=None,
        ) as ws:
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    yield message.data
                elif message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    break
