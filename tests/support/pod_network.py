"""A pod's network on the test node, from the host (the node agent's layout, tests/infra/kube/net.py):
the network namespace and the host end of the veth made for a pod, and cutting a pod off the network."""

from __future__ import annotations

from kubernetes import client

from tests.infra.kube import net, paths


def netns_of(pod_uid: str) -> str:
    """The network namespace the test node agent made for a pod."""
    return paths.NETNS_PREFIX + paths.pod_id(pod_uid)


def host_link_of(pod: client.V1Pod) -> str:
    """The host end of a pod's veth on the test bridge: cutting it cuts the pod off."""
    return paths.VETH_PREFIX + paths.pod_id(pod.metadata.uid)


def set_link(name: str, up: bool) -> None:
    net.ip("link", "set", name, "up" if up else "down")
