"""Shared constants and paths for the flyray test control plane."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .. import REPO as REPO  # the checkout: on the node agent's PYTHONPATH

HERE = Path(__file__).resolve().parent

K8S_VERSION = os.environ.get("FLYRAY_K8S_VERSION", "v1.35.4")
ETCD_VERSION = "v3.6.5"  # the etcd server module k8s.io/kubernetes v1.35.4 itself lists
KUBERAY_VERSION = os.environ.get("FLYRAY_KUBERAY_VERSION", "v1.5.0")

CACHE_ROOT = Path(os.environ.get("FLYRAY_KUBE_CACHE", Path.home() / ".cache" / "flyray-kube"))
STATE_DIR = Path(os.environ.get("FLYRAY_KUBE_STATE", "/tmp/flyray-kube"))

# Ports (all bound on 127.0.0.1)
ETCD_CLIENT_PORT = 23790
ETCD_PEER_PORT = 23800
APISERVER_PORT = 6443
KCM_PORT = 10257
OPERATOR_METRICS_PORT = 18080
OPERATOR_PROBE_PORT = 18082

# Network layout
BRIDGE = "flyray0"
BRIDGE_IP = "10.244.0.1"
POD_CIDR = "10.244.0.0/24"
POD_SUPERNET = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/16"
APISERVER_SERVICE_IP = "10.96.0.1"
NETNS_PREFIX = "flyray-"
VETH_PREFIX = "fr"

NODE_NAME = "flyray-node"
VENV_PYTHON = Path(os.environ.get("FLYRAY_KUBE_PYTHON", sys.executable))


def state(*parts: str) -> Path:
    return STATE_DIR.joinpath(*parts)


def pod_id(uid: str) -> str:
    """The short id the node agent gives a pod: its netns is NETNS_PREFIX + id, the host end of its veth
    VETH_PREFIX + id, its work dir state("pods", id)."""
    return uid.replace("-", "")[:8]
