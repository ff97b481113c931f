"""The node agent gives pods what a kubelet gives them for in-cluster API access (what KubeRay's
autoscaler sidecar needs): the service-account volume the API server's admission adds (a bound token,
ca.crt, namespace) mounted read-only in the container only, and the API server at
``kubernetes.default.svc`` / ``$KUBERNETES_SERVICE_HOST:443``."""

from __future__ import annotations

import os
import time

import pytest
from kubernetes import client

from tests.infra.kube import paths
from tests.support import tenants

pytestmark = pytest.mark.kube

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# Who the API server says the pod is, through both addresses in-cluster clients use; and whether the
# mounted volume can be written to.
SCRIPT = f"""
import errno, json, os, ssl, urllib.request
sa = {SA_DIR!r}
token = open(sa + "/token").read()
ctx = ssl.create_default_context(cafile=sa + "/ca.crt")
print("NAMESPACE", open(sa + "/namespace").read())
hosts = ["kubernetes.default.svc", os.environ["KUBERNETES_SERVICE_HOST"] + ":" + os.environ["KUBERNETES_SERVICE_PORT"]]
for host in hosts:
    review = urllib.request.Request(
        f"https://{{host}}/apis/authentication.k8s.io/v1/selfsubjectreviews",
        data=json.dumps({{"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}}).encode(),
        headers={{"Authorization": "Bearer " + token, "Content-Type": "application/json"}},
    )
    user = json.loads(urllib.request.urlopen(review, context=ctx, timeout=10).read())["status"]["userInfo"]
    print("USER", host, user["username"], user["extra"]["authentication.kubernetes.io/pod-name"][0])
try:
    open(sa + "/token", "w")
except OSError as e:
    print("WRITE", errno.errorcode[e.errno])
"""


def _finished(core: client.CoreV1Api, name: str, ns: str, timeout: float = 90) -> client.V1Pod:
    deadline = time.monotonic() + timeout
    while (pod := core.read_namespaced_pod(name, ns)).status.phase not in ("Succeeded", "Failed"):
        assert time.monotonic() < deadline, f"pod {name} still {pod.status.phase}"
        time.sleep(0.5)
    return pod


def _gone(core: client.CoreV1Api, name: str, ns: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            core.read_namespaced_pod(name, ns)
        except client.ApiException as e:
            if e.status == 404:
                return
            raise
        assert time.monotonic() < deadline, f"pod {name} not deleted"
        time.sleep(0.5)


def test_a_pod_reaches_the_api_server_with_its_own_bound_token(kube_control_plane, core):
    with tenants.namespace(core, "kt-sa") as ns:
        pod = {
            "metadata": {"name": "whoami"},
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "c", "image": "python:3", "command": ["python", "-c", SCRIPT]}],
            },
        }
        deadline = time.monotonic() + 30
        while True:  # the pod's ServiceAccount, `default`, is made by the controller-manager just after the namespace
            try:
                core.create_namespaced_pod(ns, pod)
                break
            except client.ApiException as e:
                assert e.status == 403 and time.monotonic() < deadline, e
                time.sleep(0.5)
        done = _finished(core, "whoami", ns)
        workdir = paths.state("pods", paths.pod_id(done.metadata.uid))
        output = (workdir / "logs" / "c.log").read_text()
        assert done.status.phase == "Succeeded", output
        assert f"NAMESPACE {ns}" in output
        for host in ("kubernetes.default.svc", "10.96.0.1:443"):
            assert f"USER {host} system:serviceaccount:{ns}:default whoami" in output, output
        assert "WRITE EROFS" in output, output  # mounted read-only, as a kubelet mounts it
        # Mounted in the container's own mount namespace: on the host the mount point stays empty.
        assert os.listdir(SA_DIR) == []

        # The token is bound to the pod: once the pod is gone, the API server no longer accepts it.
        (volume,) = (workdir / "volumes").iterdir()
        token = (volume / "token").read_text()
        auth = client.AuthenticationV1Api(kube_control_plane.api_client())
        review = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token))
        assert auth.create_token_review(review).status.authenticated
        core.delete_namespaced_pod("whoami", ns)
        _gone(core, "whoami", ns)
        deadline = time.monotonic() + 20  # the API server checks the bound pod in its informer cache
        while auth.create_token_review(review).status.authenticated:
            assert time.monotonic() < deadline, "the token of a deleted pod is still accepted"
            time.sleep(0.5)
