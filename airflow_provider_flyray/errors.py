"""Exceptions with messages a DAG author can act on."""

from __future__ import annotations


class FlyrayError(Exception):
    """Base class of this provider's errors."""


class ConfigError(FlyrayError, ValueError):
    """Invalid input, raised before anything is created. Names the field and what is expected."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class ClusterStartupError(FlyrayError):
    """The Ray cluster did not become ready (unschedulable, crash loop, image pull, timeout...)."""


class ClusterNotOwnedError(FlyrayError):
    """A RayCluster with the name we need exists but was not created for this task: never touched."""


class ClusterGoneError(FlyrayError):
    """The RayCluster disappeared (deleted by someone else) while the job was using it."""


class RayJobsApiError(FlyrayError):
    """The Ray Jobs REST API answered with an error."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class DashboardUnreachableError(RayJobsApiError):
    """The Ray dashboard could not be reached within the allowed time."""


class TLSVerificationError(FlyrayError):
    """A server's TLS certificate was not trusted: never retried, the message says what to fix."""
