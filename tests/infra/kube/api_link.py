"""The ``kubernetes`` Service inside every pod, the part of kube-proxy the node agent plays: in the pod's
network namespace, ``10.96.0.1:443`` (the Service's ClusterIP, held on the pod's ``lo``) is relayed
to the API server on host loopback (``127.0.0.1:6443``, its only listening address).

This is how pods reach the API server with their service-account token (KubeRay's autoscaler sidecar
calls ``https://$KUBERNETES_SERVICE_HOST:443``). The relay is plain TCP: TLS is end to end and the API
server's certificate names 10.96.0.1 and ``kubernetes.default[.svc[.cluster.local]]``. Traffic stays on
host loopback and in the pod's namespace; nothing listens on a host interface.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import socket
import threading

from . import paths

log = logging.getLogger("flyray-agent")

CLONE_NEWNET = 0x40000000
SERVICE_PORT = 443
_libc = ctypes.CDLL(None, use_errno=True)


def listen_in_netns(netns: str, host: str, port: int) -> socket.socket:
    """A listening TCP socket made inside network namespace ``netns`` (a socket keeps the namespace it
    was created in). setns() moves only the calling thread: a throwaway thread does it, so no other
    agent thread ever runs in the pod's namespace."""
    result: list[socket.socket | BaseException] = []

    def work() -> None:
        try:
            with open(f"/run/netns/{netns}") as ns:
                if _libc.setns(ns.fileno(), CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({netns}): {os.strerror(err)}")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(64)
            result.append(sock)
        except BaseException as e:
            result.append(e)

    thread = threading.Thread(target=work, name=f"setns-{netns}")
    thread.start()
    thread.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


class ApiLink:
    """The relay of one pod: an accept thread, and two copying threads per connection."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self.listener = listen_in_netns(netns, paths.APISERVER_SERVICE_IP, SERVICE_PORT)
        self.closed = threading.Event()
        self.lock = threading.Lock()
        self.conns: set[socket.socket] = set()
        threading.Thread(target=self._accept_loop, daemon=True, name=f"api-link-{netns}").start()

    def close(self) -> None:
        """Stop listening and cut the connections still open (the pod is going away)."""
        self.closed.set()
        # shutdown() wakes the thread blocked in accept() (close() alone would not, on Linux)
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self.lock:
            conns, self.conns = list(self.conns), set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept_loop(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                if not self.closed.is_set():
                    log.exception("api link %s: accept failed", self.netns)
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", paths.APISERVER_PORT), timeout=10)
            upstream.settimeout(None)
        except OSError as e:
            log.warning("api link %s: API server unreachable: %s", self.netns, e)
            client.close()
            return
        with self.lock:
            if self.closed.is_set():
                client.close()
                upstream.close()
                return
            self.conns.update((client, upstream))
        done = threading.Barrier(2, action=lambda: self._forget(client, upstream))
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(src, dst, done), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, done: threading.Barrier) -> None:
        """Copy until ``src`` ends, then end ``dst``'s writing side: a half-close is passed on, as TLS
        close_notify and HTTP need."""
        how = socket.SHUT_WR
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:  # a reset or a closed relay: end both directions, the other pump with it
            how = socket.SHUT_RDWR
            with contextlib.suppress(OSError):
                src.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            dst.shutdown(how)
        with contextlib.suppress(threading.BrokenBarrierError):
            done.wait()

    def _forget(self, *socks: socket.socket) -> None:
        with self.lock:
            for s in socks:
                self.conns.discard(s)
        for s in socks:
            s.close()
