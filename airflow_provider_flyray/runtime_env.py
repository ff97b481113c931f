"""A Ray ``runtime_env``, checked before anything is created (Ray itself would only say so once the
cluster is up). Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_provider_flyray.errors import ConfigError

# Top-level runtime_env keys Ray 2.x understands (plugins included). An unknown key is almost always a
# typo that Ray would only report after the cluster is up, so it is refused here.
RUNTIME_ENV_KEYS = frozenset(
    {
        "working_dir",
        "py_modules",
        "py_executable",
        "pip",
        "uv",
        "conda",
        "env_vars",
        "excludes",
        "container",
        "image_uri",
        "config",
        "java_jars",
        "nsight",
        "mpi",
        "_ray_commit",
    }
)


def validate_runtime_env(value: Any, name: str = "runtime_env") -> dict[str, Any] | None:
    """Check a Ray runtime_env's shape; return it as a plain dict (``None`` stays ``None``)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(
            name, f"expected a dict like {{'pip': ['numpy'], 'env_vars': {{'A': '1'}}}}, got {type(value).__name__}"
        )
    env = dict(value)
    unknown = sorted(set(env) - RUNTIME_ENV_KEYS)
    if unknown:
        raise ConfigError(name, f"unknown keys {unknown}; Ray understands {sorted(RUNTIME_ENV_KEYS - {'_ray_commit'})}")
    if "env_vars" in env:
        env_vars = env["env_vars"]
        if not isinstance(env_vars, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()
        ):
            raise ConfigError(f"{name}.env_vars", "expected a dict of string to string (Ray refuses non-string values)")
    for key in ("pip", "uv"):
        if key in env:
            pkgs = env[key]
            ok = (
                isinstance(pkgs, str)
                or (isinstance(pkgs, list) and all(isinstance(p, str) for p in pkgs))
                or (isinstance(pkgs, Mapping) and "packages" in pkgs)
            )
            if not ok:
                raise ConfigError(
                    f"{name}.{key}",
                    "expected a list of requirement strings, a requirements file path, or {'packages': [...]}",
                )
    for key in ("working_dir", "py_executable", "image_uri"):
        if key in env and not isinstance(env[key], str):
            raise ConfigError(f"{name}.{key}", f"expected a string, got {type(env[key]).__name__}")
    for key in ("py_modules", "excludes", "java_jars"):
        if key in env and not (isinstance(env[key], list) and all(isinstance(p, str) for p in env[key])):
            raise ConfigError(f"{name}.{key}", "expected a list of strings")
    if "conda" in env and not isinstance(env["conda"], str | Mapping):
        raise ConfigError(f"{name}.conda", "expected an environment name, a YAML path, or an environment dict")
    return env
