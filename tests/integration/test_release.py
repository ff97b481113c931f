"""A release that installs clean: the wheel and sdist that ``python -m build`` makes, checked by twine, and
the wheel installed into a fresh virtualenv with nothing but its declared dependencies, where Airflow's own
CLI and ProvidersManager see the provider, its connection type, extra links, ``@task.ray``, triggers and
its ``[flyray]`` config section, and its provider info validates against Airflow's provider-info schema.

Each run builds from a copy of the checkout (tracked and untracked files, not ignored ones: the checkout
is never written to) and installs the NEW wheel into a NEW venv. The dependencies (apache-airflow and ~150
packages) are installed by uv (4-6 s here; its cache, ~/.cache/uv or $UV_CACHE_DIR, spares the downloads); then
real pip installs the wheel itself, finding every requirement satisfied, and ``pip check`` agrees. pip's
own HTTP cache is no help here: the index answers with headers that keep pip from caching (a cold pip
install of the wheel took 94 s, a second one 88 s). Without uv the dependencies go through pip.

The wall times (build, dependency install, wheel install) are printed and written to
test-output/release-timings.json. docker/install-provider.sh (tests/integration/test_docker_install.py) is
the other install path: from the source checkout with Airflow pinned, as the Docker image does it.
"""

from __future__ import annotations

import email
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPO, output_dir

pytestmark = [pytest.mark.release, pytest.mark.airflow]

DIST_NAME = "airflow-provider-flyray"
PACKAGE = "airflow_provider_flyray"
TIMINGS: dict[str, float] = {}


def _python311() -> str:
    return shutil.which("python3.11") or sys.executable


def _uv() -> str | None:
    if importlib.util.find_spec("uv") is not None:
        from uv import find_uv_bin

        return find_uv_bin()
    return shutil.which("uv")


def _run(cmd: list[str], timeout: float = 600, **kwargs) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert result.returncode == 0, f"{cmd} failed ({result.returncode}):\n{(result.stdout + result.stderr)[-6000:]}"
    return result


