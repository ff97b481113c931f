"""A Python function as a Ray job, on the Airflow side: its source, its JSON arguments, the job's env.

Pure except for reading the function's source file. The job runs
:mod:`~airflow_provider_flyray.function_driver` (shipped as text) which calls the function; what it
needs travels in the job's ``runtime_env.env_vars``, so no file and no pickle crosses to the cluster.
"""

from __future__ import annotations

import ast
import inspect
import json
import secrets
import textwrap
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from airflow_provider_flyray.errors import ConfigError
from airflow_provider_flyray.function_driver import CALL_ENV, DRIVER_ENV, MARKER_ENV, first_non_json

# The job's entrypoint: short and readable in the Ray dashboard; the driver's text is in the env.
DRIVER_ENTRYPOINT = f"python -c \"import os; exec(compile(os.environ['{DRIVER_ENV}'], 'flyray_driver.py', 'exec'))\""
# Linux refuses to start a process with one environment string over 128 KiB (MAX_ARG_STRLEN): the
# function's source and arguments, as JSON, must stay under it.
MAX_CALL_BYTES = 120 * 1024


@dataclass(frozen=True)
class FunctionSource:
    """A function's own text (decorators removed, dedented) and where it is in its file."""

    name: str
    text: str
    filename: str
    first_line: int  # of the ``def`` line, in the file


def function_source(function: Callable[..., Any], field: str = "python_callable") -> FunctionSource:
    """The source that is shipped. Decorators are removed: they are Airflow's (``@task.ray``) or names
    the cluster would not have. A function using its enclosing function's variables, a lambda or an
    ``async def`` cannot run on its own there, and is refused with the reason."""
    name = getattr(function, "__name__", type(function).__name__)
    if name == "<lambda>":
        raise ConfigError(field, "a lambda cannot be shipped to Ray; define the function with `def`")
    if inspect.iscoroutinefunction(function):
        raise ConfigError(field, f"{name} is `async def`; a Ray job's driver calls a plain function")
    free = getattr(getattr(function, "__code__", None), "co_freevars", ())
    if free:
        raise ConfigError(
            field,
            f"{name} uses variables of its enclosing function ({', '.join(free)}), which do not exist on the "
            "cluster; pass them as arguments or define them inside the function",
        )
    try:
        lines, first = inspect.getsourcelines(function)
        filename = inspect.getsourcefile(function) or f"<{name}>"
    except (OSError, TypeError) as exc:
        raise ConfigError(field, f"the source of {name} cannot be read ({exc}); define it in a .py file") from None
    text = textwrap.dedent("".join(lines))
    definition = next(
        (node for node in ast.parse(text).body if isinstance(node, ast.FunctionDef) and node.name == name), None
    )
    if definition is None:
        raise ConfigError(field, f"no `def {name}` found in its source")
    body = "".join(text.splitlines(keepends=True)[definition.lineno - 1 :])
    return FunctionSource(name=name, text=body, filename=filename, first_line=first + definition.lineno - 1)


def positional_names(function: Callable[..., Any]) -> list[str]:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def check_arguments(function: Callable[..., Any], args: Collection[Any], kwargs: Mapping[str, Any]) -> None:
    """Every argument is JSON (after rendering and XCom resolution), or the error names it and its type."""
    names = positional_names(function)
    labelled = [
        (f"op_args[{i}]", f"argument {names[i]!r}" if i < len(names) else f"positional argument {i}", value)
        for i, value in enumerate(args)
    ]
    labelled += [(f"op_kwargs[{key!r}]", f"argument {key!r}", value) for key, value in kwargs.items()]
    for field, label, value in labelled:
        if (problem := first_non_json(value, label)) is not None:
            raise ConfigError(
                field,
                f"{problem} cannot be sent to the Ray job as JSON; pass dicts, lists, strings, numbers, "
                "booleans or None (e.g. an ISO date string instead of a datetime)",
            )


def call_json(source: FunctionSource, args: Collection[Any], kwargs: Mapping[str, Any]) -> str:
    text = json.dumps(
        {
            "name": source.name,
            "source": source.text,
            "filename": source.filename,
            "first_line": source.first_line,
            "args": list(args),
            "kwargs": dict(kwargs),
        },
        separators=(",", ":"),
    )
    if len(text.encode()) > MAX_CALL_BYTES:
        raise ConfigError(
            "op_args/op_kwargs",
            f"the function's source and arguments are {len(text.encode())} bytes of JSON; at most "
            f"{MAX_CALL_BYTES} fit in a Ray job's environment: pass large data by reference (a path or URI)",
        )
    return text


@cache
def driver_text() -> str:
    return resources.files("airflow_provider_flyray").joinpath("function_driver.py").read_text(encoding="utf-8")


def new_marker() -> str:
    """Random per submission: output of the job cannot know it, so cannot forge a result frame."""
    return secrets.token_hex(16)


def job_env_vars(call: str, marker: str) -> dict[str, str]:
    return {DRIVER_ENV: driver_text(), CALL_ENV: call, MARKER_ENV: marker}


def with_env_vars(runtime_env: dict[str, Any] | None, extra: dict[str, str]) -> dict[str, Any]:
    """``runtime_env`` with ``extra`` added to its env_vars (a user's own variable of the same name is refused)."""
    env = dict(runtime_env or {})
    own = dict(env.get("env_vars") or {})
    if clash := sorted(set(own) & set(extra)):
        raise ConfigError("runtime_env.env_vars", f"{clash} are set by @task.ray; rename them")
    env["env_vars"] = {**own, **extra}
    return env


def result_marker_of(runtime_env: Mapping[str, Any] | None) -> str | None:
    """The result marker of a job's runtime_env (this try's, or an adopted earlier try's), if any."""
    env_vars = (runtime_env or {}).get("env_vars") or {}
    marker = env_vars.get(MARKER_ENV) if isinstance(env_vars, Mapping) else None
    return marker if isinstance(marker, str) and marker else None
