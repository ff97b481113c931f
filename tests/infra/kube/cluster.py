"""Start/stop the local control plane: etcd, kube-apiserver, kube-controller-manager,
KubeRay operator and the Python node agent, all as background processes."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from . import build, certs, net, paths, volumes

COMPONENTS = ["etcd", "apiserver", "controller-manager", "operator", "agent"]  # start order
AGENT_MODULE = f"{__package__}.agent"  # tests.infra.kube.agent, run with the checkout on PYTHONPATH


def log(msg: str) -> None:
    print(f"[flyray-kube] {msg}", file=sys.stderr, flush=True)


def kubeconfig_path() -> Path:
    return paths.state("admin.kubeconfig")


def _pidfile(name: str) -> Path:
    return paths.state("run", f"{name}.pid")


def _read_pid(name: str) -> int | None:
    try:
        return int(_pidfile(name).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int | None, marker: str | None = None) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
    except OSError:
        return False
    return marker is None or marker in cmd


def _marker(name: str) -> str:
    return {
        "etcd": " etcd ",
        "apiserver": " apiserver ",
        "controller-manager": " controller-manager ",
        "operator": "ray-operator",
        "agent": "kube.agent",  # tests.infra.kube.agent (tests.kube.agent before the move to tests/infra)
    }[name]


def _start(name: str, cmd: list[str], env: dict | None = None) -> int:
    with open(paths.state("logs", f"{name}.log"), "ab") as logf:
        p = subprocess.Popen(
            cmd,
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env or os.environ.copy(),
            cwd=paths.state(),
        )
    _pidfile(name).write_text(f"{p.pid}\n")
    log(f"started {name} pid {p.pid}")
    return p.pid


def _ssl_ctx(pki: dict) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki["ca"]))
    ctx.load_cert_chain(str(pki["admin"]), str(pki["admin_key"]))
    return ctx


def _get(url: str, ctx: ssl.SSLContext | None = None, timeout: float = 2) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except Exception as e:
        return 0, str(e)


def _wait(what: str, fn, timeout: float, pid_name: str | None = None) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if fn():
            log(f"{what} ready after {time.monotonic() - t0:.1f}s")
            return
        if pid_name and not _alive(_read_pid(pid_name)):
            tail = _tail(paths.state("logs", f"{pid_name}.log"))
            raise RuntimeError(f"{pid_name} exited while waiting for {what}; log tail:\n{tail}")
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def _tail(p: Path, n: int = 4000) -> str:
    try:
        return p.read_bytes()[-n:].decode(errors="replace")
    except OSError:
        return ""


def apiserver_url() -> str:
    return f"https://127.0.0.1:{paths.APISERVER_PORT}"


def is_up() -> bool:
    if not all(_alive(_read_pid(n), _marker(n)) for n in COMPONENTS):
        return False
    if not kubeconfig_path().exists():
        return False
    pki = certs.ensure_pki(paths.state("pki"))
    code, _ = _get(apiserver_url() + "/readyz", _ssl_ctx(pki))
    return code == 200


@contextlib.contextmanager
def _locked():
    """Serialise up/down between processes (e.g. two pytest sessions)."""
    with open(f"{paths.STATE_DIR}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def up(node_cpu: str | None = None, node_memory: str | None = None) -> str:
    """Start everything (idempotent). Returns the admin kubeconfig path."""
    with _locked():
        return _up(node_cpu, node_memory)


def _up(node_cpu: str | None, node_memory: str | None) -> str:
    if is_up():
        log("already up")
        return str(kubeconfig_path())
    if paths.STATE_DIR.exists() or net.list_netns() or Path(f"/sys/class/net/{paths.BRIDGE}").exists():
        log("leftovers of an earlier run found (control plane not fully up): cleaning first")
        _down()
    t_start = time.monotonic()
    bins = build.build_all()
    for d in ("run", "logs", "pods", "etcd"):
        paths.state(d).mkdir(parents=True, exist_ok=True)
    pki = certs.ensure_pki(paths.state("pki"))
    server = apiserver_url()
    kc = certs.write_kubeconfig(kubeconfig_path(), server, pki["ca"], pki["admin"], pki["admin_key"], "admin")
    kc_kcm = certs.write_kubeconfig(
        paths.state("kcm.kubeconfig"), server, pki["ca"], pki["kcm"], pki["kcm_key"], "kube-controller-manager"
    )
    kc_op = certs.write_kubeconfig(
        paths.state("operator.kubeconfig"), server, pki["ca"], pki["operator"], pki["operator_key"], "kuberay-operator"
    )
    net.host_setup()
    kube = str(bins["kube"])
    try:
        _start("etcd", [kube, "etcd", str(paths.state("etcd")), str(paths.ETCD_CLIENT_PORT), str(paths.ETCD_PEER_PORT)])
        _wait("etcd", lambda: _get(f"http://127.0.0.1:{paths.ETCD_CLIENT_PORT}/health")[0] == 200, 30, "etcd")
        _start(
            "apiserver",
            [
                kube,
                "apiserver",
                f"--etcd-servers=http://127.0.0.1:{paths.ETCD_CLIENT_PORT}",
                f"--secure-port={paths.APISERVER_PORT}",
                "--bind-address=127.0.0.1",
                f"--advertise-address={paths.BRIDGE_IP}",
                f"--service-cluster-ip-range={paths.SERVICE_CIDR}",
                f"--client-ca-file={pki['ca']}",
                f"--tls-cert-file={pki['apiserver']}",
                f"--tls-private-key-file={pki['apiserver_key']}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={pki['sa_pub']}",
                f"--service-account-signing-key-file={pki['sa_key']}",
                "--authorization-mode=Node,RBAC",
                "--enable-priority-and-fairness=false",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
            ],
        )
        ctx = _ssl_ctx(pki)
        _wait("kube-apiserver", lambda: _get(server + "/readyz", ctx)[0] == 200, 90, "apiserver")
        _start(
            "controller-manager",
            [
                kube,
                "controller-manager",
                f"--kubeconfig={kc_kcm}",
                f"--authentication-kubeconfig={kc_kcm}",
                f"--authorization-kubeconfig={kc_kcm}",
                f"--service-account-private-key-file={pki['sa_key']}",
                f"--root-ca-file={pki['ca']}",
                "--use-service-account-credentials=true",
                "--controllers=*,-node-ipam-controller,-persistentvolume-binder-controller,"
                "-persistentvolume-attach-detach-controller,-persistentvolume-expander-controller,"
                "-ephemeral-volume-controller,-persistentvolume-protection-controller,"
                "-persistentvolumeclaim-protection-controller,-certificatesigningrequest-signing-controller,"
                "-certificatesigningrequest-approving-controller,-certificatesigningrequest-cleaner-controller,"
                "-bootstrap-signer-controller,-token-cleaner-controller,-resourceclaim-controller,"
                "-selinux-warning-controller",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={paths.KCM_PORT}",
                "--concurrent-gc-syncs=5",
                "--node-monitor-grace-period=60s",
                "--profiling=false",
                "--v=1",
            ],
        )
        _install_crds(kc, bins["crds"])
        env = os.environ.copy()
        env["KUBECONFIG"] = str(kc_op)
        _start(
            "operator",
            [
                str(bins["operator"]),
                f"--metrics-addr=127.0.0.1:{paths.OPERATOR_METRICS_PORT}",
                f"--health-probe-bind-address=127.0.0.1:{paths.OPERATOR_PROBE_PORT}",
                "--enable-leader-election=false",
                "--use-kubernetes-proxy",
                "--feature-gates=RayClusterStatusConditions=true",
                "--log-stdout-encoder=console",
            ],
            env=env,
        )
        agent_cmd = [
            str(paths.VENV_PYTHON),
            "-m",
            AGENT_MODULE,
            "--kubeconfig",
            str(kc),
            "--state",
            str(paths.STATE_DIR),
        ]
        if node_cpu or os.environ.get("FLYRAY_KUBE_NODE_CPU"):
            agent_cmd += ["--cpu", node_cpu or os.environ["FLYRAY_KUBE_NODE_CPU"]]
        if node_memory or os.environ.get("FLYRAY_KUBE_NODE_MEMORY"):
            agent_cmd += ["--memory", node_memory or os.environ["FLYRAY_KUBE_NODE_MEMORY"]]
        aenv = os.environ.copy()
        aenv["PYTHONPATH"] = str(paths.REPO) + os.pathsep + aenv.get("PYTHONPATH", "")
        aenv["PYTHONUNBUFFERED"] = "1"
        _start("agent", agent_cmd, env=aenv)
        _wait(
            "kuberay operator readyz",
            lambda: _get(f"http://127.0.0.1:{paths.OPERATOR_PROBE_PORT}/readyz")[0] == 200,
            60,
            "operator",
        )
        _wait(
            "kube-controller-manager healthz",
            lambda: _get(f"https://127.0.0.1:{paths.KCM_PORT}/healthz", _insecure())[0] == 200,
            60,
            "controller-manager",
        )
        _wait("node Ready", lambda: _node_ready(server, ctx), 60, "agent")
        _wait(
            "default service account",
            lambda: _get(server + "/api/v1/namespaces/default/serviceaccounts/default", ctx)[0] == 200,
            60,
            "controller-manager",
        )
    except BaseException:
        log("up failed; logs are in " + str(paths.state("logs")))
        raise
    paths.state("up.json").write_text(json.dumps({"started": time.time(), "kubeconfig": str(kc)}))
    log(f"up in {time.monotonic() - t_start:.1f}s")
    return str(kc)


def _insecure() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _node_ready(server: str, ctx) -> bool:
    code, body = _get(f"{server}/api/v1/nodes/{paths.NODE_NAME}", ctx)
    if code != 200:
        return False
    conds = json.loads(body).get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def _install_crds(kubeconfig: Path, crd_dir: Path) -> None:
    import yaml
    from kubernetes import client, config

    api_client = config.new_client_from_config(str(kubeconfig))
    ext = client.ApiextensionsV1Api(api_client)
    names = []
    for f in sorted(crd_dir.glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            if not doc:
                continue
            names.append(doc["metadata"]["name"])
            try:
                ext.create_custom_resource_definition(doc, _preload_content=False)
            except client.ApiException as e:
                if e.status != 409:
                    raise
    t0 = time.monotonic()
    for n in names:
        while True:
            crd = ext.read_custom_resource_definition(n)
            if any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or [])):
                break
            if time.monotonic() - t0 > 60:
                raise TimeoutError(f"CRD {n} not established")
            time.sleep(0.2)
    log(f"CRDs established: {', '.join(names)}")
    api_client.close()


def _stop(name: str, timeout: float = 15) -> None:
    pid = _read_pid(name)
    if not _alive(pid, _marker(name)):
        _pidfile(name).unlink(missing_ok=True)
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    t0 = time.monotonic()
    while _alive(pid) and time.monotonic() - t0 < timeout:
        time.sleep(0.1)
    if _alive(pid):
        log(f"{name} did not stop in {timeout}s: SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    _pidfile(name).unlink(missing_ok=True)
    log(f"stopped {name}")


def _kill_pod_groups() -> None:
    """Kill any pod process group the agent recorded (in case the agent died)."""
    pods = paths.state("pods")
    if not pods.is_dir():
        return
    for pg in pods.glob("*/pgids"):
        for line in pg.read_text().split():
            with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
                os.killpg(int(line), signal.SIGKILL)


def _kill_netns_procs() -> None:
    """Any process still inside one of our netns gets SIGKILL (belt and braces)."""
    for ns in net.list_netns():
        out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
        for pid in out.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)


def down() -> None:
    """Stop everything and remove every trace (idempotent)."""
    with _locked():
        _down()
    with contextlib.suppress(OSError):
        os.unlink(f"{paths.STATE_DIR}.lock")


def _down() -> None:
    t0 = time.monotonic()
    # agent first: it stops the pods and removes their netns itself (with a deadline)
    _stop("agent", timeout=40)
    for name in ["operator", "controller-manager", "apiserver", "etcd"]:
        _stop(name)
    _kill_pod_groups()
    _kill_netns_procs()
    net.host_teardown()
    volumes.remove_mount_points(paths.STATE_DIR)  # after the pods: nothing is mounted on them any more
    if paths.STATE_DIR.exists():
        import shutil

        shutil.rmtree(paths.STATE_DIR, ignore_errors=True)
    log(f"down in {time.monotonic() - t0:.1f}s")


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_mib() -> dict[str, float]:
    """RSS (MiB) of each control-plane component (not counting pods)."""
    return {n: _rss_kib(_read_pid(n) or 0) / 1024 for n in COMPONENTS if _alive(_read_pid(n), _marker(n))}


def status() -> int:
    rc = 0
    rss = rss_mib()
    for n in COMPONENTS:
        pid = _read_pid(n)
        ok = _alive(pid, _marker(n))
        rc |= 0 if ok else 1
        print(f"{n:20s} {'running' if ok else 'stopped':8s} pid {pid or '-':<8} rss {rss.get(n, 0):7.1f} MiB")
    print(f"{'total':20s} {'':8s} {'':12s} rss {sum(rss.values()):7.1f} MiB")
    print(f"netns: {' '.join(net.list_netns()) or '-'}")
    print(f"kubeconfig: {kubeconfig_path()}")
    return rc