def _clean_env(home: Path, venv: Path | None = None) -> dict[str, str]:
    """os.environ without what points at the checkout or the dev venv (PYTHONPATH, VIRTUAL_ENV, the test
    session's AIRFLOW_* settings), with a throwaway AIRFLOW_HOME."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "PYTHON", "VIRTUAL_ENV", "PIP_REQUIRE", "CONDA"))
    }
    env["AIRFLOW_HOME"] = str(home)
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    if venv is not None:
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def _copy_checkout(dest: Path) -> Path:
    """The files a clean clone would have plus untracked ones not ignored; never build/, *.egg-info, .venv."""
    files = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO).stdout
    dest.mkdir(parents=True)
    for rel in filter(None, files.split("\0")):
        src = REPO / rel
        if src.is_file():  # a tracked file deleted in the work tree is skipped
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def _source_version(root: Path) -> str:
    """The version, from the one place it is written: pyproject.toml."""
    return tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]


def _package_sources(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted((root / PACKAGE).rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


@dataclass
class Dist:
    source: Path
    wheel: Path
    sdist: Path
    version: str


@dataclass
class Installed:
    venv: Path
    home: Path
    dist: Dist
    env: dict[str, str] = field(default_factory=dict)

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    def airflow(self, *args: str) -> str:
        return _run([str(self.venv / "bin" / "airflow"), *args], env=self.env, cwd=self.home, timeout=300).stdout

    def airflow_json(self, *args: str) -> list[dict]:
        return json.loads(self.airflow(*args, "-o", "json"))

    def python_json(self, code: str, env: dict[str, str] | None = None) -> Any:
        out = _run([self.python, "-c", code], env=env or self.env, cwd=self.home, timeout=300).stdout
        return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    if importlib.util.find_spec("build") is None or importlib.util.find_spec("twine") is None:
        pytest.fail("build and twine are missing: pip install -e '.[test]' (or the `release` extra)")
    root = tmp_path_factory.mktemp("release")
    source = _copy_checkout(root / "src")
    started = time.monotonic()
    # sdist first, then the wheel built FROM the sdist (build's default): a wheel only the checkout could make fails.
    _run([sys.executable, "-m", "build", "--outdir", str(root / "dist"), str(source)], timeout=600)
    TIMINGS["build_s"] = round(time.monotonic() - started, 1)
    version = _source_version(source)
    wheels = list((root / "dist").glob("*.whl"))
    sdists = list((root / "dist").glob("*.tar.gz"))
    assert len(wheels) == len(sdists) == 1, list((root / "dist").iterdir())
    return Dist(source, wheels[0], sdists[0], version)


def _wheel_metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(zf.read(name))


def _requirements(metadata: email.message.Message) -> list[str]:
    """The wheel's Requires-Dist without the extras' (``; extra == ...``)."""
    return sorted(r for r in metadata.get_all("Requires-Dist", []) if "extra ==" not in r)


@pytest.fixture(scope="module")
def installed(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    root = tmp_path_factory.mktemp("fresh")
    venv, home = root / "venv", root / "airflow-home"
    home.mkdir()
    env = _clean_env(home)
    _run([_python311(), "-m", "venv", str(venv)], env=env, timeout=120)
    python = str(venv / "bin" / "python")
    requirements = _requirements(_wheel_metadata(dist.wheel))

    # 1. The declared dependencies, and nothing else (uv: seconds, where pip takes 1.5 minutes).
    started = time.monotonic()
    uv = _uv()
    by_uv = False
    if uv:
        # The system's certificate store (uv's own roots miss a CA that pip is configured with, e.g. a
        # registry mirror's); where uv still cannot reach the index, pip installs them.
        done = subprocess.run(
            [uv, "pip", "install", "--python", python, *requirements],
            env={**env, "UV_NATIVE_TLS": "1"},
            capture_output=True,
            text=True,
            timeout=1200,
        )
        by_uv = done.returncode == 0
        if not by_uv:
            print(f"uv could not install the dependencies, pip does:\n{(done.stdout + done.stderr)[-2000:]}")
    if not by_uv:
        _run([python, "-m", "pip", "install", *requirements], env=env, timeout=1800)
    TIMINGS["dependencies_s"] = round(time.monotonic() - started, 1)
    TIMINGS["dependencies_by_uv"] = by_uv

    # 2. The wheel, by real pip, which resolves its requirements (all satisfied now) and installs it.
    started = time.monotonic()
    pip = _run([python, "-m", "pip", "install", str(dist.wheel)], env=env, timeout=900)
    TIMINGS["wheel_s"] = round(time.monotonic() - started, 1)
    assert f"Successfully installed {DIST_NAME}-{dist.version}" in pip.stdout, pip.stdout[-3000:]
    new = [line for line in pip.stdout.splitlines() if line.startswith("Successfully installed")]
    assert new == [f"Successfully installed {DIST_NAME}-{dist.version}"], new  # pip installed no other package
    assert "No broken requirements found." in _run([python, "-m", "pip", "check"], env=env).stdout

    print(f"release timings: {TIMINGS}")
    (output_dir() / "release-timings.json").write_text(json.dumps(TIMINGS, indent=2) + "\n")
    yield Installed(venv, home, dist, _clean_env(home, venv))


# -- the artifacts ---------------------------------------------------------------------------------------


def test_twine_check_passes_on_wheel_and_sdist(dist: Dist):
    result = _run([sys.executable, "-m", "twine", "check", "--strict", str(dist.wheel), str(dist.sdist)])
    assert result.stdout.count("PASSED") == 2, result.stdout


def test_artifacts_carry_the_one_version(dist: Dist):
    assert dist.wheel.name == f"{PACKAGE}-{dist.version}-py3-none-any.whl"
    assert dist.sdist.name == f"{PACKAGE}-{dist.version}.tar.gz"
    assert _wheel_metadata(dist.wheel)["Version"] == dist.version
    # pyproject.toml is the one place: __init__.py reads the installed metadata, it writes no version
    assert "version" not in tomllib.loads((dist.source / "pyproject.toml").read_text())["project"].get("dynamic", [])
    assert not re.search(r"""__version__\s*=\s*["']""", (dist.source / PACKAGE / "__init__.py").read_text())
    changelog = (dist.source / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[?{re.escape(dist.version)}\]?", changelog, re.M), "CHANGELOG.md lacks this version"


def test_wheel_holds_the_whole_package_and_nothing_else(dist: Dist):
    with zipfile.ZipFile(dist.wheel) as zf:
        names = zf.namelist()
        entry_points = zf.read(f"{PACKAGE}-{dist.version}.dist-info/entry_points.txt").decode()
        packaged = {n: zf.read(n) for n in names if n.startswith(f"{PACKAGE}/")}
    assert packaged == _package_sources(dist.source)  # every module (and file) of the package, as in the checkout
    others = {n.split("/")[0] for n in names} - {PACKAGE, f"{PACKAGE}-{dist.version}.dist-info"}
    assert not others, others  # no tests/, dags/, benchmarks/
    assert "[apache_airflow_provider]" in entry_points
    assert f"provider_info = {PACKAGE}.get_provider_info:get_provider_info" in entry_points

    metadata = _wheel_metadata(dist.wheel)
    project = tomllib.loads((dist.source / "pyproject.toml").read_text())["project"]
    assert _requirements(metadata) == sorted(project["dependencies"])
    assert metadata["Requires-Python"] == project["requires-python"]
    assert metadata["License-Expression"] == "Apache-2.0"
    assert not any(r.startswith("ray") for r in _requirements(metadata))  # the KubeRay path needs no ray wheel


def test_sdist_holds_the_package(dist: Dist):
    with tarfile.open(dist.sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    assert {"pyproject.toml", "README.md", "PKG-INFO"} <= names
    assert set(_package_sources(dist.source)) <= names
    assert not any(n.startswith(("tests/", ".venv/", "build/", ".git/")) for n in names)


def test_editable_install_reads_the_same_version(dist: Dist, tmp_path: Path):
    """The version mechanism in an editable install: a version bumped in pyproject.toml is what the installed
    metadata and ``__version__`` (read from that metadata) report, with no second place to edit."""
    source = shutil.copytree(dist.source, tmp_path / "src")
    pyproject = source / "pyproject.toml"
    text = pyproject.read_text()
    assert text.count(f'version = "{dist.version}"') == 1
    pyproject.write_text(text.replace(f'version = "{dist.version}"', 'version = "9.9.9.dev1"'))
    init = source / PACKAGE / "__init__.py"
    venv = tmp_path / "venv"
    env = _clean_env(tmp_path)
    _run([_python311(), "-m", "venv", str(venv)], env=env, timeout=120)
    python = str(venv / "bin" / "python")
    # --no-deps: this checks the version, not Airflow (the package imports lazily, so it imports without it).
    _run([python, "-m", "pip", "install", "--no-deps", "-e", str(source)], env=env, timeout=600)
    out = _run(
        [
            python,
            "-c",
            "import importlib.metadata as m, json, airflow_provider_flyray as p;"
            "print(json.dumps([m.version('airflow-provider-flyray'), p.__version__, p.__file__]))",
        ],
        env=env,
        cwd=tmp_path,
    ).stdout
    metadata_version, module_version, location = json.loads(out)
    assert metadata_version == module_version == "9.9.9.dev1"
    assert location == str(init)


# -- the wheel in a fresh venv ---------------------------------------------------------------------------


def test_airflow_lists_the_provider(installed: Installed):
    (listed,) = [p for p in installed.airflow_json("providers", "list") if p["package_name"] == DIST_NAME]
    assert listed["version"] == installed.dist.version


def test_provider_info_validates_against_airflows_schema(installed: Installed):
    result = installed.python_json(
        """
import importlib.metadata, importlib.resources, json, sys
import jsonschema
import airflow, airflow_provider_flyray
from airflow_provider_flyray.get_provider_info import get_provider_info

schema_file = importlib.resources.files("airflow") / "provider_info.schema.json"
schema = json.loads(schema_file.read_text())
info = get_provider_info()
jsonschema.validators.validator_for(schema)(schema).validate(info)  # raises on any violation
print(json.dumps({
    "schema": str(schema_file),
    "schema_has_versions": "versions" in schema["properties"],
    "versions": info.get("versions"),
    "dist_version": importlib.metadata.version("airflow-provider-flyray"),
    "module_version": airflow_provider_flyray.__version__,
    "location": airflow_provider_flyray.__file__,
    "prefix": sys.prefix,
    "ray_installed": importlib.util.find_spec("ray") is not None,
}))
"""
    )
    venv = str(installed.venv)
    assert result["schema"].startswith(venv), result["schema"]  # the installed Airflow's own schema
    assert result["location"].startswith(venv), result["location"]  # the wheel, not the checkout
    assert result["dist_version"] == result["module_version"] == installed.dist.version
    if result["schema_has_versions"]:  # Airflow 3's provider-info schema has no "versions" (provider.yaml does)
        assert result["versions"][0] == installed.dist.version
    assert not result["ray_installed"]


def test_the_installed_files_are_the_new_wheel(installed: Installed):
    out = installed.python_json(
        "import json, pathlib, airflow_provider_flyray as p;"
        "root = pathlib.Path(p.__file__).parent;"
        "print(json.dumps({f.relative_to(root.parent).as_posix(): __import__('hashlib').sha256(f.read_bytes()).hexdigest()"
        " for f in root.rglob('*') if f.is_file() and '__pycache__' not in f.parts}))"
    )
    expected = {k: hashlib.sha256(v).hexdigest() for k, v in _package_sources(installed.dist.source).items()}
    assert out == expected


def test_airflow_cli_shows_the_connection_type_and_extra_links(installed: Installed):
    hooks = [h for h in installed.airflow_json("providers", "hooks") if h["connection_type"] == "flyray"]
    assert hooks == [
        {
            "connection_type": "flyray",
            "class": f"{PACKAGE}.hooks.ray_cluster.RayClusterHook",
            "conn_id_attribute_name": "ray_conn_id",
            "package_name": DIST_NAME,
            "hook_name": "Ray (flyray: KubeRay or local)",
        }
    ]
    links = {link["extra_link_class_name"] for link in installed.airflow_json("providers", "links")}
    assert {f"{PACKAGE}.links.ray.RayDashboardLink", f"{PACKAGE}.links.ray.RayJobLink"} <= links


def test_providers_manager_registers_decorator_triggers_and_form(installed: Installed):
    """What `airflow providers triggers|behaviours|widgets` print, read from ProvidersManager in one process
    (each `airflow` command costs seconds), plus `@task.ray` and every module the provider info names."""
    result = installed.python_json(
        """
import importlib, json
from airflow.providers_manager import ProvidersManager
from airflow.sdk import task
from airflow_provider_flyray.get_provider_info import get_provider_info

pm = ProvidersManager()
info = get_provider_info()
decorator = pm.taskflow_decorators["ray"]
# every module and class the provider info names, imported from the wheel
modules = [m for key in ("operators", "hooks", "triggers") for entry in info[key] for m in entry["python-modules"]]
for m in modules:
    importlib.import_module(m)
classes = [*info["extra-links"], *(c["hook-class-name"] for c in info["connection-types"]),
           *(d["class-name"] for d in info["task-decorators"])]
for path in classes:
    module, _, name = path.rpartition(".")
    getattr(importlib.import_module(module), name)
print(json.dumps({
    "decorator": decorator.__module__ + "." + decorator.__qualname__,
    "task_ray": task.ray.__module__ + "." + task.ray.__qualname__,
    "imported": len(modules) + len(classes),
    "provider": pm.providers["airflow-provider-flyray"].version,
    "triggers": [[t.package_name, t.trigger_class_name, t.integration_name] for t in pm.trigger
                 if t.package_name == "airflow-provider-flyray"],
    "behaviours": pm.field_behaviours.get("flyray"),
    "widgets": {k: w.hook_class_name for k, w in pm.connection_form_widgets.items()
                if w.package_name == "airflow-provider-flyray"},
    "hook": pm.hooks["flyray"].hook_class_name,
}))
"""
    )
    assert result["decorator"] == result["task_ray"] == f"{PACKAGE}.decorators.ray.ray_task"
    assert result["imported"] >= 7
    assert result["provider"] == installed.dist.version
    assert result["triggers"] == [[DIST_NAME, f"{PACKAGE}.triggers.ray_job", "Ray"]]
    assert result["behaviours"]["hidden_fields"] == ["host", "schema", "login", "password", "port", "extra"]
    widgets = result["widgets"]
    assert {"extra__flyray__backend", "extra__flyray__dashboard_token"} <= set(widgets), sorted(widgets)
    assert set(widgets.values()) == {result["hook"]} == {f"{PACKAGE}.hooks.ray_cluster.RayClusterHook"}


def test_config_section_shows_in_airflow_config(installed: Installed):
    # What the code reads from [flyray] (in the wheel's source) is what the provider info declares ...
    read = set()
    for path in (installed.dist.source / PACKAGE).rglob("*.py"):
        read |= set(re.findall(r"""conf\.get\w*\(\s*["']flyray["']\s*,\s*["'](\w+)["']""", path.read_text()))
    assert read == {"poll_interval", "startup_timeout", "min_deferral_seconds"}, read
    got = installed.python_json(
        "import json; from airflow.providers_manager import ProvidersManager;"
        "from airflow_provider_flyray.operators import ray as r;"
        "print(json.dumps({'configs': dict(ProvidersManager().provider_configs),"
        " 'defaults': {'poll_interval': r.DEFAULT_POLL_INTERVAL, 'startup_timeout': r.DEFAULT_STARTUP_TIMEOUT,"
        " 'min_deferral_seconds': r.DEFAULT_MIN_DEFERRAL_SECONDS}}))"
    )
    options = got["configs"][DIST_NAME]["flyray"]["options"]
    assert set(options) == read

    # ... with the code's own defaults ...
    assert {k: float(v["default"]) for k, v in options.items()} == got["defaults"]

    # ... and `airflow config` shows them, with descriptions and defaults, and reads them.
    listed = installed.airflow(
        "config", "list", "--section", "flyray", "--show-values", "--include-descriptions", "--include-examples"
    )
    assert "[flyray]" in listed
    for name, option in options.items():
        assert f"# {option['description']}" in listed
        assert re.search(rf"^{name} = {re.escape(option['default'])}$", listed, re.M), listed
    # an AIRFLOW__FLYRAY__* variable is read through the declared section (the type is the provider's: float)
    env = {**installed.env, "AIRFLOW__FLYRAY__POLL_INTERVAL": "2.5"}
    read_back = installed.python_json(
        "import json; from airflow.configuration import conf;"
        "print(json.dumps([conf.getfloat('flyray', 'poll_interval'), conf.get('flyray', 'startup_timeout')]))",
        env=env,
    )
    assert read_back == [2.5, options["startup_timeout"]["default"]]
