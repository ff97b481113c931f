"""Node agent: plays kubelet (and scheduler) for one Node of the test control plane.

Run by ``python -m tests.infra.kube up`` as ``python -m tests.infra.kube.agent --kubeconfig K --state DIR``.

* registers Node ``flyray-node`` (cpu/memory/pods capacity) and keeps its Ready
  condition and its Lease fresh;
* binds unscheduled pods (``pods/binding``) if their requests fit into the node's
  allocatable resources, else marks them ``PodScheduled=False/Unschedulable``;
* runs each bound pod: one network namespace + veth + IP per pod, init containers
  in order, then containers, each as a process group running the container's
  command/args/env with the agent's venv ``bin`` first on PATH (the "image");
* readiness probes (exec inside the netns, httpGet/tcpSocket against the pod IP);
  liveness and startup probes are ignored (a container is never killed by a probe);
* restart policy with exponential back-off, pod phase/conditions/container statuses;
* graceful deletion (SIGTERM, grace period, SIGKILL, delete with grace 0, cleanup);
* per-pod /etc/hosts (services and pods by DNS name) kept up to date, and a
  ClusterIP held as /32 by one endpoint pod of its service;
* projected volumes (the service-account token, CA and namespace; volumes.py) bind-mounted read-only
  in each container's mount namespace, and the API server at ``kubernetes.default`` / 10.96.0.1:443 in
  every pod (api_link.py), so in-cluster clients such as KubeRay's autoscaler work.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import http.client
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from decimal import Decimal
from pathlib import Path

from kubernetes import client, config, watch
from kubernetes.utils.quantity import parse_quantity

from . import api_link, net, paths, volumes

log = logging.getLogger("flyray-agent")


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_dict(obj) -> dict:
    """V1 object -> API (camelCase) dict."""
    return client.ApiClient().sanitize_for_serialization(obj)


def g(d, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d or d[k] is None:
            return default
        d = d[k]
    return d


def selector_matches(sel: dict | None, labels: dict | None) -> bool:
    if not sel:
        return False
    labels = labels or {}
    return all(labels.get(k) == v for k, v in sel.items())


def pod_requests(pod: dict) -> dict[str, Decimal]:
    def ctr_req(c):
        r = {}
        res = c.get("resources") or {}
        for k in ("cpu", "memory"):
            v = g(res, "requests", k) or g(res, "limits", k)
            r[k] = parse_quantity(v) if v is not None else Decimal(0)
        return r

    spec = pod["spec"]
    tot = {"cpu": Decimal(0), "memory": Decimal(0)}
    for c in spec.get("containers") or []:
        for k, v in ctr_req(c).items():
            tot[k] += v
    for c in spec.get("initContainers") or []:
        for k, v in ctr_req(c).items():
            tot[k] = max(tot[k], v)
    for k, v in (spec.get("overhead") or {}).items():
        if k in tot:
            tot[k] += parse_quantity(v)
    return tot


class Api:
    """Small wrapper: one ApiClient per thread (urllib3 pools are shared otherwise)."""

    def __init__(self, kubeconfig: str):
        self.kubeconfig = kubeconfig
        self._local = threading.local()

    def core(self) -> client.CoreV1Api:
        c = getattr(self._local, "core", None)
        if c is None:
            api_client = config.new_client_from_config(self.kubeconfig)
            api_client.configuration.connection_pool_maxsize = 8
            c = client.CoreV1Api(api_client)
            self._local.core = c
        return c

    def coord(self) -> client.CoordinationV1Api:
        c = getattr(self._local, "coord", None)
        if c is None:
            c = client.CoordinationV1Api(self.core().api_client)
            self._local.coord = c
        return c


# ----------------------------------------------------------------------------- containers


class Container:
    def __init__(self, spec: dict, init: bool):
        self.spec = spec
        self.name = spec["name"]
        self.init = init
        self.proc: subprocess.Popen | None = None
        self.state = "waiting"
        self.reason = "ContainerCreating" if not init else "PodInitializing"
        self.message = None
        self.exit_code: int | None = None
        self.started_at: str | None = None
        self.finished_at: str | None = None
        self.restart_count = 0
        self.last_terminated: dict | None = None
        self.terminated: dict | None = None
        self.ready = False
        self.next_start = 0.0
        self.ever_started = False
        self.env: dict[str, str] = {}
        self.probe_thread: threading.Thread | None = None

    def status(self) -> dict:
        st = {"waiting": None, "running": None, "terminated": None}
        if self.state == "running":
            st["running"] = {"startedAt": self.started_at}
        elif self.state == "terminated":
            st["terminated"] = self.terminated
        else:
            st["waiting"] = {"reason": self.reason, "message": self.message}
        return {
            "name": self.name,
            "image": self.spec.get("image") or "flyray/none",
            "imageID": "",
            "containerID": f"flyray://{self.proc.pid}" if self.proc else None,
            "ready": bool(self.ready and self.state == "running"),
            "started": self.state == "running",
            "restartCount": self.restart_count,
            "state": st,
            "lastState": {"terminated": self.last_terminated} if self.last_terminated else {"terminated": None},
        }


# $0 hostname, $1 the number of mounts, then (host dir, mount path) pairs, then the container's argv.
START_SCRIPT = (
    'n=$1; shift; while [ "$n" -gt 0 ]; do '
    'mount --bind "$1" "$2" && mount -o remount,bind,ro "$2" '
    '|| { echo "flyray node agent: cannot mount $1 at $2" >&2; exit 1; }; n=$((n - 1)); shift 2; done; '
    'hostname "$0" 2>/dev/null; exec "$@"'
)
BACKOFF_BASE = 5.0
BACKOFF_MAX = 300.0


class PodRunner(threading.Thread):
    def __init__(self, agent: Agent, pod: dict):
        super().__init__(daemon=True, name=f"pod-{pod['metadata']['namespace']}/{pod['metadata']['name']}")
        self.agent = agent
        self.pod = pod
        md = pod["metadata"]
        self.ns, self.name, self.uid = md["namespace"], md["name"], md["uid"]
        self.id = paths.pod_id(self.uid)
        self.netns = paths.NETNS_PREFIX + self.id
        self.workdir = paths.state("pods", self.id)
        self.ip: str | None = None
        self.stop_evt = threading.Event()
        self.wake = threading.Event()
        self.grace = 30.0
        self.phase = "Pending"
        self.initialized = False
        self.start_time = now_iso()
        self.last_sent = None
        self.terminal = g(pod, "status", "phase") in ("Succeeded", "Failed")
        self.done = threading.Event()
        self.gone = False  # pod object deleted
        spec = pod["spec"]
        self.restart_policy = spec.get("restartPolicy") or "Always"
        self.inits = [Container(c, True) for c in spec.get("initContainers") or []]
        self.ctrs = [Container(c, False) for c in spec.get("containers") or []]
        self.lock = threading.RLock()
        self.sandbox = False
        self.delete_requested = False
        self.message: str | None = None
        self.api_link: api_link.ApiLink | None = None
        self.volumes = volumes.PodVolumes(pod, self.workdir, agent.api.core, lambda item: self.value_from(item, None))

    # -- external events
    def update(self, pod: dict) -> None:
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp") and not self.stop_evt.is_set():
            gp = pod["metadata"].get("deletionGracePeriodSeconds")
            if gp is None:
                gp = pod["spec"].get("terminationGracePeriodSeconds", 30)
            self.grace = float(gp)
            self.delete_requested = True
            log.info("pod %s/%s: deletion requested (grace %ss)", self.ns, self.name, gp)
            self.stop_evt.set()
        self.wake.set()

    def deleted(self) -> None:
        self.gone = True
        self.grace = min(self.grace, 2.0)
        self.stop_evt.set()
        self.wake.set()

    # -- main
    def run(self) -> None:
        try:
            if not self.terminal:
                self._run()
        except Exception as e:
            log.exception("pod %s/%s runner crashed", self.ns, self.name)
            if not self.stop_evt.is_set():
                self.phase = "Failed"
                self.message = f"flyray node agent error: {e}"
                self.push_status(force=True)
        try:
            # a terminal or broken pod keeps its files until it is deleted (or the agent stops)
            self.stop_evt.wait()
            self.kill_all(self.grace if not self.agent.shutting_down else 3.0)
            self.teardown(keep_files=False)
            if self.delete_requested and not self.gone and not self.agent.shutting_down:
                self.delete_object()
        except Exception:
            log.exception("pod %s/%s cleanup failed", self.ns, self.name)
        finally:
            self.done.set()
            self.agent.runner_done(self)

    def _run(self) -> None:
        self.setup_sandbox()
        self.push_status()
        if not self.prepare_volumes():
            return
        for c in self.inits:
            while True:
                if self.stop_evt.is_set():
                    return
                if time.monotonic() < c.next_start:
                    self.wake.wait(min(1.0, c.next_start - time.monotonic()))
                    self.wake.clear()
                    continue
                self.start_ctr(c)
                self.push_status()
                while c.proc.poll() is None and not self.stop_evt.is_set():
                    self.wake.wait(0.5)
                    self.wake.clear()
                if self.stop_evt.is_set():
                    return
                rc = self.reap(c)
                if rc == 0:
                    break
                if self.restart_policy == "Never":
                    self.phase = "Failed"
                    self.push_status()
                    self.go_terminal()
                    return
                self.backoff(c)
                self.push_status()
        self.initialized = True
        for c in self.ctrs:
            self.start_ctr(c)
        self.push_status()
        while not self.stop_evt.is_set():
            changed = False
            for c in self.ctrs:
                if c.state == "running" and c.proc.poll() is not None:
                    rc = self.reap(c)
                    if self.restart_policy == "Always" or (self.restart_policy == "OnFailure" and rc != 0):
                        self.backoff(c)
                    changed = True
                elif c.state == "waiting" and c.next_start and time.monotonic() >= c.next_start:
                    self.start_ctr(c)
                    c.restart_count += 1
                    changed = True
            if all(c.state == "terminated" for c in self.ctrs):
                self.phase = "Succeeded" if all(c.exit_code == 0 for c in self.ctrs) else "Failed"
                self.push_status()
                self.go_terminal()
                return
            self.phase = "Running"
            self.volumes.refresh()
            self.push_status(force=changed)
            self.wake.wait(0.5)
            self.wake.clear()

    def prepare_volumes(self) -> bool:
        """Write the pod's projected volumes, retrying while a source is missing (a kubelet's
        ContainerCreating); False if the pod is stopped meanwhile."""
        while not self.stop_evt.is_set():
            try:
                self.volumes.prepare()
                return True
            except volumes.VolumeNotReady as e:
                for c in self.inits[:1] + self.ctrs:
                    c.message = f"MountVolume.SetUp failed: {e}"
                self.push_status()
                log.info("pod %s/%s: volume not ready: %s", self.ns, self.name, e)
            self.stop_evt.wait(1.0)
        return False

    def go_terminal(self) -> None:
        log.info("pod %s/%s is %s", self.ns, self.name, self.phase)
        self.terminal = True
        self.kill_all(1.0)
        self.teardown(keep_files=True)
        self.agent.pod_terminal(self)

    # -- sandbox
    def setup_sandbox(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for d in ("t", "home", "logs"):
            (self.workdir / d).mkdir(exist_ok=True)
        (self.workdir / "pod").write_text(f"{self.ns}/{self.name} {self.uid}\n")
        self.ip = self.agent.alloc_ip(self.uid)
        net.pod_setup(self.id, self.ip, self.hostname())
        self.sandbox = True
        self.api_link = api_link.ApiLink(self.netns)
        self.agent.sync_net()  # hosts file complete before the first container starts
        log.info("pod %s/%s: sandbox %s ip %s", self.ns, self.name, self.netns, self.ip)

    def hostname(self) -> str:
        return (self.pod["spec"].get("hostname") or self.name)[:63]

    def teardown(self, keep_files: bool = False) -> None:
        if self.api_link is not None:
            self.api_link.close()
            self.api_link = None
        if self.sandbox:
            net.delete_netns(self.netns)
            self.sandbox = False
        net.delete_netns(self.netns)  # also if setup failed half-way
        if self.ip:
            self.agent.release_ip(self.uid)
        if not keep_files:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.agent.net_dirty.set()

    # -- processes
    def resolve_env(self, c: Container) -> dict[str, str]:
        base = {
            "PATH": f"{paths.VENV_PYTHON.parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.workdir / "home"),
            "TMPDIR": str(self.workdir / "t"),
            "RAY_TMPDIR": str(self.workdir / "t"),
            "HOSTNAME": self.hostname(),
            "LANG": "C.UTF-8",
            "KUBERNETES_SERVICE_HOST": paths.APISERVER_SERVICE_IP,
            "KUBERNETES_SERVICE_PORT": "443",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        env = dict(base)
        spec = c.spec
        for ef in spec.get("envFrom") or []:
            prefix = ef.get("prefix") or ""
            data = {}
            try:
                if ef.get("configMapRef"):
                    cm = self.agent.api.core().read_namespaced_config_map(ef["configMapRef"]["name"], self.ns)
                    data = cm.data or {}
                elif ef.get("secretRef"):
                    s = self.agent.api.core().read_namespaced_secret(ef["secretRef"]["name"], self.ns)
                    data = {k: base64.b64decode(v).decode(errors="replace") for k, v in (s.data or {}).items()}
            except client.ApiException:
                pass
            for k, v in data.items():
                env[prefix + k] = v
        for e in spec.get("env") or []:
            name = e["name"]
            if e.get("valueFrom"):
                v = self.value_from(e["valueFrom"], c)
                if v is None:
                    continue
            else:
                v = expand(e.get("value") or "", env)
            env[name] = v
        return env

    def value_from(self, vf: dict, c: Container | None) -> str | None:
        """An env var's valueFrom; ``c`` None for a downwardAPI volume item (which names its container)."""
        pod = self.pod
        if vf.get("fieldRef"):
            fp = vf["fieldRef"]["fieldPath"]
            md = pod["metadata"]
            m = re.match(r"metadata\.(labels|annotations)\['(.*)'\]$", fp)
            if m:
                return (md.get(m.group(1)) or {}).get(m.group(2), "")
            return {
                "metadata.name": md["name"],
                "metadata.namespace": md["namespace"],
                "metadata.uid": md["uid"],
                "spec.nodeName": paths.NODE_NAME,
                "spec.serviceAccountName": pod["spec"].get("serviceAccountName") or "default",
                "status.podIP": self.ip or "",
                "status.podIPs": self.ip or "",
                "status.hostIP": paths.BRIDGE_IP,
                "status.hostIPs": paths.BRIDGE_IP,
            }.get(fp, "")
        if vf.get("resourceFieldRef"):
            rf = vf["resourceFieldRef"]
            target = c.spec if c is not None else {}
            if rf.get("containerName"):
                for cc in (pod["spec"].get("containers") or []) + (pod["spec"].get("initContainers") or []):
                    if cc["name"] == rf["containerName"]:
                        target = cc
            kind, res = rf["resource"].split(".", 1)
            val = g(target, "resources", kind, res)
            if val is None and kind == "requests":
                val = g(target, "resources", "limits", res)
            if val is None:
                val = self.agent.allocatable.get(res) if kind == "limits" else "0"
            q = parse_quantity(val) if val is not None else Decimal(0)
            div = parse_quantity(rf.get("divisor") or "1")
            if div == 0:
                div = Decimal(1)
            return str(math.ceil(q / div))
        if vf.get("secretKeyRef") or vf.get("configMapKeyRef"):
            ref = vf.get("secretKeyRef") or vf.get("configMapKeyRef")
            try:
                if vf.get("secretKeyRef"):
                    obj = self.agent.api.core().read_namespaced_secret(ref["name"], self.ns)
                    raw = (obj.data or {}).get(ref["key"])
                    return base64.b64decode(raw).decode(errors="replace") if raw is not None else None
                obj = self.agent.api.core().read_namespaced_config_map(ref["name"], self.ns)
                return (obj.data or {}).get(ref["key"])
            except client.ApiException:
                return None
        return None

    def start_ctr(self, c: Container) -> None:
        env = self.resolve_env(c)
        c.env = env
        cmd = [expand(x, env) for x in (c.spec.get("command") or [])]
        args = [expand(x, env) for x in (c.spec.get("args") or [])]
        argv = cmd + args if cmd else (args or ["sleep", "infinity"])
        # `ip netns exec` gives each container its own mount namespace (where the pod's /etc/hosts is
        # bind-mounted, never propagated to the host): the volumes are bind-mounted there, read-only as
        # a kubelet mounts projected volumes; a failed mount fails the container, as it would there.
        mounts = self.volumes.mounts(c.spec)
        full = [
            "ip",
            "netns",
            "exec",
            self.netns,
            "unshare",
            "--uts",
            "--",
            "/bin/sh",
            "-c",
            START_SCRIPT,
            self.hostname(),
            str(len(mounts)),
            *[p for m in mounts for p in m],
            *argv,
        ]
        with open(self.workdir / "logs" / f"{c.name}.log", "ab") as logf:
            logf.write(f"--- {now_iso()} start #{c.restart_count}: {argv!r}\n".encode())
            logf.flush()
            c.proc = subprocess.Popen(
                full,
                env=env,
                cwd=self.workdir / "home",
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        with open(self.workdir / "pgids", "a") as f:
            f.write(f"{c.proc.pid}\n")
        c.state = "running"
        c.ever_started = True
        c.started_at = now_iso()
        c.ready = False
        c.next_start = 0.0
        log.info("pod %s/%s: started container %s pid %d", self.ns, self.name, c.name, c.proc.pid)
        probe = c.spec.get("readinessProbe")
        if not c.init:
            if probe:
                c.probe_thread = threading.Thread(target=self.probe_loop, args=(c, c.proc, probe), daemon=True)
                c.probe_thread.start()
            else:
                c.ready = True

    def reap(self, c: Container) -> int:
        rc = c.proc.wait()
        if rc < 0:  # killed by signal -> shell-like code
            rc = 128 - rc
        # kill leftovers of this container's process group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(c.proc.pid, signal.SIGKILL)
        c.exit_code = rc
        c.finished_at = now_iso()
        c.state = "terminated"
        c.ready = False
        c.terminated = {
            "exitCode": rc,
            "reason": "Completed" if rc == 0 else "Error",
            "startedAt": c.started_at,
            "finishedAt": c.finished_at,
            "containerID": f"flyray://{c.proc.pid}",
        }
        if rc != 0 and c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            c.terminated["message"] = self.last_output(c)
        log.info("pod %s/%s: container %s exited %d", self.ns, self.name, c.name, rc)
        return rc

    def last_output(self, c: Container) -> str:
        """What a kubelet puts in ``terminated.message`` under FallbackToLogsOnError (no termination-log
        file here): the end of this run's output, at most 80 lines and 2048 bytes."""
        try:
            text = (self.workdir / "logs" / f"{c.name}.log").read_bytes()[-65536:].decode(errors="replace")
        except OSError:
            return ""
        starts = list(re.finditer(r"^--- \S+ start #\d+: .*$", text, re.MULTILINE))
        run = text[starts[-1].end() :] if starts else text
        return "\n".join(run.splitlines()[-80:]).encode()[-2048:].decode(errors="ignore")

    def backoff(self, c: Container) -> None:
        delay = min(BACKOFF_BASE * (2**c.restart_count), BACKOFF_MAX)
        c.last_terminated = c.terminated
        c.state = "waiting"
        c.reason = "CrashLoopBackOff"
        c.message = f"back-off {int(delay)}s restarting failed container={c.name} pod={self.name}_{self.ns}({self.uid})"
        c.next_start = time.monotonic() + delay

    def kill_all(self, grace: float) -> None:
        procs = [c.proc for c in self.inits + self.ctrs if c.proc is not None and c.proc.poll() is None]
        # Like a container runtime: SIGTERM to the container's main process only (Ray's `ray start --block`
        # shuts its children down itself and takes >10s if they are all signalled at once), then after the
        # main process exited or the grace period is over, SIGKILL whatever is left (group + netns).
        for p in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + max(grace, 0)
        while time.monotonic() < deadline and any(p.poll() is None for p in procs):
            time.sleep(0.1)
        for c in self.inits + self.ctrs:
            if c.proc is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(c.proc.pid, signal.SIGKILL)
        # anything else still inside the pod's network namespace
        if os.path.exists(f"/run/netns/{self.netns}"):
            for _ in range(20):
                out = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True).stdout.split()
                if not out:
                    break
                for pid in out:
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), signal.SIGKILL)
                time.sleep(0.1)
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)

    # -- probes
    def probe_loop(self, c: Container, proc: subprocess.Popen, probe: dict) -> None:
        delay = float(probe.get("initialDelaySeconds") or 0)
        period = float(probe.get("periodSeconds") or 10)
        timeout = float(probe.get("timeoutSeconds") or 1)
        fail_thr = int(probe.get("failureThreshold") or 3)
        succ_thr = int(probe.get("successThreshold") or 1)
        # First probe a little earlier than "delay" would be unfair to slow starts; honour the delay,
        # but then probe quickly (1s) until the first success so readiness is not late by a full period.
        if self.stop_evt.wait(delay):
            return
        fails = succ = 0
        while proc.poll() is None and not self.stop_evt.is_set():
            ok = self.probe_once(c, probe, timeout)
            if ok:
                succ += 1
                fails = 0
                if succ >= succ_thr and not c.ready:
                    c.ready = True
                    log.info("pod %s/%s: container %s ready", self.ns, self.name, c.name)
                    self.wake.set()
            else:
                fails += 1
                succ = 0
                if fails >= fail_thr and c.ready:
                    c.ready = False
                    log.info("pod %s/%s: container %s not ready", self.ns, self.name, c.name)
                    self.wake.set()
            wait = period if c.ready else min(period, 1.0)
            if self.stop_evt.wait(wait):
                return

    def probe_once(self, c: Container, probe: dict, timeout: float) -> bool:
        slack = 3.0  # 2-core test machine: be lenient
        try:
            if probe.get("exec"):
                cmd = probe["exec"].get("command") or []
                p = subprocess.run(
                    ["ip", "netns", "exec", self.netns, *cmd],
                    env=c.env,
                    cwd=self.workdir / "home",
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=timeout + slack,
                    stdin=subprocess.DEVNULL,
                )
                return p.returncode == 0
            if probe.get("httpGet"):
                h = probe["httpGet"]
                port = self.port_of(c, h.get("port"))
                conn = http.client.HTTPConnection(h.get("host") or self.ip, port, timeout=timeout + slack)
                try:
                    conn.request(
                        "GET", h.get("path") or "/", headers={x["name"]: x["value"] for x in h.get("httpHeaders") or []}
                    )
                    return 200 <= conn.getresponse().status < 400
                finally:
                    conn.close()
            if probe.get("tcpSocket"):
                port = self.port_of(c, probe["tcpSocket"].get("port"))
                with socket.create_connection((self.ip, port), timeout=timeout + slack):
                    return True
            return True
        except Exception:
            return False

    @staticmethod
    def port_of(c: Container, port) -> int:
        if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
            return int(port)
        for p in c.spec.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
        raise ValueError(f"unknown port {port}")

    # -- status
    def conditions(self) -> list[dict]:
        ready = self.initialized and all(c.ready and c.state == "running" for c in self.ctrs)
        if self.phase == "Succeeded":
            ready = False

        def cond(t, ok, reason=None):
            old = {x["type"]: x for x in g(self.pod, "status", "conditions", default=[]) or []}.get(t)
            st = "True" if ok else "False"
            ltt = (
                old["lastTransitionTime"]
                if old and old.get("status") == st and old.get("lastTransitionTime")
                else now_iso()
            )
            d = {
                "type": t,
                "status": st,
                "lastTransitionTime": ltt,
                "lastProbeTime": None,
                "reason": None if ok else reason,
                "message": None,
            }
            return d

        init_ok = self.initialized or not self.inits
        return [
            cond("PodReadyToStartContainers", self.sandbox or self.terminal),
            cond("PodScheduled", True),
            cond("Initialized", init_ok, "ContainersNotInitialized"),
            cond("ContainersReady", ready, "ContainersNotReady"),
            cond("Ready", ready, "ContainersNotReady"),
        ]

    def push_status(self, force: bool = False) -> None:
        if self.gone:
            return
        st = {
            "phase": self.phase,
            "message": self.message,
            "hostIP": paths.BRIDGE_IP,
            "hostIPs": [{"ip": paths.BRIDGE_IP}],
            "podIP": self.ip,
            "podIPs": [{"ip": self.ip}] if self.ip else None,
            "startTime": self.start_time,
            "qosClass": g(self.pod, "status", "qosClass"),
            "containerStatuses": [c.status() for c in self.ctrs],
            "initContainerStatuses": [c.status() for c in self.inits] or None,
        }
        conds = self.conditions()
        key = json.dumps([st, [(c["type"], c["status"]) for c in conds]], sort_keys=True, default=str)
        if key == self.last_sent and not force:
            return
        if key == self.last_sent:
            return
        st["conditions"] = conds
        try:
            self.agent.api.core().patch_namespaced_pod_status(self.name, self.ns, {"status": st})
            self.last_sent = key
        except client.ApiException as e:
            if e.status == 404:
                self.deleted()
            else:
                log.warning("pod %s/%s: status patch failed: %s %s", self.ns, self.name, e.status, e.body)

    def delete_object(self) -> None:
        try:
            self.agent.api.core().delete_namespaced_pod(
                self.name,
                self.ns,
                grace_period_seconds=0,
                body=client.V1DeleteOptions(grace_period_seconds=0, preconditions=client.V1Preconditions(uid=self.uid)),
            )
            log.info("pod %s/%s: deleted", self.ns, self.name)
        except client.ApiException as e:
            if e.status not in (404, 409):
                log.warning("pod %s/%s: delete failed: %s", self.ns, self.name, e.status)


