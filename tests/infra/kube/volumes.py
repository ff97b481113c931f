"""Projected volumes for the node agent, as a kubelet mounts them: above all the service-account volume
(``kube-api-access-*``) that the API server's ServiceAccount admission plugin adds to every pod whose
account does not opt out: a bound token, the cluster CA (``kube-root-ca.crt``) and the namespace, at
``/var/run/secrets/kubernetes.io/serviceaccount``. KubeRay's autoscaler sidecar authenticates with it.

The files live on the host under the pod's work dir and are bind-mounted read-only at each container's
``mountPath`` inside that container's own mount namespace (``ip netns exec`` already gives every
container one, the one its per-pod /etc/hosts is bind-mounted in), so neither the host nor another pod
sees them. Containers are host processes on the host's filesystem: a mount point missing on the host
(``/run/secrets/...`` usually) is created empty, recorded, and removed again by ``remove_mount_points``
when the control plane goes down.

Other volume types (emptyDir, hostPath, configMap/secret volumes, PVCs) are still not mounted.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client

from . import paths

log = logging.getLogger("flyray-agent")

# A kubelet renews a projected token once 80 % of its requested lifetime has passed.
REFRESH_FRACTION = 0.8
DEFAULT_TOKEN_SECONDS = 3600  # the API's default expirationSeconds of a serviceAccountToken source
MOUNT_POINTS_FILE = "mount-points"  # in the state dir: the host directories created as mount points

_mount_point_lock = threading.Lock()


class VolumeNotReady(Exception):
    """A volume source cannot be read yet (e.g. ``kube-root-ca.crt`` not yet published in a new
    namespace): a kubelet keeps the pod in ContainerCreating and tries again."""


@dataclass
class _Volume:
    name: str
    projected: dict[str, Any]
    dir: Path
    refresh_at: float = 0.0  # time.monotonic() when its token is due; 0: no token in it


class PodVolumes:
    """The projected volumes of one pod: written by ``prepare`` before its first container starts,
    tokens renewed by ``refresh`` (called from the pod's loop), bind mounts listed by ``mounts``."""

    def __init__(
        self,
        pod: dict[str, Any],
        workdir: Path,
        core: Callable[[], client.CoreV1Api],
        field_value: Callable[[dict[str, Any]], str | None],
    ) -> None:
        self.pod = pod
        self.core = core
        self.field_value = field_value  # a downwardAPI item's fieldRef, resolved as for env vars
        self.volumes = {
            v["name"]: _Volume(v["name"], v["projected"], workdir / "volumes" / v["name"])
            for v in pod["spec"].get("volumes") or []
            if v.get("projected") is not None
        }

    def prepare(self) -> None:
        """Write every projected volume (raises VolumeNotReady while a source is missing)."""
        for vol in self.volumes.values():
            self._write(vol)

    def refresh(self) -> None:
        """Re-issue the tokens that are due. A failure is logged and retried on the next call: the
        old token stays valid until its expiry, as with a kubelet."""
        now = time.monotonic()
        for vol in self.volumes.values():
            if vol.refresh_at and now >= vol.refresh_at:
                try:
                    self._write(vol)
                    log.info("pod %s: renewed the token of volume %s", self._pod_name(), vol.name)
                except (VolumeNotReady, client.ApiException) as e:
                    log.warning("pod %s: token renewal of volume %s failed: %s", self._pod_name(), vol.name, e)
                    vol.refresh_at = now + 10

    def mounts(self, container: dict[str, Any]) -> list[tuple[str, str]]:
        """(host directory, mountPath) for each projected volume ``container`` mounts; the mount
        points exist on the host when this returns."""
        out = []
        for vm in container.get("volumeMounts") or []:
            vol = self.volumes.get(vm.get("name"))
            if vol is None:
                continue  # not a projected volume: not mounted (see the module docstring)
            if vm.get("subPath") or vm.get("subPathExpr"):
                log.warning("pod %s: subPath mounts are not supported (%s)", self._pod_name(), vm["mountPath"])
                continue
            ensure_mount_point(Path(vm["mountPath"]))
            out.append((str(vol.dir), vm["mountPath"]))
        return out

    # -- writing
    def _pod_name(self) -> str:
        md = self.pod["metadata"]
        return f"{md['namespace']}/{md['name']}"

    def _write(self, vol: _Volume) -> None:
        default_mode = vol.projected.get("defaultMode", 0o644)
        files: dict[str, tuple[bytes, int]] = {}
        token_seconds: list[int] = []
        for source in vol.projected.get("sources") or []:
            if source.get("serviceAccountToken"):
                spec = source["serviceAccountToken"]
                seconds = int(spec.get("expirationSeconds") or DEFAULT_TOKEN_SECONDS)
                files[spec["path"]] = (self._token(spec.get("audience"), seconds).encode(), default_mode)
                token_seconds.append(seconds)
            elif source.get("configMap"):
                files.update(self._keys(source["configMap"], self._config_map, default_mode))
            elif source.get("secret"):
                files.update(self._keys(source["secret"], self._secret, default_mode))
            elif source.get("downwardAPI"):
                for item in source["downwardAPI"].get("items") or []:
                    value = self.field_value(item) or ""
                    files[item["path"]] = (value.encode(), item.get("mode", default_mode))
            else:
                log.warning("pod %s: volume %s: unsupported source %s", self._pod_name(), vol.name, sorted(source))
        vol.dir.mkdir(parents=True, exist_ok=True)
        for rel, (data, mode) in files.items():
            _write_atomically(vol.dir / rel, data, mode)
        if token_seconds:
            vol.refresh_at = time.monotonic() + REFRESH_FRACTION * min(token_seconds)

    def _token(self, audience: str | None, seconds: int) -> str:
        """A token bound to this pod (invalid once the pod is gone), from the TokenRequest API."""
        md = self.pod["metadata"]
        account = self.pod["spec"].get("serviceAccountName") or "default"
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(
                audiences=[audience] if audience else [],  # empty: the API server's own audience
                expiration_seconds=seconds,
                bound_object_ref=client.V1BoundObjectReference(
                    api_version="v1", kind="Pod", name=md["name"], uid=md["uid"]
                ),
            )
        )
        try:
            answer = self.core().create_namespaced_service_account_token(account, md["namespace"], request)
        except client.ApiException as e:
            raise VolumeNotReady(f"serviceaccounts/{account}/token: {e.status} {e.reason}") from e
        return str(answer.status.token)

    def _config_map(self, name: str) -> dict[str, bytes] | None:
        try:
            cm = self.core().read_namespaced_config_map(name, self.pod["metadata"]["namespace"])
        except client.ApiException as e:
            if e.status == 404:
                return None
            raise VolumeNotReady(f"configmap {name}: {e.status} {e.reason}") from e
        data = {k: v.encode() for k, v in (cm.data or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (cm.binary_data or {}).items()})
        return data

    def _secret(self, name: str) -> dict[str, bytes] | None:
        try:
            secret = self.core().read_namespaced_secret(name, self.pod["metadata"]["namespace"])
        except client.ApiException as e:
            if e.status == 404:
                return None
            raise VolumeNotReady(f"secret {name}: {e.status} {e.reason}") from e
        return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}

    @staticmethod
    def _keys(
        ref: dict[str, Any], read: Callable[[str], dict[str, bytes] | None], default_mode: int
    ) -> dict[str, tuple[bytes, int]]:
        """The files of a configMap or secret source: its ``items`` (key -> path), else every key."""
        data = read(ref["name"])
        if data is None:
            if ref.get("optional"):
                return {}
            raise VolumeNotReady(f"{ref['name']} not found")
        items = ref.get("items") or [{"key": k, "path": k} for k in data]
        out = {}
        for item in items:
            if item["key"] not in data:
                if ref.get("optional"):
                    continue
                raise VolumeNotReady(f"{ref['name']} has no key {item['key']!r}")
            out[item["path"]] = (data[item["key"]], item.get("mode", default_mode))
        return out


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Readers (the autoscaler re-reads its token every minute) see the old file or the new one, never
    half of it: the rename lands in the bind-mounted directory, which containers see at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    os.replace(tmp, path)


def ensure_mount_point(path: Path) -> None:
    """Create ``path`` (and missing parents) on the host as empty directories to mount on, recording
    each one created so ``remove_mount_points`` can take them away again."""
    with _mount_point_lock:
        if path.is_dir():
            return
        missing = [p for p in [*reversed(path.parents), path] if not p.exists()]
        with open(paths.state(MOUNT_POINTS_FILE), "a") as record:
            for p in missing:
                p.mkdir()
                record.write(f"{p.resolve()}\n")  # resolved: /var/run is a symlink to /run


def remove_mount_points(state_dir: Path) -> None:
    """Remove the mount points recorded in ``state_dir``, deepest first, each only if empty (a
    directory someone else has put something in since stays)."""
    record = state_dir / MOUNT_POINTS_FILE
    with contextlib.suppress(OSError):
        for line in reversed(record.read_text().splitlines()):
            with contextlib.suppress(OSError):
                os.rmdir(line)
