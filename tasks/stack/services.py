"""Processes of the embedded stack: start one in its own process group, wait for its health, stop it.

Every service runs in its own process group (``setsid``) so that stopping it also stops the workers
it forked (Airflow standalone forks a scheduler, api-server, dag-processor, triggerer and task
processes); ``stop`` signals the whole group, then SIGKILLs what is left.

Every service is private to this user: it starts with umask 077 (its logs, databases and the files it
writes are 0600/0700), and never asks a cloud's instance-metadata service for credentials.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

UMASK = 0o077
# Outside production nothing looks for cloud instance credentials: botocore without credentials would
# otherwise try http://169.254.169.254 (EC2 instance metadata). Not overridable by a caller's env.
NO_INSTANCE_METADATA = {"AWS_EC2_METADATA_DISABLED": "true"}


@dataclass
class Service:
    """A started service: enough to find it, wait for it and stop it."""

    name: str
    pid: int
    port: int
    url: str
    health_url: str
    log: str

    def is_alive(self) -> bool:
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it 0700: the stack's state is this user's alone."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def port_of(url: str) -> int:
    parsed = urlparse(url)
    return parsed.port or (443 if parsed.scheme == "https" else 80)


def start(
    name: str,
    cmd: list[str],
    *,
    port: int,
    health_path: str,
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Service:
    """Start ``cmd`` in a new process group with output to ``log`` (0600); does not wait for health."""
    private_dir(log.parent)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {}), **NO_INSTANCE_METADATA},
            cwd=cwd,
            umask=UMASK,
        )
    url = f"http://127.0.0.1:{port}"
    return Service(name, proc.pid, port, url, url + health_path, str(log))


def wait_healthy(service: Service, timeout: float = 120.0) -> None:
    """Poll the health URL until it answers 2xx; fail with the log's tail if the process dies or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.is_alive():
            raise RuntimeError(
                f"{service.name} exited during start-up; log {service.log}:\n{_tail(service.log)}"
            )
        try:
            with urllib.request.urlopen(service.health_url, timeout=2) as resp:
                if 200 <= resp.status < 300:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(
        f"{service.name} not healthy after {timeout:.0f}s at {service.health_url}; "
        f"log {service.log}:\n{_tail(service.log)}"
    )


def stop(service: Service, timeout: float = 20.0) -> None:
    """SIGTERM the service's process group, then SIGKILL whatever is left after ``timeout``."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(service.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                # Reap the leader if it is our child, then check the group.
                os.waitpid(service.pid, os.WNOHANG)
            except ChildProcessError:
                pass
            if not service.is_alive():
                return
            time.sleep(0.2)


def _tail(path: str, lines: int = 40) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