def expand(s: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion ($$ escapes)."""
    if "$" not in s:
        return s

    def rep(m):
        if m.group(0).startswith("$$"):
            return m.group(0)[1:]
        name = m.group(1)
        return env.get(name, m.group(0))

    return re.sub(r"\$\$\([A-Za-z_][A-Za-z0-9_.-]*\)|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", rep, s)


# ----------------------------------------------------------------------------- agent


class Agent:
    def __init__(self, kubeconfig: str, cpu: str, memory: str, pods: int):
        self.api = Api(kubeconfig)
        self.allocatable = {"cpu": cpu, "memory": memory, "pods": str(pods)}
        self.pods: dict[str, dict] = {}  # uid -> pod dict
        self.services: dict[tuple[str, str], dict] = {}
        self.runners: dict[str, PodRunner] = {}
        self.lock = threading.RLock()
        self.sched_evt = threading.Event()
        self.net_dirty = threading.Event()
        self.shutting_down = False
        self.stop = threading.Event()
        self.ips: dict[str, str] = {}
        self.next_ip = 2
        self.unsched_msg: dict[str, str] = {}
        self.bound: set[str] = set()
        self.net_lock = threading.Lock()

    # -- ip pool
    def alloc_ip(self, uid: str) -> str:
        with self.lock:
            if uid in self.ips:
                return self.ips[uid]
            used = set(self.ips.values())
            for _ in range(253):
                n = self.next_ip
                self.next_ip = 2 if self.next_ip >= 254 else self.next_ip + 1
                cand = f"10.244.0.{n}"
                if cand not in used:
                    self.ips[uid] = cand
                    return cand
        raise RuntimeError("pod IP range exhausted")

    def release_ip(self, uid: str) -> None:
        with self.lock:
            self.ips.pop(uid, None)

    # -- node
    def register_node(self) -> None:
        core = self.api.core()
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": paths.NODE_NAME,
                "labels": {
                    "kubernetes.io/hostname": paths.NODE_NAME,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "flyray.test/agent": "true",
                },
            },
            "spec": {"podCIDR": paths.POD_CIDR, "podCIDRs": [paths.POD_CIDR]},
        }
        try:
            core.create_node(body)
        except client.ApiException as e:
            if e.status != 409:
                raise
        self.node_status()

    def node_status(self) -> None:
        t = now_iso()
        conds = [
            {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
            {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure"},
            {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID"},
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "flyray node agent is posting ready status",
            },
        ]
        for c in conds:
            c["lastHeartbeatTime"] = t
            c.setdefault("lastTransitionTime", self._node_ltt.get(c["type"], t) if hasattr(self, "_node_ltt") else t)
        self._node_ltt = {c["type"]: c["lastTransitionTime"] for c in conds}
        cap = dict(self.allocatable)
        cap["ephemeral-storage"] = "100Gi"
        status = {
            "capacity": cap,
            "allocatable": cap,
            "conditions": conds,
            "addresses": [
                {"type": "InternalIP", "address": paths.BRIDGE_IP},
                {"type": "Hostname", "address": paths.NODE_NAME},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": "flyray",
                "systemUUID": "flyray",
                "bootID": "flyray",
                "kernelVersion": os.uname().release,
                "osImage": "flyray test node",
                "containerRuntimeVersion": "flyray://0.1",
                "kubeletVersion": paths.K8S_VERSION,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }
        self.api.core().patch_node_status(paths.NODE_NAME, {"status": status})

    def renew_lease(self) -> None:
        coord = self.api.coord()
        t = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {
            "metadata": {"name": paths.NODE_NAME, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": paths.NODE_NAME, "leaseDurationSeconds": 40, "renewTime": t},
        }
        try:
            coord.patch_namespaced_lease(paths.NODE_NAME, "kube-node-lease", {"spec": body["spec"]})
        except client.ApiException as e:
            if e.status != 404:
                raise
            coord.create_namespaced_lease("kube-node-lease", body)

    def heartbeat_loop(self) -> None:
        n = 0
        while not self.stop.is_set():
            try:
                self.renew_lease()
                if n % 2 == 0:
                    self.node_status()
            except Exception as e:
                log.warning("heartbeat failed: %s", e)
            n += 1
            self.stop.wait(5)

    # -- informers
    def informer(self, name: str, list_fn, on_event) -> None:
        while not self.stop.is_set():
            try:
                lst = list_fn(_preload_content=False)
                data = json.loads(lst.data)
                rv = data["metadata"]["resourceVersion"]
                on_event("SYNC", data["items"])
                w = watch.Watch()
                for ev in w.stream(
                    list_fn,
                    resource_version=rv,
                    timeout_seconds=120,
                    allow_watch_bookmarks=True,
                    _preload_content=False,
                    deserialize=False,
                ):
                    if self.stop.is_set():
                        w.stop()
                        break
                    et = ev["type"]
                    obj = ev["raw_object"] if "raw_object" in ev else ev["object"]
                    if isinstance(obj, str):
                        obj = json.loads(obj)
                    if et == "BOOKMARK":
                        continue
                    if et == "ERROR":
                        break
                    on_event(et, obj)
            except Exception as e:
                if not self.stop.is_set():
                    log.warning("%s informer: %s", name, e)
                    time.sleep(1)

    def on_pod(self, et: str, obj) -> None:
        with self.lock:
            if et == "SYNC":
                seen = {p["metadata"]["uid"] for p in obj}
                for uid in list(self.pods):
                    if uid not in seen:
                        self.pods.pop(uid)
                        r = self.runners.get(uid)
                        if r:
                            r.deleted()
                for p in obj:
                    self._pod_event("MODIFIED", p)
            else:
                self._pod_event(et, obj)
        self.net_dirty.set()

    def _pod_event(self, et: str, pod: dict) -> None:
        uid = pod["metadata"]["uid"]
        node = pod["spec"].get("nodeName")
        if et == "DELETED":
            self.pods.pop(uid, None)
            self.unsched_msg.pop(uid, None)
            self.bound.discard(uid)
            r = self.runners.get(uid)
            if r:
                r.deleted()
            self.sched_evt.set()
            return
        if node and node != paths.NODE_NAME:
            return
        if not node and uid in self.bound:  # stale event from before our binding
            return
        self.pods[uid] = pod
        if not node:
            self.sched_evt.set()
            return
        r = self.runners.get(uid)
        if r is None:
            if self.shutting_down:
                return
            r = PodRunner(self, pod)
            self.runners[uid] = r
            r.update(pod)
            r.start()
        else:
            r.update(pod)

    def runner_done(self, r: PodRunner) -> None:
        with self.lock:
            if self.runners.get(r.uid) is r:
                del self.runners[r.uid]
        self.sched_evt.set()

    def pod_terminal(self, r: PodRunner) -> None:
        self.sched_evt.set()

    def on_service(self, et: str, obj) -> None:
        with self.lock:
            if et == "SYNC":
                self.services = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in obj}
            elif et == "DELETED":
                self.services.pop((obj["metadata"]["namespace"], obj["metadata"]["name"]), None)
            else:
                self.services[(obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj
        self.net_dirty.set()

    # -- scheduler
    def schedule_loop(self) -> None:
        while not self.stop.is_set():
            self.sched_evt.wait(5)
            self.sched_evt.clear()
            if self.stop.is_set():
                break
            try:
                self.schedule_once()
            except Exception:
                log.exception("scheduler")

    def schedule_once(self) -> None:
        with self.lock:
            pending = [
                p
                for p in self.pods.values()
                if not p["spec"].get("nodeName")
                and not p["metadata"].get("deletionTimestamp")
                and g(p, "status", "phase", default="Pending") == "Pending"
            ]
            pending.sort(
                key=lambda p: (-(p["spec"].get("priority") or 0), p["metadata"].get("creationTimestamp") or "")
            )
            used = {"cpu": Decimal(0), "memory": Decimal(0)}
            count = 0
            for uid, p in self.pods.items():
                if p["spec"].get("nodeName") != paths.NODE_NAME:
                    continue
                r = self.runners.get(uid)
                phase = r.phase if r else g(p, "status", "phase")
                if phase in ("Succeeded", "Failed") or (r and r.terminal):
                    continue
                req = pod_requests(p)
                for k in used:
                    used[k] += req[k]
                count += 1
        alloc = {k: parse_quantity(self.allocatable[k]) for k in ("cpu", "memory")}
        for p in pending:
            req = pod_requests(p)
            short = [k for k in ("cpu", "memory") if used[k] + req[k] > alloc[k]]
            if count + 1 > int(self.allocatable["pods"]):
                short.append("pods")
            ns, name, uid = p["metadata"]["namespace"], p["metadata"]["name"], p["metadata"]["uid"]
            if short:
                msg = (
                    "0/1 nodes are available: "
                    + ", ".join(f"1 Insufficient {k}" if k != "pods" else "1 Too many pods" for k in short)
                    + "."
                )
                if self.unsched_msg.get(uid) != msg:
                    self.mark_unschedulable(p, msg)
                    self.unsched_msg[uid] = msg
                continue
            try:
                self.api.core().create_namespaced_pod_binding(
                    name,
                    ns,
                    {
                        "apiVersion": "v1",
                        "kind": "Binding",
                        "metadata": {"name": name, "uid": uid},
                        "target": {"apiVersion": "v1", "kind": "Node", "name": paths.NODE_NAME},
                    },
                    _preload_content=False,
                )
                log.info("bound %s/%s", ns, name)
                with self.lock:  # don't wait for the watch: account for it now, never bind twice
                    self.bound.add(uid)
                    cur = self.pods.get(uid)
                    if cur is not None and not cur["spec"].get("nodeName"):
                        cur = dict(cur, spec=dict(cur["spec"], nodeName=paths.NODE_NAME))
                        self.pods[uid] = cur
                for k in used:
                    used[k] += req[k]
                count += 1
                self.unsched_msg.pop(uid, None)
            except client.ApiException as e:
                if e.status != 409:  # 409: already bound (we raced our own watch)
                    log.warning("binding %s/%s failed: %s %s", ns, name, e.status, e.body)

    def mark_unschedulable(self, p: dict, msg: str) -> None:
        ns, name = p["metadata"]["namespace"], p["metadata"]["name"]
        cond = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": msg,
            "lastProbeTime": None,
            "lastTransitionTime": now_iso(),
        }
        try:
            self.api.core().patch_namespaced_pod_status(name, ns, {"status": {"conditions": [cond]}})
            log.info("unschedulable %s/%s: %s", ns, name, msg)
        except client.ApiException as e:
            log.warning("unschedulable patch %s/%s failed: %s", ns, name, e.status)
        with contextlib.suppress(client.ApiException):
            self.api.core().create_namespaced_event(
                ns,
                {
                    "metadata": {"generateName": f"{name}."},
                    "involvedObject": {
                        "kind": "Pod",
                        "namespace": ns,
                        "name": name,
                        "uid": p["metadata"]["uid"],
                        "apiVersion": "v1",
                    },
                    "reason": "FailedScheduling",
                    "message": msg,
                    "type": "Warning",
                    "source": {"component": "flyray-agent"},
                    "firstTimestamp": now_iso(),
                    "lastTimestamp": now_iso(),
                    "count": 1,
                },
            )

    # -- networking (hosts files + service IPs)
    def net_loop(self) -> None:
        while not self.stop.is_set():
            self.net_dirty.wait(2)
            self.net_dirty.clear()
            if self.stop.is_set():
                break
            try:
                self.sync_net()
            except Exception:
                log.exception("net sync")

    def sync_net(self) -> None:
        with self.net_lock:
            self._sync_net()

    def _sync_net(self) -> None:
        with self.lock:
            runners = [r for r in self.runners.values() if r.sandbox and r.ip and not r.terminal]
            services = list(self.services.values())
        by_ns: dict[str, list[PodRunner]] = {}
        for r in runners:
            by_ns.setdefault(r.ns, []).append(r)
        # global entries: (ip, fqdn-ish names); per-namespace short names
        global_entries: list[tuple[str, list[str], str, str]] = []  # ip, names, ns, shortname
        holders: dict[str, set[str]] = {r.uid: set() for r in runners}
        for s in services:
            ns, name = s["metadata"]["namespace"], s["metadata"]["name"]
            names = [f"{name}.{ns}.svc.cluster.local", f"{name}.{ns}.svc", f"{name}.{ns}"]
            cip = s["spec"].get("clusterIP")
            sel = s["spec"].get("selector")
            members = sorted(
                [
                    r
                    for r in by_ns.get(ns, [])
                    if selector_matches(sel, r.pod["metadata"].get("labels")) and not r.stop_evt.is_set()
                ],
                key=lambda r: (not all(c.ready for c in r.ctrs), r.pod["metadata"].get("creationTimestamp", "")),
            )
            if cip and cip != "None":
                global_entries.append((cip, names, ns, name))
                if members:
                    holders[members[0].uid].add(cip)
            else:
                for r in members:
                    global_entries.append((r.ip, names, ns, name))
        for r in runners:
            entries = [(r.ip, [r.hostname()])]
            for ip_, names, ns, short in global_entries:
                entries.append((ip_, names + ([short] if ns == r.ns else [])))
            net.write_hosts(r.netns, entries)
            net.set_service_ips(r.netns, holders.get(r.uid, set()))

    # -- lifecycle
    def run(self) -> None:
        self.register_node()
        core = self.api
        threads = [
            threading.Thread(target=self.heartbeat_loop, daemon=True, name="heartbeat"),
            threading.Thread(
                target=self.informer,
                args=("pods", lambda **kw: core.core().list_pod_for_all_namespaces(**kw), self.on_pod),
                daemon=True,
                name="pods",
            ),
            threading.Thread(
                target=self.informer,
                args=("services", lambda **kw: core.core().list_service_for_all_namespaces(**kw), self.on_service),
                daemon=True,
                name="services",
            ),
            threading.Thread(target=self.schedule_loop, daemon=True, name="scheduler"),
            threading.Thread(target=self.net_loop, daemon=True, name="net"),
        ]
        for t in threads:
            t.start()
        log.info("agent running: node %s allocatable %s", paths.NODE_NAME, self.allocatable)
        self.stop.wait()
        self.shutdown()

    def shutdown(self) -> None:
        log.info("shutting down: stopping %d pods", len(self.runners))
        self.shutting_down = True
        with self.lock:
            runners = list(self.runners.values())
        for r in runners:
            r.grace = min(r.grace, 3.0)
            r.stop_evt.set()
            r.wake.set()
        deadline = time.monotonic() + 20
        for r in runners:
            r.done.wait(max(0.0, deadline - time.monotonic()))
        log.info("agent stopped")
        logging.shutdown()
        os._exit(0)  # don't wait for informer threads blocked in watches


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--state", default=str(paths.STATE_DIR))
    ap.add_argument("--cpu", default="8")
    ap.add_argument("--memory", default="16Gi")
    ap.add_argument("--pods", type=int, default=110)
    a = ap.parse_args()
    paths.STATE_DIR = Path(a.state)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s %(message)s")
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    try:  # pods run `ulimit -n 65536` (KubeRay); let them, as a container runtime would
        import resource

        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = max(hard, 65536) if hard != resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
        except (ValueError, OSError):  # no CAP_SYS_RESOURCE here: at least lift the soft limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            log.info("RLIMIT_NOFILE stays at the hard limit %s (pods' `ulimit -n 65536` will fail harmlessly)", hard)
    except (ValueError, OSError) as e:
        log.warning("could not raise RLIMIT_NOFILE: %s", e)
    agent = Agent(a.kubeconfig, a.cpu, a.memory, a.pods)

    def on_term(signum, frame):
        agent.stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    agent.run()


if __name__ == "__main__":
    main()
