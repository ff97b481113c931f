"""The Ray Jobs REST API, as requests and parsed answers. Pure: the one transport
(:mod:`~airflow_provider_flyray.core.dashboard`, aiohttp) sends these requests and reads answers with
these functions; tests and test doubles use them too.

Endpoints (served by the head's dashboard, port 8265): ``POST /api/jobs/``, ``GET /api/jobs/{id}``,
``GET /api/jobs/{id}/logs``, WebSocket ``/api/jobs/{id}/logs/tail``, ``POST /api/jobs/{id}/stop``,
``GET /api/jobs/``, ``GET /api/version``; the state API's raw driver log, ``GET /api/v0/logs/file`` and
``/api/v0/logs/stream`` (by the job's ``driver_node_id``); a runtime_env package:
``GET /api/packages/gcs/{name}`` (200: the cluster has it, and pins it for a while; 404: it has not),
``PUT`` the same path with the raw zip.
"""

from __future__ import annotations

import json
import re
import ssl
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import quote

from airflow_provider_flyray.connection import DashboardAccess
from airflow_provider_flyray.errors import RayJobsApiError
from airflow_provider_flyray.packaging import LocalPackage

LOG_TAIL_LINES = 50


@dataclass(frozen=True)
class JobSubmission:
    """Everything needed to submit one Ray job. Contains no credentials: it travels in trigger kwargs."""

    submission_id: str
    entrypoint: str
    runtime_env: dict[str, Any] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    entrypoint_num_cpus: float | None = None
    entrypoint_num_gpus: float | None = None
    entrypoint_memory: int | None = None
    entrypoint_resources: dict[str, float] | None = None
    # Local code the runtime_env names by URI, to upload before submitting (never sent to Ray).
    packages: list[LocalPackage] = field(default_factory=list)

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"entrypoint": self.entrypoint, "submission_id": self.submission_id}
        for key in (
            "runtime_env",
            "entrypoint_num_cpus",
            "entrypoint_num_gpus",
            "entrypoint_memory",
            "entrypoint_resources",
        ):
            value = getattr(self, key)
            if value is not None:
                body[key] = value
        if self.metadata:
            body["metadata"] = dict(self.metadata)
        return body

    def to_dict(self) -> dict[str, Any]:
        return {
            "submission_id": self.submission_id,
            "entrypoint": self.entrypoint,
            "runtime_env": self.runtime_env,
            "metadata": dict(self.metadata),
            "entrypoint_num_cpus": self.entrypoint_num_cpus,
            "entrypoint_num_gpus": self.entrypoint_num_gpus,
            "entrypoint_memory": self.entrypoint_memory,
            "entrypoint_resources": self.entrypoint_resources,
            "packages": [package.to_dict() for package in self.packages],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSubmission:
        values = dict(data)
        values["packages"] = [LocalPackage.from_dict(p) for p in values.get("packages") or []]
        return cls(**values)


@dataclass(frozen=True)
class ApiRequest:
    method: str
    path: str
    json: dict[str, Any] | None = None
    # A file sent as the raw body, streamed from disk (a package upload).
    body_file: str | None = None


def version_request() -> ApiRequest:
    return ApiRequest("GET", "/api/version")


def submit_request(submission: JobSubmission) -> ApiRequest:
    return ApiRequest("POST", "/api/jobs/", submission.body())


def get_job_request(submission_id: str) -> ApiRequest:
    return ApiRequest("GET", f"/api/jobs/{quote(submission_id, safe='')}")


def list_jobs_request() -> ApiRequest:
    return ApiRequest("GET", "/api/jobs/")


def logs_request(submission_id: str) -> ApiRequest:
    return ApiRequest("GET", f"/api/jobs/{quote(submission_id, safe='')}/logs")


# Seconds between the state API's reads of a followed log at its end (Ray's default is 1).
FOLLOW_INTERVAL = 0.5


def driver_log_request(node_id: str, submission_id: str) -> ApiRequest:
    """The job's whole driver log as raw bytes, from Ray's state API (its Jobs API endpoints read the log
    as UTF-8 text: they fail on any other byte and turn each ``\\r`` into a newline)."""
    return ApiRequest("GET", _driver_log_path("file", node_id, submission_id))


def follow_driver_log_request(node_id: str, submission_id: str, interval: float = FOLLOW_INTERVAL) -> ApiRequest:
    """The job's driver log as raw bytes from its start, then followed (every ``interval`` s) for as long
    as the request stays open: Ray never ends it, the reader does."""
    return ApiRequest("GET", _driver_log_path("stream", node_id, submission_id) + f"&interval={interval:g}")


def _driver_log_path(media: str, node_id: str, submission_id: str) -> str:
    # By node and file name: ``submission_id=`` alone answers 500 on Ray 2.60; ``lines=-1``: from the start.
    filename = quote(f"job-driver-{submission_id}.log", safe="")
    return f"/api/v0/logs/{media}?node_id={quote(node_id, safe='')}&filename={filename}&lines=-1"


def stop_request(submission_id: str) -> ApiRequest:
    return ApiRequest("POST", f"/api/jobs/{quote(submission_id, safe='')}/stop")


def package_path(uri: str) -> str:
    """``gcs://_ray_pkg_<hash>.zip`` -> ``/api/packages/gcs/_ray_pkg_<hash>.zip`` (Ray's
    ``uri_to_http_components``)."""
    protocol, _, name = uri.partition("://")
    return f"/api/packages/{quote(protocol, safe='')}/{quote(name, safe='')}"


def package_exists_request(uri: str) -> ApiRequest:
    return ApiRequest("GET", package_path(uri))


def upload_package_request(uri: str, zip_file: str) -> ApiRequest:
    return ApiRequest("PUT", package_path(uri), body_file=zip_file)


def tail_path(submission_id: str) -> str:
    return f"/api/jobs/{quote(submission_id, safe='')}/logs/tail"


def is_agent_not_ready(status: int, text: str) -> bool:
    """Ray's dashboard refuses a submission until a node's job agent has registered, seconds after the
    head is up (longer on a loaded machine): nothing was created, and Ray itself says to try again."""
    return status >= 500 and "No available agent to submit job" in text


def is_duplicate_submission(status: int, text: str) -> bool:
    """Ray answers a reused submission_id with an error (500 with a traceback on 2.60) naming it."""
    return status >= 400 and "already exists" in text


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception)\b.*:")


