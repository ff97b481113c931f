"""Host bridge, pod network namespaces and routes (iproute2).

Layout: bridge ``flyray0`` 10.244.0.1/24 on the host; each pod gets netns
``flyray-<id>`` with ``eth0`` 10.244.0.x/24 (a veth whose host end ``fr<id>`` is
enslaved to the bridge), ``lo`` up, and an on-link route for the service range.
No default routes anywhere in pods; host ``ip_forward`` is never touched.  The
rest of 10.244.0.0/16 is blackholed on the host; the service range 10.96.0.0/16
is on-link via the bridge (a ClusterIP answers only if an endpoint pod holds it
as a /32 on its eth0). The API server's ClusterIP 10.96.0.1 is on each pod's ``lo``
instead, where the node agent relays it to the API server (api_link.py).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import subprocess
from pathlib import Path

from . import paths

NETNS_ETC = Path("/etc/netns")


def ip(*args: str, check: bool = True, ns: str | None = None) -> subprocess.CompletedProcess:
    cmd = (["ip", "-n", ns] if ns else ["ip"]) + list(args)
    p = subprocess.run(cmd, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {p.stderr.strip()}")
    return p


def _link_exists(name: str) -> bool:
    return ip("link", "show", name, check=False).returncode == 0


def host_setup() -> None:
    if not _link_exists(paths.BRIDGE):
        ip("link", "add", paths.BRIDGE, "type", "bridge")
    ip("addr", "replace", f"{paths.BRIDGE_IP}/24", "dev", paths.BRIDGE)
    ip("link", "set", paths.BRIDGE, "up")
    ip("route", "replace", paths.SERVICE_CIDR, "dev", paths.BRIDGE, "scope", "link")
    ip("route", "replace", "blackhole", paths.POD_SUPERNET)
    # fallback if the on-link service route is ever unusable (bridge without ports is "linkdown")
    ip("route", "replace", "blackhole", paths.SERVICE_CIDR, "metric", "4000")


def host_teardown() -> None:
    for name in list_netns():
        delete_netns(name)
    out = ip("-o", "link", "show", check=False).stdout
    for line in out.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(paths.VETH_PREFIX) and name != paths.BRIDGE and len(name) == len(paths.VETH_PREFIX) + 8:
            ip("link", "del", name, check=False)
    ip("route", "del", paths.SERVICE_CIDR, "dev", paths.BRIDGE, check=False)
    ip("route", "del", "blackhole", paths.POD_SUPERNET, check=False)
    ip("route", "del", "blackhole", paths.SERVICE_CIDR, "metric", "4000", check=False)
    if _link_exists(paths.BRIDGE):
        ip("link", "del", paths.BRIDGE, check=False)
    if NETNS_ETC.is_dir():
        for d in NETNS_ETC.iterdir():
            if d.name.startswith(paths.NETNS_PREFIX):
                shutil.rmtree(d, ignore_errors=True)
        with contextlib.suppress(OSError):
            NETNS_ETC.rmdir()  # only if empty (it may hold other tools' entries)


def list_netns() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    names = [line.split()[0] for line in out.splitlines() if line.split()]
    return [n for n in names if n.startswith(paths.NETNS_PREFIX)]


def pod_setup(pid_id: str, pod_ip: str, hostname: str) -> str:
    """Create netns + veth for a pod; returns the netns name."""
    ns = paths.NETNS_PREFIX + pid_id
    host_if = paths.VETH_PREFIX + pid_id
    tmp_if = "fp" + pid_id
    delete_netns(ns)
    ip("netns", "add", ns)
    ip("link", "add", host_if, "type", "veth", "peer", "name", tmp_if)
    ip("link", "set", tmp_if, "netns", ns)
    ip("link", "set", host_if, "master", paths.BRIDGE)
    ip("link", "set", host_if, "up")
    ip("link", "set", "lo", "up", ns=ns)
    # The `kubernetes` Service's ClusterIP is local in every pod: the agent relays it to the API server
    # (api_link.py). On lo, not eth0, so set_service_ips (which owns eth0's service addresses) leaves it.
    ip("addr", "add", f"{paths.APISERVER_SERVICE_IP}/32", "dev", "lo", ns=ns)
    ip("link", "set", tmp_if, "name", "eth0", ns=ns)
    ip("addr", "add", f"{pod_ip}/24", "dev", "eth0", ns=ns)
    ip("link", "set", "eth0", "up", ns=ns)
    ip("route", "add", paths.SERVICE_CIDR, "dev", "eth0", "scope", "link", ns=ns)
    etc = NETNS_ETC / ns
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "resolv.conf").write_text(
        "# flyray test pod: no DNS server, names come from /etc/hosts\n"
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"
    )
    write_hosts(ns, [])
    (etc / "hostname").write_text(hostname + "\n")
    return ns


def write_hosts(ns: str, entries: list[tuple[str, list[str]]]) -> None:
    etc = NETNS_ETC / ns
    if not etc.is_dir():
        return
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{ipaddr}\t{' '.join(names)}" for ipaddr, names in entries]
    text = "\n".join(lines) + "\n"
    f = etc / "hosts"
    try:
        if f.exists() and f.read_text() == text:
            return
    except OSError:
        pass
    # Write in place: running processes see /etc/hosts through a bind mount of this inode.
    with open(f, "a+") as fh:
        fh.seek(0)
        fh.truncate()
        fh.write(text)


def set_service_ips(ns: str, ips: set[str]) -> None:
    """Make the pod's eth0 hold exactly ``ips`` as extra /32 service addresses."""
    out = ip("-o", "-4", "addr", "show", "dev", "eth0", ns=ns, check=False).stdout
    have = set()
    net = ipaddress.ip_network(paths.SERVICE_CIDR)
    for line in out.split("\n"):
        parts = line.split()
        if "inet" in parts:
            a = parts[parts.index("inet") + 1]
            addr = a.split("/")[0]
            if ipaddress.ip_address(addr) in net:
                have.add(addr)
    for a in have - ips:
        ip("addr", "del", f"{a}/32", "dev", "eth0", ns=ns, check=False)
    for a in ips - have:
        ip("addr", "add", f"{a}/32", "dev", "eth0", ns=ns, check=False)


def delete_netns(ns: str) -> None:
    pid_id = ns[len(paths.NETNS_PREFIX) :]
    if os.path.exists(f"/run/netns/{ns}"):
        ip("netns", "del", ns, check=False)
    if _link_exists(paths.VETH_PREFIX + pid_id):
        ip("link", "del", paths.VETH_PREFIX + pid_id, check=False)
    shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)
