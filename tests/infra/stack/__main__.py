"""`python -m tests.infra.stack demo`: the README demo. A real Airflow (api-server, scheduler, dag-processor,
triggerer) runs `example_flyray_local` on a transient local Ray cluster, then shows what happened.

`--keep` leaves Airflow running afterwards so you can browse the UI (Ctrl-C stops everything).
"""

from __future__ import annotations

import argparse
import time

from tests.infra.stack import REPO, AirflowStack


def demo(keep: bool) -> int:
    stack = AirflowStack(home=REPO / ".demo" / "airflow")
    t0 = time.monotonic()
    print(f"Starting Airflow in {stack.home} ...", flush=True)
    startup = stack.start()
    print(f"Airflow is up at {stack.base_url} (login admin/admin) after {startup:.1f}s", flush=True)
    try:
        dag_id, task_id = "example_flyray_local", "estimate_pi"
        run_id = stack.trigger(dag_id)
        print(f"Triggered {dag_id} run {run_id}; waiting ...", flush=True)
        seen_deferred = False
        while True:
            ti = stack.task_instance(dag_id, run_id, task_id)
            if ti["state"] == "deferred" and not seen_deferred:
                seen_deferred = True
                print("  task is DEFERRED: the worker slot is free, the triggerer is waiting on Ray", flush=True)
                print(f"  links while waiting: {stack.links(dag_id, run_id, task_id)}", flush=True)
            if ti["state"] in ("success", "failed", "upstream_failed"):
                break
            time.sleep(1)
        state = stack.wait_for_run(dag_id, run_id)
        log = stack.task_log(dag_id, run_id, task_id, ti.get("try_number") or 1)
        print("\n--- Ray job output, from the Airflow task log ---")
        for line in log.splitlines():
            if "[ray]" in line or "FLYRAY_RESULT" in line:
                print("  " + line.strip()[:200])
        print(f"\nRun state: {state}; XCom: {stack.xcom(dag_id, run_id, task_id)}")
        print(f"Extra links: {stack.links(dag_id, run_id, task_id)}")
        print(f"UI: {stack.base_url}/dags/{dag_id}/runs/{run_id}/tasks/{task_id}")
        print(f"Demo wall time: {time.monotonic() - t0:.1f}s")
        if keep:
            print("Airflow keeps running; Ctrl-C to stop.")
            while True:
                time.sleep(3600)
        return 0 if state == "success" else 1
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.infra.stack")
    sub = parser.add_subparsers(dest="command", required=True)
    demo_parser = sub.add_parser("demo", help="run the README demo")
    demo_parser.add_argument("--keep", action="store_true", help="leave Airflow running for the UI")
    args = parser.parse_args()
    if args.command == "demo":
        return demo(args.keep)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
