"""CLI: python -m tests.infra.kube {build,up,down,status}"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.infra.kube")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build (or reuse cached) etcd/apiserver/kcm and the KubeRay operator")
    b.add_argument("--force", action="store_true")
    b.add_argument("--only", choices=["kube", "operator"])
    sub.add_parser("up", help="start the control plane (idempotent); prints the kubeconfig path last")
    sub.add_parser("down", help="stop everything and clean up (idempotent)")
    sub.add_parser("status", help="show what is running")
    a = ap.parse_args(argv)
    if a.cmd == "build":
        from . import build

        if a.only == "kube":
            build.build_kube(a.force)
        elif a.only == "operator":
            build.build_operator(a.force)
        else:
            build.build_all(a.force)
        return 0
    from . import cluster

    if a.cmd == "up":
        kc = cluster.up()
        print(kc)
        return 0
    if a.cmd == "down":
        cluster.down()
        return 0
    if a.cmd == "status":
        return cluster.status()
    return 2


if __name__ == "__main__":
    sys.exit(main())
