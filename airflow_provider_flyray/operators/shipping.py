"""The operator's steps for local code: name it, upload what the cluster lacks, defer again if needed.

The local paths exist on the Airflow worker, so every read of them happens here:

1. :func:`localize` (before anything is created): each local ``working_dir`` / ``py_modules`` path is
   checked and hashed, the runtime_env names the ``gcs://`` URIs, and the submission records the packages.
2. :func:`ship_before_deferral`: a running cluster (an address, an existing RayCluster, a local head)
   answers now, so what it lacks is uploaded before deferring.
3. A transient cluster is still starting: the trigger asks the dashboard once it answers and reports
   ``PACKAGES_MISSING``; :func:`resume_after_upload` uploads them (zipped again, the hash checked) and
   defers again with a fresh trigger of the same submission (same submission id: still exactly once).
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import aiohttp
from airflow.providers.common.compat.sdk import AirflowException

from airflow_provider_flyray import packaging
from airflow_provider_flyray.backends import ClusterBackend, backend_for
from airflow_provider_flyray.cluster import ClusterRef
from airflow_provider_flyray.core.session import RaySession
from airflow_provider_flyray.errors import RayJobsApiError
from airflow_provider_flyray.events import RayJobEvent
from airflow_provider_flyray.hooks.ray_cluster import RayClusterHook
from airflow_provider_flyray.jobs_api import DashboardEndpoint, JobSubmission
from airflow_provider_flyray.owners import Ending
from airflow_provider_flyray.packaging import Kind, LocalPackage
from airflow_provider_flyray.retries import backoff_delay
from airflow_provider_flyray.timings import Timings

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_flyray.operators.ray import FlyteRayOperator

# How long the worker waits for a cluster without a startup (a local head takes a few seconds) before
# leaving the upload to the trigger's check and the re-deferral.
WORKER_DASHBOARD_WAIT = 20.0
# A package the worker uploaded this often for one submission and that the cluster still lacks is an
# error, not a loop.
MAX_UPLOADS = 2
UPLOAD_ATTEMPTS = 3
RETRYABLE_UPLOAD_STATUS = (502, 503, 504)


def base_dir_of(op: Any) -> str | None:
    """Relative local paths are relative to the DAG file's folder (the worker's cwd is arbitrary)."""
    dag = op.dag if op.has_dag() else None
    fileloc = getattr(dag, "fileloc", None)
    return os.path.dirname(os.path.abspath(fileloc)) if fileloc else None


def localize(op: FlyteRayOperator, submission: JobSubmission) -> JobSubmission:
    """Step 1: the submission with its local paths replaced by package URIs (a bad path raises
    ConfigError naming the field; nothing has been created yet)."""
    runtime_env, packages = packaging.local_packages(submission.runtime_env, base_dir_of(op))
    if not packages:
        return submission
    for package in packages:
        op.log.info("%s: %s is package %s (%s)", package.field, package.path, package.uri, _size(package.size))
    return replace(submission, runtime_env=runtime_env, packages=[*submission.packages, *packages])


def ship_before_deferral(
    op: FlyteRayOperator, hook: RayClusterHook, backend: ClusterBackend, ref: ClusterRef, submission: JobSubmission
) -> JobSubmission:
    """Step 2: upload now what a running cluster lacks (an address, an existing RayCluster, a local head);
    a cluster this task is creating is still starting: left to step 3."""
    if not submission.packages or (backend.has_startup and ref.owned):
        return submission

    async def step(session: RaySession) -> JobSubmission:
        endpoint = await backend.dashboard(session, ref)
        problem, error = await session.dashboard.wait_until_answering(
            endpoint, time.time() + WORKER_DASHBOARD_WAIT, lambda: backend.startup_problem(session, ref)
        )
        if problem is not None or error is not None:
            op.log.info("The Ray dashboard does not answer yet (%s): the trigger checks the packages", problem or error)
            return submission
        return await upload_missing(session, endpoint, submission, op.log)

    return hook.run(step)


def resume_after_upload(op: FlyteRayOperator, context: Context, event: RayJobEvent) -> Any:
    """Step 3 (``execute_complete`` of a ``PACKAGES_MISSING`` event): upload, then wait again for the
    same submission on the same cluster. The cluster is released only if this fails."""
    ref = event.cluster
    submission = JobSubmission.from_dict(event.submission or {})
    owner = op.cluster_owner(context)
    hook = RayClusterHook(op.ray_conn_id, namespace=ref.namespace)
    try:
        stuck = [p for p in submission.packages if p.uri in event.missing_packages and p.uploads >= MAX_UPLOADS]
        if stuck:
            raise AirflowException(
                f"{stuck[0].field}: the Ray cluster still lacks {stuck[0].uri} after {stuck[0].uploads} uploads"
            )
        backend = backend_for(ref)

        async def step(session: RaySession) -> JobSubmission:
            endpoint = await backend.dashboard(session, ref)
            return await upload_missing(session, endpoint, submission, op.log)

        submission = hook.run(step)
        timings = Timings(event.timings)
        timings.mark("packages_uploaded")
        trigger = op.build_trigger(context, ref, submission, owner, timings)
    except BaseException:
        op.release_cluster(hook, ref, Ending.FAILED, owner.key)
        raise
    op._ref, op._submission_id = ref, submission.submission_id
    if op.deferrable and op.wait_for_completion:
        op.log.info("Deferring again, for Ray job %s", submission.submission_id)
        op.defer(trigger=trigger, method_name="execute_complete")
    return op.execute_complete(context, op._wait_on_worker(trigger))


async def upload_missing(
    session: RaySession, endpoint: DashboardEndpoint, submission: JobSubmission, log: logging.Logger | Any
) -> JobSubmission:
    """Ask the cluster for each package, upload those it lacks; the submission counts the uploads."""
    packages: list[LocalPackage] = []
    for package in submission.packages:
        if await session.dashboard.package_exists(endpoint, package.uri):
            log.info("%s: %s is already on the cluster, not uploaded", package.field, package.uri)
        else:
            await upload(session, endpoint, package, log)
            package = package.uploaded()
        packages.append(package)
    return replace(submission, packages=packages)


async def upload(session: RaySession, endpoint: DashboardEndpoint, package: LocalPackage, log: Any) -> None:
    """Zip (or take the archive as it is), check it still has the hash it is named by, PUT it streamed."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="flyray-pkg-") as scratch:
        if package.kind == Kind.ARCHIVE.value:
            if not await asyncio.to_thread(packaging.archive_unchanged, package):
                raise _changed(package)
            body, size = package.path, os.path.getsize(package.path)
        else:
            body = os.path.join(scratch, package.name)
            size = await asyncio.to_thread(_zip_to, package, body)
        for attempt in range(1, UPLOAD_ATTEMPTS + 1):
            try:
                await session.dashboard.upload_package(endpoint, package.uri, body)
                break
            except (aiohttp.ClientError, TimeoutError, RayJobsApiError) as exc:
                if attempt == UPLOAD_ATTEMPTS or (
                    isinstance(exc, RayJobsApiError) and exc.status not in RETRYABLE_UPLOAD_STATUS
                ):
                    raise
                delay = backoff_delay(attempt)
                log.warning("Uploading %s failed (%s), retrying in %.1fs", package.uri, type(exc).__name__, delay)
                await asyncio.sleep(delay)
    log.info(
        "%s: uploaded %s as %s (%s) in %.2fs",
        package.field,
        package.path,
        package.uri,
        _size(size),
        time.monotonic() - started,
    )


def _zip_to(package: LocalPackage, path: str) -> int:
    with open(path, "wb") as out:
        try:
            packaging.write_zip(package, out)
        except packaging.PackageChanged:
            raise _changed(package) from None
        except packaging.PackageTooLarge as exc:
            packaging.check_size(replace(package, size=int(exc.args[0])))
        return out.tell()


def _changed(package: LocalPackage) -> AirflowException:
    return AirflowException(
        f"{package.field}: {package.path} changed while the task ran (its content no longer hashes to "
        f"{package.uri}, the package the job was named with); leave it unchanged while the task runs, "
        "or ship a copy"
    )


def _size(size: int) -> str:
    return f"{size / 1024**2:.2f} MiB" if size >= 1024**2 else f"{size / 1024:.1f} KiB"
