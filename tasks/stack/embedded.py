"""The embedded stack: MLflow, Airflow standalone (on a private PostgreSQL) and the serving app on
loopback, one way for ``make demo`` and the tests.

State lives under one folder (``settings.home``, 0700; every service runs with umask 077);
``stack.json`` there (0600, no secret) records the process groups and ports so that ``vigil stack
down`` can stop what ``vigil stack up`` started. Every service listens on 127.0.0.1 only, except the
two log servers Airflow 3.3.2 binds to every interface (see :func:`start_airflow`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import sys
from dataclasses import asdict
from pathlib import Path

from tasks.stack import metadb
from tasks.stack.airflow_objects import airflow_env as airflow_objects_env
from tasks.stack.services import (
    Service,
    free_port,
    port_is_free,
    port_of,
    private_dir,
    start,
    stop,
    wait_healthy,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
PASSWORD_FILE = "simple_auth_manager_passwords.json.generated"  # where Airflow's SimpleAuthManager looks


# -- the services ---------------------------------------------------------------------------------


def start_mlflow(home: Path, port: int | None = None, artifacts_destination: str | None = None) -> Service:
    """MLflow tracking server on loopback: SQLite backend, artifacts proxied to a folder (or S3 URL)."""
    private_dir(home)
    port = port or free_port()
    artifacts = artifacts_destination or (home / "artifacts").as_uri()
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{home / 'mlflow.db'}",
        "--artifacts-destination",
        artifacts,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return start("mlflow", cmd, port=port, health_path="/health", log=home / "mlflow.log", env=env)


def airflow_env(home: Path, port: int | None = None) -> dict[str, str]:
    """Environment for every Airflow process of the embedded stack (also used by tests)."""
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "4",
        "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "30",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRFLOW__API__HOST": "127.0.0.1",  # the UI and REST API on loopback only (Airflow's default: 0.0.0.0)
        # standalone starts its components as `airflow ...` commands: this venv's bin must come first.
        "PATH": os.pathsep.join((str(Path(sys.executable).parent), os.environ.get("PATH", ""))),
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p),
    }
    if port:
        env["AIRFLOW__API__PORT"] = str(port)
        env["AIRFLOW__API__BASE_URL"] = f"http://127.0.0.1:{port}"
    return env


def start_airflow(home: Path, port: int | None = None, env: dict[str, str] | None = None) -> Service:
    """The embedded Airflow (:mod:`tasks.stack.airflow_service`: its PostgreSQL, then ``airflow standalone``).

    The admin password is written first (0600), so standalone finds it and never prints it. The
    scheduler's and triggerer's log servers get free ports: Airflow 3.3.2 binds them to every interface
    with no setting to change that (they answer only requests signed with this stack's secret), and on
    their fixed defaults (8793, 8794) a second stack on the machine could not start.
    """
    metadb.bindir()  # fail here, in the caller's terminal, when the server is not installed
    for driver in ("psycopg2", "asyncpg"):
        if importlib.util.find_spec(driver) is None:
            raise RuntimeError(
                f"the metadata DB driver {driver!r} is missing: run `make venv` (requirements.txt)"
            )
    private_dir(home)
    ensure_admin_password(home)
    port = port or free_port()
    worker_logs, trigger_logs = _free_ports(2, taken={port})
    full_env = {
        **airflow_env(home, port),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(worker_logs),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(trigger_logs),
        **(env or {}),
    }
    return start(
        "airflow",
        [sys.executable, "-m", "tasks.stack.airflow_service"],
        port=port,
        health_path="/api/v2/monitor/health",
        log=home / "standalone.log",
        env=full_env,
        cwd=REPO_ROOT,
    )


def ensure_admin_password(home: Path) -> str:
    """The admin password of Airflow's SimpleAuthManager: generated once into a 0600 file, before Airflow
    would generate it (and print it into standalone.log)."""
    path = home / PASSWORD_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)  # a home from before the stack wrote it: Airflow made it 0644
        return json.loads(path.read_text())["admin"]
    password = secrets.token_urlsafe(16)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps({"admin": password}) + "\n")
    return password


def airflow_admin_password(home: Path) -> str | None:
    """The admin password of the embedded Airflow (None before its first start)."""
    try:
        return json.loads((home / PASSWORD_FILE).read_text()).get("admin")
    except (OSError, ValueError):
        return None


def _free_ports(count: int, taken: set[int]) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in taken and port not in ports:
            ports.append(port)
    return ports


# -- the stack file ---------------------------------------------------------------------------------


def save_stack(path: Path, services: list[Service], extra: dict | None = None) -> None:
    """Write the stack file (0600, atomically). It holds no secret: the password stays in its own file."""
    private_dir(path.parent)
    data = {"services": [asdict(s) for s in services], **(extra or {})}
    data.pop("airflow_password", None)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(data, indent=2))
    os.replace(temporary, path)


def load_stack(path: Path) -> tuple[list[Service], dict]:
    """The services and info of the stack file; the info's ``airflow_password`` is read from its 0600 file."""
    if not path.exists():
        return [], {}
    data = json.loads(path.read_text())
    services = [Service(**s) for s in data.pop("services", [])]
    if data.get("airflow_home"):
        data["airflow_password"] = airflow_admin_password(Path(data["airflow_home"]))
    return services, data


# -- the embedded stack -----------------------------------------------------------------------------


def admin_token(home: Path) -> str:
    """The serving admin token of the embedded stack: generated once, kept in a 0600 file."""
    path = private_dir(home) / "admin_token"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as handle:
        handle.write(token)
    return token


def stack_env(settings) -> dict[str, str]:
    """What every process of the embedded stack must agree on (URLs, store, token)."""
    env = {
        "VIGIL_HOME": str(settings.home),
        "VIGIL_STORE_URL": settings.store_url,
        "VIGIL_INBOX": settings.inbox,
        "VIGIL_INCLUDE_DIR": str(settings.include_dir),
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "VIGIL_SERVING_URL": settings.serving_url,
        "VIGIL_AIRFLOW_URL": settings.airflow_url,
        "VIGIL_ADMIN_TOKEN": admin_token(settings.home),
        "GX_ANALYTICS_ENABLED": "false",
        "HF_HUB_OFFLINE": "1",
    }
    if settings.s3_endpoint_url:
        env["VIGIL_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    return env


def up(settings, *, serving: bool = True) -> dict:
    """Start MLflow, Airflow and the serving app (if not already running); returns their URLs and the
    Airflow login."""
    home: Path = private_dir(settings.home)
    stack_file = home / "stack.json"
    services, info = load_stack(stack_file)
    alive = [s for s in services if s.is_alive()]
    wanted = {"mlflow", "airflow"} | ({"serving"} if serving else set())
    if alive and {s.name for s in alive} >= wanted:
        return info
    for service in reversed(alive):  # a partial stack: restart it whole, so every part has the same settings
        stop(service)

    ports = {
        "mlflow": port_of(settings.mlflow_tracking_uri),
        "airflow": port_of(settings.airflow_url),
        "serving": port_of(settings.serving_url),
    }
    for name, port in ports.items():
        if name in wanted and not port_is_free(port):
            variable = {
                "mlflow": "MLFLOW_TRACKING_URI",
                "airflow": "VIGIL_AIRFLOW_URL",
                "serving": "VIGIL_SERVING_URL",
            }
            raise RuntimeError(
                f"port {port} for {name} is taken by another program; "
                f"set {variable[name]} to another http://127.0.0.1:PORT"
            )
    env = {**stack_env(settings), **airflow_objects_env(settings)}
    airflow_home = home / "airflow"
    started: list[Service] = []
    try:
        started.append(start_mlflow(home / "mlflow", port=ports["mlflow"]))
        started.append(start_airflow(airflow_home, port=ports["airflow"], env=env))
        if serving:
            cmd = [
                sys.executable,
                "-m",
                "tasks.serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(ports["serving"]),
            ]
            started.append(
                start(
                    "serving",
                    cmd,
                    port=ports["serving"],
                    health_path="/healthz",
                    log=home / "serving.log",
                    env=env,
                )
            )
        for service in started:
            wait_healthy(service, timeout=240)
    except BaseException:
        for service in reversed(started):
            stop(service)
        raise
    info = {
        "airflow_url": settings.airflow_url,
        "airflow_user": "admin",
        "airflow_home": str(airflow_home),
        "mlflow_url": settings.mlflow_tracking_uri,
        "serving_url": settings.serving_url if serving else None,
        "store_url": settings.store_url,
    }
    save_stack(stack_file, started, info)
    return {**info, "airflow_password": airflow_admin_password(airflow_home)}


def down(settings) -> list[str]:
    """Stop every service recorded in the stack file (whole process groups, last started first)."""
    stack_file = settings.home / "stack.json"
    services, info = load_stack(stack_file)
    for service in reversed(services):
        stop(service)
    if services:
        save_stack(stack_file, [], info)
    return [s.name for s in services]
