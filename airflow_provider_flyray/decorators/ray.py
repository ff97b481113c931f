"""``@task.ray``: a Python function as a Ray job's driver, its return value as the task's XCom.

A :class:`~airflow_provider_flyray.operators.ray.FlyteRayOperator` whose submission is built from the
function (:mod:`~airflow_provider_flyray.function_call`) and whose result is the function's return
value (:mod:`~airflow_provider_flyray.results`); everything else (clusters, exactly-once submission,
deferral, logs, links, cleanup) is the operator's, unchanged. Only its two steps are overridden.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import DecoratedOperator, TaskDecorator, task_decorator_factory

from airflow_provider_flyray.function_call import (
    DRIVER_ENTRYPOINT,
    call_json,
    check_arguments,
    function_source,
    job_env_vars,
    new_marker,
    with_env_vars,
)
from airflow_provider_flyray.jobs_api import JobSubmission
from airflow_provider_flyray.operators.ray import FlyteRayOperator

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_flyray.events import RayJobEvent

__all__ = ["RayDecoratedOperator", "ray_task"]


class RayDecoratedOperator(DecoratedOperator, FlyteRayOperator):
    """The operator behind ``@task.ray``; takes every ``FlyteRayOperator`` argument but ``entrypoint``."""

    custom_operator_name = "@task.ray"
    template_fields: Sequence[str] = (
        "op_args",
        "op_kwargs",
        *(f for f in FlyteRayOperator.template_fields if f != "entrypoint"),
    )
    template_fields_renderers = {
        **DecoratedOperator.template_fields_renderers,
        **FlyteRayOperator.template_fields_renderers,
    }
    shallow_copy_attrs: Sequence[str] = ("python_callable",)

    def __init__(self, *, python_callable: Callable[..., Any], **kwargs: Any) -> None:
        if "entrypoint" in kwargs:
            raise TypeError("@task.ray runs the decorated function: it takes no entrypoint")
        # Checked now, so a function that cannot be shipped fails the DAG at parse time.
        function_source(python_callable)
        super().__init__(python_callable=python_callable, entrypoint=DRIVER_ENTRYPOINT, **kwargs)

    def build_submission(self, context: Context) -> JobSubmission:
        """The operator's submission, running the driver with this function and its (rendered,
        XCom-resolved) arguments as JSON; checked before anything is created."""
        check_arguments(self.python_callable, self.op_args, self.op_kwargs)
        call = call_json(function_source(self.python_callable), self.op_args, self.op_kwargs)
        submission = super().build_submission(context)
        env = with_env_vars(submission.runtime_env, job_env_vars(call, new_marker()))
        return dataclasses.replace(submission, runtime_env=env)

    def process_result(self, context: Context, event: RayJobEvent) -> Any:
        """The function's return value (Airflow pushes it, one key per item with ``multiple_outputs``);
        a failure raises with the function's exception and remote traceback (see results.py)."""
        super().process_result(context, event)
        return event.result


def ray_task(
    python_callable: Callable[..., Any] | None = None,
    multiple_outputs: bool | None = None,
    **kwargs: Any,
) -> TaskDecorator:
    """Run the decorated function as a Ray job (``@task.ray(...)``): on the connection's local Ray, an
    existing cluster (``cluster_name=``/``address=``) or a transient KubeRay cluster (``ray_job_config=``).
    Its arguments and return value cross as JSON.

    :param python_callable: the function (when used as ``@task.ray`` without arguments).
    :param multiple_outputs: push each key of the returned dict as its own XCom.
    :param kwargs: any :class:`~airflow_provider_flyray.operators.ray.FlyteRayOperator` argument but
        ``entrypoint``, and Airflow's task arguments.
    """
    return task_decorator_factory(
        python_callable=python_callable,
        multiple_outputs=multiple_outputs,
        decorated_operator_class=RayDecoratedOperator,
        **kwargs,
    )
