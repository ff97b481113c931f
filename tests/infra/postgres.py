"""A PostgreSQL server of the test session: Debian's server binaries, a data directory of its own, a loopback
port, started and stopped by the session (the Airflow stacks of tests/e2e and tests/faults keep their
metadata in it, as production Airflow does; the demo and `airflow dags test` stay on SQLite).

The server never touches the system's cluster (``/var/lib/postgresql``): ``initdb`` makes a fresh one in
a temporary directory, it listens on 127.0.0.1 only, with its socket in that directory, and ``stop``
removes the directory. PostgreSQL refuses to run as root, so as root it runs as the ``postgres`` user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.infra.stack import free_port

ROOT_PREFIX = "flyray-postgres-"
OWNER_FILE = "owner.pid"  # the pid of the process that started the server (see sweep_orphans)
BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True)
DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def server_bin() -> Path:
    """The newest Debian PostgreSQL's bin directory (``make test`` installs the server when there is none)."""
    for path in BIN_DIRS:
        if (path / "initdb").exists():
            return path
    raise RuntimeError("PostgreSQL's server is not installed: `apt-get install postgresql` (make postgres does it)")


@dataclass
class PostgresServer:
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix=ROOT_PREFIX)))
    port: int = field(default_factory=free_port)
    bin: Path = field(default_factory=server_bin)
    superuser: str = "postgres"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def url(self, database: str) -> str:
        """The SQLAlchemy URL Airflow's ``[database] sql_alchemy_conn`` takes (trust auth on loopback)."""
        return f"postgresql+psycopg2://{self.superuser}@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 60) -> None:
        (self.root / OWNER_FILE).write_text(str(os.getpid()))
        self._chown(self.root)
        self._run("initdb", "-D", str(self.data), "-U", self.superuser, "-A", "trust", "-E", "UTF8", "--no-sync")
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -c max_connections=300"
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", str(int(timeout)), "start"
        )

    def create_database(self, name: str) -> str:
        """A new, empty database; returns its URL."""
        if not DATABASE_NAME.match(name):
            raise ValueError(f"database name {name!r}: lower-case letters, digits and _ only")
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.superuser, name)
        return self.url(name)

    def dump(self, database: str) -> str:
        """The database as SQL text (``pg_dump``): what an attacker with a copy of the DB would read."""
        return self._run("pg_dump", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.superuser, database)

    def stop(self) -> None:
        if self.data.exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, tool: str, *args: str) -> str:
        command = [str(self.bin / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", self.superuser, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=self.root)
        if done.returncode:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise subprocess.CalledProcessError(done.returncode, command, done.stdout, f"{done.stderr}\n{log}")
        return done.stdout

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            user = pwd.getpwnam(self.superuser)
            os.chown(path, user.pw_uid, user.pw_gid)


def alive(pid: int) -> bool:
    """A running process (a zombie, dead but not yet reaped, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def sweep_orphans() -> list[Path]:
    """Stop the servers of sessions that died without stopping theirs (a SIGKILLed pytest), and remove
    their directories; returns what was swept."""
    swept = []
    for root in Path(tempfile.gettempdir()).glob(f"{ROOT_PREFIX}*"):
        with contextlib.suppress(OSError, ValueError):
            owner = int((root / OWNER_FILE).read_text())
            if owner == os.getpid() or alive(owner):
                continue
            PostgresServer(root=root, port=0).stop()
            swept.append(root)
    return swept


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A started server for the block, stopped and its directory removed after it (also when start fails)."""
    for root in sweep_orphans():
        print(f"[flyray-postgres] stopped the server of a dead session in {root}")
    server = PostgresServer()
    started = time.monotonic()
    try:
        server.start()
        print(f"[flyray-postgres] PostgreSQL on 127.0.0.1:{server.port} in {time.monotonic() - started:.1f}s")
        yield server
    finally:
        server.stop()