def error_for(status: int, text: str, what: str) -> RayJobsApiError:
    """A readable error for a failed Jobs API call: the Ray traceback is cut to its last line."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    # Ray's head wraps the job agent's traceback and ends with a lone "." line: the last exception line
    # says what went wrong (e.g. a UnicodeDecodeError reading a log that is not UTF-8).
    raised = [line for line in lines if _EXCEPTION_LINE.match(line)]
    detail = raised[-1] if raised else lines[-1] if lines else ""
    kube_status = _kubernetes_status(text)
    if kube_status is not None:
        # Through the API-server proxy, Kubernetes itself may answer (RBAC, missing service).
        hint = f"Kubernetes refused the request through the API-server proxy: {kube_status}"
    elif status == 401:
        hint = "the Ray dashboard requires a token: set `dashboard_token` on the connection"
    elif status == 403:
        hint = "the Ray dashboard refused the token: check the connection's `dashboard_token`"
    elif status == 404:
        hint = "not found"
    elif status == 413:
        hint = "the Ray dashboard refused a request this large (Ray 2.60 accepts bodies up to 100 MiB)"
    else:
        hint = detail[:500]
    return RayJobsApiError(f"{what} failed with HTTP {status}: {hint}", status=status)


def is_kubernetes_status(text: str) -> bool:
    return _kubernetes_status(text) is not None


def _kubernetes_status(text: str) -> str | None:
    """The message of a Kubernetes ``Status`` object, or None when the body is not one."""
    try:
        body = json.loads(text)
    except (ValueError, TypeError):
        return None
    if isinstance(body, dict) and body.get("kind") == "Status":
        return str(body.get("message") or body.get("reason") or "")
    return None


def last_lines(text: str, count: int = LOG_TAIL_LINES) -> list[str]:
    return text.rstrip("\n").splitlines()[-count:] if text else []


# Ray's message for a failed job: "Job entrypoint command failed with exit code 3, last available logs
# (truncated to 20,000 chars):\n<the job's last lines>".
RAY_MESSAGE_LOGS = ", last available logs ("


def message_without_logs(message: str | None, shown: list[str]) -> str | None:
    """Ray's job message without the log lines it appends when the failure message shows them anyway
    (they end the ``shown`` lines): each line once. Lines Ray has and ``shown`` lacks (the log could
    not be read to its end) are kept."""
    if not message:
        return message
    head, found, appended = message.partition(RAY_MESSAGE_LOGS)
    # After the marker: "truncated to N chars):", then the lines.
    lines = [line for line in appended.partition("\n")[2].rstrip("\n").split("\n") if line]
    if not found or (lines and shown[-len(lines) :] != lines):
        return message
    return head


def jobs_of_task(jobs: list[dict[str, Any]], task_key: str) -> list[dict[str, Any]]:
    """Jobs submitted for any try of one task instance, oldest first."""
    mine = [j for j in jobs if (j.get("metadata") or {}).get("airflow_task_key") == task_key]
    return sorted(mine, key=lambda j: j.get("start_time") or 0)


@dataclass(frozen=True, repr=False)
class DashboardEndpoint:
    """Where and how to reach one Ray dashboard. Holds credentials: never log, serialise or persist it."""

    base_url: str
    headers: dict[str, str] = field(default_factory=dict)
    verify_tls: bool = True
    ca_file: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path

    def ws_url(self, path: str) -> str:
        url = self.url(path)
        return "wss://" + url[len("https://") :] if url.startswith("https://") else "ws://" + url[len("http://") :]

    @cached_property
    def ssl_context(self) -> ssl.SSLContext | bool:
        """For aiohttp: ``False`` disables verification, a context carries a CA and client certificate.

        Built once per endpoint (it reads certificate files): the async session builds it in a thread."""
        if not self.base_url.startswith("https://"):
            return True
        if not self.verify_tls:
            return False
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.client_cert_file:
            context.load_cert_chain(self.client_cert_file, self.client_key_file)
        return context

    def __repr__(self) -> str:
        return f"DashboardEndpoint({self.base_url!r}, headers=<{len(self.headers)} hidden>)"


def token_headers(token: str | None, access: DashboardAccess) -> dict[str, str]:
    """Ray token header. Through the API-server proxy ``Authorization`` belongs to Kubernetes, so the
    token goes in ``X-Ray-Authorization`` (what KubeRay itself sends)."""
    if not token:
        return {}
    header = "X-Ray-Authorization" if access is DashboardAccess.PROXY else "Authorization"
    return {header: f"Bearer {token}"}
