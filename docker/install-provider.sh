#!/usr/bin/env bash
# Install airflow-provider-flyray, with the cncf-kubernetes provider it builds on, into the Python
# environment of an Airflow installation. docker/Dockerfile RUNs exactly this script; you can run it on
# any Airflow 3 host or image the same way.
#
#   docker/install-provider.sh [SOURCE]
#
#   SOURCE           the provider's source checkout (a directory with pyproject.toml), or a pip
#                    requirement such as "airflow-provider-flyray==0.1.0".
#                    Default: $FLYRAY_SOURCE, else /opt/flyray/src (where the Dockerfile copies it).
#   PYTHON           interpreter whose environment gets the provider. Default: python (the image's).
#   AIRFLOW_VERSION  Airflow is pinned to this version so pip never upgrades or downgrades it while
#                    resolving the providers. Default: the installed apache-airflow; required when
#                    Airflow is not installed yet (the script then installs it).
#   PIP_CONSTRAINT   (pip's own variable) e.g. Airflow's constraints file for reproducible images.
set -euo pipefail

SOURCE="${1:-${FLYRAY_SOURCE:-/opt/flyray/src}}"
PYTHON="${PYTHON:-python}"
CNCF_KUBERNETES_REQUIREMENT="apache-airflow-providers-cncf-kubernetes>=10.25.0"

if [[ -z "${AIRFLOW_VERSION:-}" ]]; then
    AIRFLOW_VERSION="$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("apache-airflow"))' 2>/dev/null)" || {
        echo "install-provider.sh: apache-airflow is not installed for $PYTHON; set AIRFLOW_VERSION" >&2
        exit 2
    }
fi

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT

if [[ -d "$SOURCE" ]]; then
    if [[ ! -f "$SOURCE/pyproject.toml" || ! -d "$SOURCE/airflow_provider_flyray" ]]; then
        echo "install-provider.sh: $SOURCE is not an airflow-provider-flyray checkout" >&2
        exit 2
    fi
    # Build from a copy: the checkout may be read-only and is never written to (no build/, *.egg-info).
    tar -C "$SOURCE" --exclude=__pycache__ --exclude='*.pyc' -cf - pyproject.toml README.md airflow_provider_flyray |
        tar -C "$workdir" -xf -
    requirement="$workdir"
else
    requirement="$SOURCE"
fi

echo "install-provider.sh: installing $SOURCE with apache-airflow==$AIRFLOW_VERSION into $("$PYTHON" -c 'import sys; print(sys.prefix)')"
"$PYTHON" -m pip install --no-cache-dir \
    "apache-airflow==${AIRFLOW_VERSION}" \
    "${CNCF_KUBERNETES_REQUIREMENT}" \
    "${requirement}"

# Fail the build, not the first task, if the provider is not usable: it imports, Airflow's provider
# entry point finds it, and pip sees no broken requirement.
"$PYTHON" - <<'PY'
import airflow_provider_flyray  # noqa: F401
from airflow_provider_flyray.get_provider_info import get_provider_info

info = get_provider_info()
assert info["package-name"] == "airflow-provider-flyray", info["package-name"]
print("install-provider.sh: airflow-provider-flyray OK, connection types:",
      [c["connection-type"] for c in info["connection-types"]])
PY
"$PYTHON" -m pip check
