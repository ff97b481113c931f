"""How the core turns transport failures into errors a DAG author can act on, and when it retries.

One policy for every Kubernetes call: 403 names the Role, a TLS failure names the setting that fixes it
(never retried: an untrusted certificate stays untrusted), 408/429/5xx and dropped connections are
retried with the backoff of :mod:`~airflow_provider_flyray.retries`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

from airflow_provider_flyray.errors import TLSVerificationError
from airflow_provider_flyray.jobs_api import DashboardEndpoint
from airflow_provider_flyray.retries import MAX_ATTEMPTS, backoff_delay, is_retryable_status

T = TypeVar("T")
M = TypeVar("M")

RBAC_HINT = (
    "Check the service account's Role (docker/rbac.yaml lists what the provider needs; pools, reuse=, "
    "also need docker/rbac-pools.yaml; RayJob mode, kuberay_resource='RayJob', docker/rbac-rayjob.yaml) "
    "and the namespace."
)
KUBE_TLS_HINT = (
    "fix the kubeconfig's certificate-authority (the CA that signed the API server's certificate), "
    "or set the connection's `disable_verify_ssl: true` to skip verification (not recommended)"
)
DASHBOARD_TLS_HINT = (
    "make this machine trust the dashboard's certificate, "
    "or set the connection's `verify_tls: false` to skip verification (not recommended)"
)


def tls_failure(exc: BaseException) -> str | None:
    """The certificate problem behind ``exc``, or None when it is not a TLS verification failure."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return str(exc.certificate_error)
    import ssl

    if isinstance(exc, ssl.SSLCertVerificationError):
        return str(exc)
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return str(cause)
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


def kube_reason(exc: Any) -> str:
    with contextlib.suppress(Exception):
        body = json.loads(exc.body)
        return str(body.get("message") or exc.reason)
    return str(getattr(exc, "reason", exc))


def _retry_after(exc: Any) -> str | None:
    headers = getattr(exc, "headers", None) or {}
    return headers.get("Retry-After") if hasattr(headers, "get") else None


async def with_retries(what: str, call: Callable[[], Awaitable[T]], log: logging.Logger | Any) -> T:
    """Run one Kubernetes call under the retry policy."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            return await call()
        except ApiException as exc:
            if exc.status == 403:
                raise PermissionError(f"{what}: Kubernetes refused (403): {kube_reason(exc)}. {RBAC_HINT}") from None
            if not is_retryable_status(exc.status) or attempt == MAX_ATTEMPTS:
                raise
            delay = backoff_delay(attempt, _retry_after(exc))
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            if (problem := tls_failure(exc)) is not None:
                raise kube_tls_error(what, problem) from None
            if attempt == MAX_ATTEMPTS:
                raise
            delay = backoff_delay(attempt)
            log.warning("%s: connection problem (%s), retrying in %.1fs", what, type(exc).__name__, delay)
        await asyncio.sleep(delay)
    raise AssertionError("unreachable")


async def unless_missing(what: str, call: Callable[[], Awaitable[T]], log: logging.Logger | Any, missing: M) -> T | M:
    """:func:`with_retries`, where a 404 (the object does not exist) answers ``missing``."""
    try:
        return await with_retries(what, call, log)
    except ApiException as exc:
        if exc.status == 404:
            return missing
        raise
