"""docker/install-provider.sh, the Dockerfile's install step, run as is in a fresh virtualenv.

There is no Docker engine here, so the image build itself is not run; what it RUNs is: the script
installs the provider from the local checkout (with Airflow pinned and the cncf-kubernetes provider) from
PyPI, verifies it, and leaves the checkout untouched.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import time
import tomllib

from tests.support import REPO

SCRIPT = REPO / "docker" / "install-provider.sh"


def test_the_dockerfile_runs_the_script():
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert re.search(r"^FROM \$\{AIRFLOW_IMAGE\}$", dockerfile, re.M)
    assert re.search(r"^ARG AIRFLOW_IMAGE=apache/airflow:3\.\d+\.\d+-python3\.11$", dockerfile, re.M)
    assert re.search(r"^COPY .*docker/install-provider\.sh /opt/flyray/install-provider\.sh$", dockerfile, re.M)
    runs = re.findall(r"^RUN (.*)$", dockerfile, re.M)
    assert runs == ["/opt/flyray/install-provider.sh /opt/flyray/src"], runs
    assert os.access(SCRIPT, os.X_OK)


def test_install_script_in_a_fresh_venv(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    env = {
        **os.environ,
        "PYTHON": python,
        "AIRFLOW_HOME": str(tmp_path / "airflow-home"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    env.pop("AIRFLOW_VERSION", None)
    env.pop("VIRTUAL_ENV", None)
    before = sorted(p.name for p in REPO.iterdir())

    # Without Airflow in the environment the version to pin must be given.
    refused = subprocess.run(["bash", str(SCRIPT), str(REPO)], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2, refused.stderr
    assert "set AIRFLOW_VERSION" in refused.stderr

    airflow_version = importlib.metadata.version("apache-airflow")
    started = time.time()
    result = subprocess.run(
        ["bash", str(SCRIPT), str(REPO)],
        env={**env, "AIRFLOW_VERSION": airflow_version},
        capture_output=True,
        text=True,
        timeout=900,
    )
    elapsed = time.time() - started
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "install-provider.sh: airflow-provider-flyray OK" in result.stdout
    assert "No broken requirements found." in result.stdout
    print(f"install-provider.sh took {elapsed:.0f}s")

    check = subprocess.run(
        [
            python,
            "-c",
            """
import importlib.metadata, importlib.util, json
import airflow_provider_flyray
from airflow_provider_flyray.get_provider_info import get_provider_info
from airflow.providers_manager import ProvidersManager

providers = ProvidersManager().providers
print(json.dumps({
    "package_name": get_provider_info()["package-name"],
    "version": importlib.metadata.version("airflow-provider-flyray"),
    "airflow": importlib.metadata.version("apache-airflow"),
    "registered": "airflow-provider-flyray" in providers,
    "cncf_kubernetes": "apache-airflow-providers-cncf-kubernetes" in providers,
    "ray_installed": importlib.util.find_spec("ray") is not None,
    "location": airflow_provider_flyray.__file__,
}))
""",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert check.returncode == 0, check.stderr[-4000:]
    info = json.loads(check.stdout.strip().splitlines()[-1])
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert info["package_name"] == "airflow-provider-flyray"
    assert info["version"] == project["version"]
    assert info["airflow"] == airflow_version  # pinned: never up- or downgraded
    assert info["registered"] and info["cncf_kubernetes"]
    assert not info["ray_installed"]  # the KubeRay path needs no ray wheel
    assert info["location"].startswith(str(venv)), info["location"]  # a real install, not the checkout

    # The checkout was only read (the build ran on a copy): no build/ or *.egg-info appeared.
    assert sorted(p.name for p in REPO.iterdir()) == before
