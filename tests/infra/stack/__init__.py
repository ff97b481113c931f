"""A real, headless Airflow 3 stack (api-server, scheduler, dag-processor, triggerer; LocalExecutor;
metadata in SQLite, or in PostgreSQL given ``database_url``) started from Python, with the REST calls the
demo and the end-to-end tests need.

Every process runs in its own process group and is stopped (SIGTERM, then SIGKILL) by :meth:`stop`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.infra import REPO

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


def local_ray_pids(also: str | None = None) -> list[int]:
    """Processes of local Ray clusters (they carry FLYRAY_LOCAL_CLUSTER), optionally with another env entry."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            if any(e.startswith(b"FLYRAY_LOCAL_CLUSTER=") for e in environ) and (
                also is None or also.encode() in environ
            ):
                pids.append(int(entry))
    return pids


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class AirflowStack:
    home: Path
    dags_folder: Path = REPO / "dags"
    port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    # None: SQLite in ``home`` (the demo); the e2e and fault stacks pass a PostgreSQL database's URL.
    database_url: str | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    startup_seconds: float = 0.0  # what the last start() took
    _token: str | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        passwords = self.home / "passwords.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "4",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__BASE_URL": self.base_url,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                "AIRFLOW_CONN_RAY_LOCAL": json.dumps({"conn_type": "flyray", "extra": {"backend": "local"}}),
            }
        )
        if self.database_url:
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = self.database_url
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 180) -> float:
        """Migrate the DB, start every component, wait for the API; return the seconds it took."""
        started = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "passwords.json").write_text(json.dumps({"admin": "admin"}))
        (self.home / "logs").mkdir(exist_ok=True)
        migrate = subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        if migrate.returncode:
            raise RuntimeError(f"airflow db migrate failed ({migrate.returncode}):\n{migrate.stderr[-3000:]}")
        for component in COMPONENTS:
            self._spawn(component)
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError, urllib.error.URLError):
                urllib.request.urlopen(self.base_url + "/api/v2/monitor/health", timeout=2).read()
                break
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"airflow {name} exited: see {self.home}/logs/{name}.log")
            if time.monotonic() > deadline:
                raise TimeoutError(f"Airflow API did not answer on {self.base_url}")
            time.sleep(0.5)
        self.startup_seconds = time.monotonic() - started
        return self.startup_seconds

    def stop(self) -> None:
        for proc in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self.processes.clear()
        # A task deferred at shutdown leaves its local Ray head behind (nothing else will stop it).
        for pid in local_ray_pids(f"AIRFLOW_HOME={self.home}"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def restart(self, component: str, *, kill: bool = False) -> None:
        """Stop a component (SIGTERM; ``kill``: SIGKILL, as a crash or an OOM kill would) and start it again."""
        proc = self.processes[component]
        os.killpg(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self._spawn(component)

    def _spawn(self, component: str) -> None:
        """Start one Airflow component in its own process group, appending to its log."""
        with open(self.home / "logs" / f"{component}.log", "ab") as log:
            self.processes[component] = subprocess.Popen(
                [sys.executable, "-m", "airflow", component],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    # ---- REST ---------------------------------------------------------------------------------------

    def token(self) -> str:
        if self._token is None:
            body = self._raw("POST", "/auth/token", {"username": "admin", "password": "admin"}, auth=False)
            self._token = body["access_token"]
        return self._token

    def _raw(self, method: str, path: str, body: Any = None, *, auth: bool = True, accept_json: bool = True) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        request = urllib.request.Request(
            self.base_url + path,
            method=method,
            headers=headers,
            data=json.dumps(body).encode() if body is not None else None,
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
        return json.loads(text) if text and accept_json else text

    def api(self, method: str, path: str, body: Any = None) -> Any:
        return self._raw(method, path, body)

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(urllib.error.HTTPError):
                self.api("GET", f"/api/v2/dags/{dag_id}")
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"DAG {dag_id} was not parsed; see {self.home}/logs/dag-processor.log")
            time.sleep(1)

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None, run_id: str | None = None) -> str:
        self.wait_for_dag(dag_id)
        self.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        body: dict[str, Any] = {"logical_date": None, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        run = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)
        return str(run["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        return dict(self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"))

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 600, poll: float = 1.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            state = self.run_state(dag_id, run_id)
            if state in ("success", "failed"):
                return state
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} of {dag_id} still {state}")
            time.sleep(poll)

    def links(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        return dict(self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/links"))

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        body = self.api(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}?full_content=true"
        )
        content = body.get("content", "")
        if isinstance(content, list):
            lines = []
            for item in content:
                if not isinstance(item, dict):
                    lines.append(str(item))
                    continue
                lines.append(str(item.get("event", "")))
                for error in item.get("error_detail") or []:
                    lines.append(f"{error.get('exc_type')}: {error.get('exc_value')}")
            return "\n".join(lines)
        return str(content)

    def trigger_logs(self, dag_id: str) -> str:
        """What the triggerer logged for a DAG's tasks (Airflow writes it beside the task log)."""
        return "\n".join(
            path.read_text(errors="replace")
            for path in sorted((self.home / "logs").glob(f"dag_id={dag_id}/**/*trigger*.log"))
        )

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        return self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}")[
            "value"
        ]
