"""The embedded Airflow's metadata database: a private PostgreSQL cluster inside the Airflow home.

Why not SQLite: Airflow documents it as unfit for concurrent use, and on Airflow 3.3.2 the api-server
deadlocks against itself on it (its audit-log commit blocks the event loop while another request holds
the write lock), so a busy machine gets ``500 Database error`` on a trigger and a scheduler that exits on
"database is locked". Debian's PostgreSQL server (``make postgres``) has none of that, and is the engine
production uses.

- Data in ``<root>/data``, socket in ``<root>/run`` (0700), ``listen_addresses=''``: no TCP port to
  expose or collide on, and only this user (and root) can reach the socket, so ``trust`` auth on it is
  safe. No statement text in the server log (``log_min_error_statement=panic``).
- PostgreSQL refuses to run as root. As root the server runs in a user namespace as Debian's
  ``postgres`` user (``unshare --user --map-user=postgres``): inside it is an ordinary user, outside it
  keeps root's files, so its data stays in the 0700 state folder that the real ``postgres`` user could
  not enter (nor a home under /root or pytest's 0700 temporary folders).
- The postmaster gets SIGINT (fast shutdown) when the process that started it dies (``setpriv
  --pdeathsig``): a killed stack never leaves a server behind.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PORT = 5432  # names the socket file (.s.PGSQL.5432); there is no TCP listener
DATABASE = "airflow"
USER = "airflow"
SOCKET_PATH_MAX = 107  # sun_path of a Unix socket, less the terminating NUL
SERVER_SETTINGS = {
    "listen_addresses": "",
    "unix_socket_permissions": "0700",
    "synchronous_commit": "off",  # a crash may lose the last commits, never consistency: fine for a dev stack
    "shared_buffers": "32MB",
    "max_connections": "200",
    "log_min_error_statement": "panic",  # failed statements would carry their values into the log
    "log_checkpoints": "off",
}


def bindir() -> Path:
    """The PostgreSQL server's bin folder: the newest Debian one, else the one of ``initdb`` on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    on_path = shutil.which("initdb")
    if found or on_path:
        return Path(found[-1] if found else on_path).parent
    raise RuntimeError(
        "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin, or initdb on PATH): the embedded "
        "Airflow keeps its metadata in a private PostgreSQL cluster. Install Debian's server with "
        "`make postgres` (apt-get install postgresql; `make demo` does it for you)."
    )


@dataclass(frozen=True)
class Cluster:
    """A private PostgreSQL cluster under ``root``; :meth:`start` creates it on first use."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def sockets(self) -> Path:
        return self.root / "run"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def url(self, driver: str = "psycopg2") -> str:
        return f"postgresql+{driver}://{USER}@/{DATABASE}?host={self.sockets}&port={PORT}"

    def airflow_env(self) -> dict[str, str]:
        """Airflow's sync (psycopg2) and async (asyncpg) connections to this cluster."""
        return {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.url("psycopg2"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": self.url("asyncpg"),
        }

    def start(self, timeout: float = 120.0) -> subprocess.Popen:
        """initdb (first time), start the postmaster, create the database; returns the postmaster."""
        socket_path = self.sockets / f".s.PGSQL.{PORT}"
        if len(str(socket_path)) > SOCKET_PATH_MAX:
            raise RuntimeError(
                f"the metadata DB's socket path {socket_path} is {len(str(socket_path))} bytes, over the "
                f"{SOCKET_PATH_MAX} a Unix socket allows: choose a shorter VIGIL_HOME"
            )
        bin_ = bindir()
        for folder in (self.root, self.sockets):
            folder.mkdir(parents=True, exist_ok=True)
            os.chmod(folder, 0o700)
        if not (self.data / "PG_VERSION").exists():
            initdb = [
                str(bin_ / "initdb"),
                f"--pgdata={self.data}",
                f"--username={USER}",
                "--auth-local=trust",
                "--auth-host=reject",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-instructions",
            ]
            result = subprocess.run(_as_server_user(initdb), capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(
                    f"initdb {self.data} failed:\n{result.stdout[-1500:]}{result.stderr[-1500:]}"
                )
        self._wait_for_previous_server()
        options = [arg for key, value in SERVER_SETTINGS.items() for arg in ("-c", f"{key}={value}")]
        command = [
            str(bin_ / "postgres"),
            "-D",
            str(self.data),
            "-p",
            str(PORT),
            "-k",
            str(self.sockets),
            *options,
        ]
        fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as log:
            server = subprocess.Popen(
                _as_server_user(["setpriv", "--pdeathsig", "INT", "--", *command]),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # stopped last, by us: not by a signal to the caller's group
            )
        try:
            self._wait_ready(server, bin_, timeout)
            self._create_database(bin_)
        except BaseException:
            stop(server)
            raise
        return server

    def _wait_ready(self, server: subprocess.Popen, bin_: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        ready = [
            str(bin_ / "pg_isready"),
            "-q",
            "-h",
            str(self.sockets),
            "-p",
            str(PORT),
            "-U",
            USER,
            "-d",
            "postgres",
        ]
        while subprocess.run(ready).returncode != 0:
            if server.poll() is not None or time.monotonic() > deadline:
                state = "exited" if server.poll() is not None else f"not ready after {timeout:.0f}s"
                raise RuntimeError(f"PostgreSQL {state}; log {self.log}:\n{_tail(self.log)}")
            time.sleep(0.2)

    def _create_database(self, bin_: Path) -> None:
        create = [str(bin_ / "createdb"), "-h", str(self.sockets), "-p", str(PORT), "-U", USER, DATABASE]
        result = subprocess.run(create, capture_output=True, text=True)
        if result.returncode != 0 and "already exists" not in result.stderr:
            raise RuntimeError(f"createdb {DATABASE} failed: {result.stderr.strip()}")

    def _wait_for_previous_server(self, timeout: float = 30.0) -> None:
        """A server of this cluster that is still shutting down (its starter was killed) must finish first."""
        pid_file = self.data / "postmaster.pid"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                pid = int(pid_file.read_text().split()[0])
                if Path(f"/proc/{pid}/comm").read_text().strip() != "postgres":
                    return  # a stale pid file (the pid now belongs to another program): PostgreSQL handles it
            except (OSError, ValueError, IndexError):
                return  # no pid file, or no such process: PostgreSQL itself cleans that up
            time.sleep(0.2)
        raise RuntimeError(f"a PostgreSQL server (pid {pid}) still runs on {self.data}; stop it first")


def stop(server: subprocess.Popen, timeout: float = 30.0) -> None:
    """Fast shutdown (SIGINT: disconnect clients, checkpoint), then immediate, then SIGKILL."""
    for sig, wait in ((signal.SIGINT, timeout), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
        if server.poll() is not None:
            return
        try:
            server.send_signal(sig)
            server.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _as_server_user(command: list[str]) -> list[str]:
    """``command`` as an ordinary user: as root, inside a user namespace as ``postgres``."""
    if os.geteuid() != 0:
        return command
    return ["unshare", "--user", "--map-user=postgres", "--map-group=postgres", "--", *command]


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
