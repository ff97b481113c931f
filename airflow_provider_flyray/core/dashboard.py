"""The Ray Jobs API over aiohttp: the requests of :mod:`~airflow_provider_flyray.jobs_api`, sent once.

Every call takes the :class:`~airflow_provider_flyray.jobs_api.DashboardEndpoint` (where and with which
credentials) built by the cluster's backend; nothing here knows about Kubernetes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp

from airflow_provider_flyray import jobs_api, log_text
from airflow_provider_flyray.core.errors import dashboard_tls_error
from airflow_provider_flyray.errors import RayJobsApiError
from airflow_provider_flyray.jobs_api import ApiRequest, DashboardEndpoint, JobSubmission

# A submission refused because no job agent has registered yet is repeated for this long (then the
# refusal is the error), every AGENT_RETRY_FIRST s doubling to AGENT_RETRY_CAP s.
AGENT_WAIT = 60.0
AGENT_RETRY_FIRST = 0.5
AGENT_RETRY_CAP = 5.0

DASHBOARD_TIMEOUT = 30.0
# A job status answers in milliseconds: a hung status call means the dashboard is unreachable, and
# the trigger should find out (and retry) well before the general timeout.
STATUS_TIMEOUT = 10.0
VERSION_TIMEOUT = 5.0
# The end-of-job log is read in pieces of this many bytes (never whole: it can be gigabytes).
LOG_CHUNK_BYTES = 256 * 1024
# Of a failed log call, this much of the answer is read for the error message.
ERROR_BODY_BYTES = 8192
# After a package's last byte, Ray stores it in the GCS before answering: allow it that long.
UPLOAD_READ_TIMEOUT = 120.0
# A call bounded by a deadline still gets this long (a deadline already past must not make it 0).
MIN_TIMEOUT = 0.1


def interpret_response(status: int, text: str, what: str) -> Any:
    """Decode a Jobs API answer or raise the matching error."""
    if status >= 400:
        raise jobs_api.error_for(status, text, what)
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError:
        raise RayJobsApiError(f"{what}: the dashboard answered with non-JSON: {text[:200]!r}", status=status) from None


class DashboardClient:
    def __init__(self, http: aiohttp.ClientSession) -> None:
        self.http = http

    @contextlib.asynccontextmanager
    async def _open(
        self, endpoint: DashboardEndpoint, request: ApiRequest, timeout: aiohttp.ClientTimeout
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send ``request``; a certificate that is not trusted fails at once, saying what to fix. A
        ``body_file`` is streamed from disk (aiohttp reads an open file in chunks, with its length)."""
        with contextlib.ExitStack() as files:
            body = files.enter_context(open(request.body_file, "rb")) if request.body_file else None
            try:
                async with self.http.request(
                    request.method,
                    endpoint.url(request.path),
                    json=request.json,
                    data=body,
                    headers=endpoint.headers,
                    ssl=endpoint.ssl_context,
                    timeout=timeout,
                ) as response:
                    yield response
            except aiohttp.ClientConnectorCertificateError as exc:
                raise dashboard_tls_error(endpoint, exc) from None

    async def call(
        self, endpoint: DashboardEndpoint, request: ApiRequest, timeout: float = DASHBOARD_TIMEOUT
    ) -> tuple[int, str]:
        async with self._open(endpoint, request, aiohttp.ClientTimeout(total=timeout)) as response:
            return response.status, await response.text()

    async def version(self, endpoint: DashboardEndpoint, timeout: float = VERSION_TIMEOUT) -> dict[str, Any]:
        status, text = await self.call(endpoint, jobs_api.version_request(), timeout=timeout)
        return interpret_response(status, text, "dashboard version")

    async def wait_until_answering(
        self, endpoint: DashboardEndpoint, limit: float, startup_problem: Callable[[], Awaitable[str | None]]
    ) -> tuple[str | None, str | None]:
        """Ask for the version until it answers (``(None, None)``), ``startup_problem()`` names a reason
        to stop (``(problem, None)``) or epoch ``limit`` passes (``(None, last error)``). A refused token
        is raised at once."""
        delay = 0.1
        while True:
            try:
                await self.version(endpoint, timeout=min(VERSION_TIMEOUT, max(MIN_TIMEOUT, limit - time.time())))
                return None, None
            except (TimeoutError, aiohttp.ClientError, OSError, RayJobsApiError) as exc:
                if isinstance(exc, RayJobsApiError) and exc.status in (401, 403):
                    raise
                last_error = f"{type(exc).__name__}: {exc}"
            if (problem := await startup_problem()) is not None:
                return problem, None
            if time.time() >= limit:
                return None, last_error
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def get_job(
        self, endpoint: DashboardEndpoint, submission_id: str, timeout: float = STATUS_TIMEOUT
    ) -> dict[str, Any] | None:
        status, text = await self.call(endpoint, jobs_api.get_job_request(submission_id), timeout=timeout)
        if status == 404:
            return None
        return interpret_response(status, text, f"get Ray job {submission_id}")

    async def submit_job(self, endpoint: DashboardEndpoint, submission: JobSubmission) -> str:
        waited_since, delay = time.monotonic(), AGENT_RETRY_FIRST
        while True:
            status, text = await self.call(endpoint, jobs_api.submit_request(submission))
            if not jobs_api.is_agent_not_ready(status, text) or time.monotonic() - waited_since + delay > AGENT_WAIT:
                break
            # Safe to repeat: Ray created nothing, and a repeat of a created id answers "already exists".
            await asyncio.sleep(delay)
            delay = min(delay * 2, AGENT_RETRY_CAP)
        if jobs_api.is_duplicate_submission(status, text):
            return submission.submission_id
        return str(interpret_response(status, text, "submit Ray job").get("submission_id", submission.submission_id))

    async def list_jobs(self, endpoint: DashboardEndpoint, timeout: float = DASHBOARD_TIMEOUT) -> list[dict[str, Any]]:
        status, text = await self.call(endpoint, jobs_api.list_jobs_request(), timeout=timeout)
        return list(interpret_response(status, text, "list Ray jobs"))

    async def stop_job(
        self, endpoint: DashboardEndpoint, submission_id: str, timeout: float = DASHBOARD_TIMEOUT
    ) -> bool:
        status, text = await self.call(endpoint, jobs_api.stop_request(submission_id), timeout=timeout)
        if status == 404:
            return False
        return bool(interpret_response(status, text, f"stop Ray job {submission_id}").get("stopped"))

    async def package_exists(self, endpoint: DashboardEndpoint, uri: str) -> bool:
        """Whether the cluster has a runtime_env package (asking also pins it there for a while)."""
        status, text = await self.call(endpoint, jobs_api.package_exists_request(uri), timeout=STATUS_TIMEOUT)
        # A 404 from Kubernetes itself (through the API-server proxy: no such service) is an error, not
        # a missing package: uploading would only fail the same way.
        if status == 404 and not jobs_api.is_kubernetes_status(text):
            return False
        if status >= 400:
            raise jobs_api.error_for(status, text, f"check package {uri}")
        return True

    async def upload_package(self, endpoint: DashboardEndpoint, uri: str, zip_file: str) -> None:
        """PUT a package's zip, streamed from ``zip_file``. Only each read and write is bounded: a large
        package over a slow link may take longer than DASHBOARD_TIMEOUT in all."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=DASHBOARD_TIMEOUT, sock_read=UPLOAD_READ_TIMEOUT)
        async with self._open(endpoint, jobs_api.upload_package_request(uri, zip_file), timeout) as response:
            if response.status >= 400:
                body = await response.content.read(ERROR_BODY_BYTES)
                raise jobs_api.error_for(response.status, body.decode("utf-8", "replace"), f"upload package {uri}")

    async def stream_log(
        self, endpoint: DashboardEndpoint, request: ApiRequest, what: str, raw: bool, total: float | None
    ) -> AsyncIterator[str]:
        """A whole log as text pieces, read as it arrives: the value of ``GET /api/jobs/{id}/logs``
        (``raw=False``, a JSON string) or raw bytes decoded with replacement characters (``raw=True``).
        A long log may take longer than DASHBOARD_TIMEOUT: only each read is bounded, and ``total``."""
        timeout = aiohttp.ClientTimeout(total=total, sock_connect=DASHBOARD_TIMEOUT, sock_read=DASHBOARD_TIMEOUT)
        decode = log_text.utf8_text_decoder().decode if raw else log_text.JsonStringStream().feed
        async for chunk in self.stream_bytes(endpoint, request, what, timeout):
            if text := decode(chunk, False):
                yield text
        if text := decode(b"", True):
            yield text

    async def stream_bytes(
        self, endpoint: DashboardEndpoint, request: ApiRequest, what: str, timeout: aiohttp.ClientTimeout
    ) -> AsyncGenerator[bytes, None]:
        """An answer's body in chunks of at most LOG_CHUNK_BYTES, as they arrive; an error answer raises."""
        async with self._open(endpoint, request, timeout) as response:
            if response.status >= 400:
                body = await response.content.read(ERROR_BODY_BYTES)
                raise jobs_api.error_for(response.status, body.decode("utf-8", "replace"), what)
            async for chunk in response.content.iter_chunked(LOG_CHUNK_BYTES):
                yield chunk

    def job_log_text(
        self, endpoint: DashboardEndpoint, submission_id: str, total: float | None = None
    ) -> AsyncIterator[str]:
        request = jobs_api.logs_request(submission_id)
        return self.stream_log(endpoint, request, f"logs of Ray job {submission_id}", False, total)

    def driver_log_text(
        self, endpoint: DashboardEndpoint, node_id: str, submission_id: str, total: float | None = None
    ) -> AsyncIterator[str]:
        request = jobs_api.driver_log_request(node_id, submission_id)
        return self.stream_log(endpoint, request, f"driver log of Ray job {submission_id}", True, total)

    def driver_log_bytes(
        self, endpoint: DashboardEndpoint, node_id: str, submission_id: str, total: float | None = None
    ) -> AsyncGenerator[bytes, None]:
        """The whole raw driver log (state API), as it arrives; only each read is bounded, and ``total``."""
        timeout = aiohttp.ClientTimeout(total=total, sock_connect=DASHBOARD_TIMEOUT, sock_read=DASHBOARD_TIMEOUT)
        request = jobs_api.driver_log_request(node_id, submission_id)
        return self.stream_bytes(endpoint, request, f"driver log of Ray job {submission_id}", timeout)

    def follow_driver_log(
        self, endpoint: DashboardEndpoint, node_id: str, submission_id: str
    ) -> AsyncGenerator[bytes, None]:
        """The raw driver log from its start, then followed; it never ends by itself (a quiet job sends
        nothing for as long as it is quiet: no read timeout)."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=DASHBOARD_TIMEOUT, sock_read=None)
        request = jobs_api.follow_driver_log_request(node_id, submission_id)
        return self.stream_bytes(endpoint, request, f"followed driver log of Ray job {submission_id}", timeout)

    async def tail_job_logs(self, endpoint: DashboardEndpoint, submission_id: str) -> AsyncIterator[str]:
        """Text chunks from the WebSocket log tail; ends when Ray closes it (normally: the job ended)."""
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
