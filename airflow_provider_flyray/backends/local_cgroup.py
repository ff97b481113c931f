"""A cgroup per local Ray cluster: what the head starts stays in it, and stopping kills it whole.

A process can leave its process group (``setsid``) and scrub its environment (``env -i``), so neither
finds everything a job started; it cannot leave its cgroup (only a process with write access to the
cgroup tree can move it). So each local cluster gets a cgroup of its own, the ``ray start`` process
joins it before it execs (every later process is born inside), and stopping the cluster kills the cgroup
and removes it. Mechanisms, first that works:

* cgroup v2 (a writable ``cgroup2`` mount): ``cgroup.kill`` kills every member atomically;
* cgroup v1 ``pids`` controller: ``pids.max = 0`` stops any new fork, then each member is killed;
* none (read-only or absent cgroup tree, no rights): the caller keeps the process group and the
  environment marker, and says so.

The cgroup is created under this process's own cgroup (a delegated subtree when the worker runs in
one). Parsing ``/proc/self/mountinfo`` and ``/proc/self/cgroup`` is pure; the rest touches the tree.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

CGROUP_PREFIX = "flyray-"
V2 = "cgroup2"
V1_PIDS = "pids"
KINDS = (V2, V1_PIDS)
# How long a killed cgroup may take to empty before it is left (and reported).
EMPTY_TIMEOUT = 10.0


def cgroup_mounts(mountinfo: str) -> dict[str, str]:
    """``{kind: mount point}`` of the cgroup2 hierarchy and the v1 ``pids`` one, from a mountinfo text."""
    found: dict[str, str] = {}
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        mount_point, fs_type, super_options = fields[4], tail[0], tail[2].split(",")
        if fs_type == "cgroup2":
            found.setdefault(V2, mount_point)
        elif fs_type == "cgroup" and V1_PIDS in super_options:
            found.setdefault(V1_PIDS, mount_point)
    return found


def own_cgroup(proc_cgroup: str, kind: str) -> str | None:
    """This process's path in the hierarchy of ``kind``, from a ``/proc/<pid>/cgroup`` text."""
    for line in proc_cgroup.splitlines():
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if kind == V2 and number == "0" and controllers == "":
            return path
        if kind == V1_PIDS and V1_PIDS in controllers.split(","):
            return path
    return None


def is_cluster_cgroup(path: str, mounts: dict[str, str]) -> str | None:
    """The kind of ``path`` when it is a cluster cgroup this module makes (never any other cgroup)."""
    name = os.path.basename(path.rstrip("/"))
    if not name.startswith(CGROUP_PREFIX) or ".." in Path(path).parts:
        return None
    for kind, mount in mounts.items():
        if path.startswith(mount.rstrip("/") + "/"):
            return kind
    return None


def join_command(procs_file: str, args: list[str]) -> list[str]:
    """``args`` run by a shell that first moves itself into the cgroup (its ``cgroup.procs``) and then
    execs them, so ``ray start`` and everything it forks are born inside; a failed move fails the start."""
    return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', procs_file, *args]


@dataclass(frozen=True)
class ClusterCgroup:
    path: str
    kind: str

    @property
    def procs_file(self) -> str:
        return os.path.join(self.path, "cgroup.procs")

    def members(self) -> list[int]:
        """Every process in the cgroup and in any cgroup below it."""
        pids: list[int] = []
        for directory, _, files in os.walk(self.path):
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError):
                    pids += [int(p) for p in Path(directory, "cgroup.procs").read_text().split()]
        return pids

    def kill(self) -> None:
        """Kill every member; what forks meanwhile is born inside and killed too (v2 atomically; v1 after
        forks are refused)."""
        if self.kind == V2:
            Path(self.path, "cgroup.kill").write_text("1")
            return
        with contextlib.suppress(OSError):
            Path(self.path, "pids.max").write_text("0")
        for pid in self.members():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def kill_and_remove(self, timeout: float = EMPTY_TIMEOUT) -> bool:
        """Kill, wait until empty, remove the cgroup (and any below it); False when it did not empty."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):
                self.kill()
            if not self.members():
                break
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        for directory, _, _ in sorted(os.walk(self.path), key=lambda entry: -len(entry[0])):
            # A cgroup that just emptied can still be busy for a moment.
            for _ in range(50):
                try:
                    os.rmdir(directory)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
        return not os.path.exists(self.path)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def create_cluster_cgroup(name: str) -> tuple[ClusterCgroup | None, str]:
    """A new empty cgroup for one local cluster, and how it is contained (for the log); None with the
    reason when no cgroup can be made here."""
    mounts, own = cgroup_mounts(_read("/proc/self/mountinfo")), _read("/proc/self/cgroup")
    problems = []
    for kind in KINDS:
        mount, path = mounts.get(kind), own_cgroup(own, kind)
        if mount is None or path is None:
            problems.append(f"no {kind} hierarchy")
            continue
        parent = os.path.join(mount, path.lstrip("/"))
        base = name if name.startswith(CGROUP_PREFIX) else CGROUP_PREFIX + name
        target = os.path.join(parent, f"{base[:48]}-{uuid.uuid4().hex[:8]}")
        try:
            os.mkdir(target)
        except OSError as exc:
            problems.append(f"{kind}: cannot create a cgroup under {parent} ({exc.strerror})")
            continue
        cgroup = ClusterCgroup(target, kind)
        # Moving a process in needs write access to the cgroup.procs of both ends.
        if os.access(cgroup.procs_file, os.W_OK) and os.access(os.path.join(parent, "cgroup.procs"), os.W_OK):
            return cgroup, f"cgroup {target}"
        problems.append(f"{kind}: cannot move processes into {target}")
        with contextlib.suppress(OSError):
            os.rmdir(target)
    return None, "no cgroup (" + "; ".join(problems) + ")"


def cluster_cgroup(path: str | None) -> ClusterCgroup | None:
    """The cluster cgroup a ClusterRef names (it comes from the metadata DB: only our own cgroups)."""
    if not path:
        return None
    kind = is_cluster_cgroup(path, cgroup_mounts(_read("/proc/self/mountinfo")))
    return ClusterCgroup(path, kind) if kind else None
