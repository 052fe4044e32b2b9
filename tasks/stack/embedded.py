"""The embedded stack: MLflow, Airflow standalone and the serving app on loopback, one way for
``make demo`` and the tests.

State lives under one folder (``settings.home``); ``stack.json`` there records the process groups and
ports so that ``vigil stack down`` can stop what ``vigil stack up`` started.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from tasks.stack.airflow_objects import POOLS_FILE
from tasks.stack.airflow_objects import airflow_env as airflow_objects_env
from tasks.stack.services import Service, free_port, port_is_free, port_of, start, stop, wait_healthy

REPO_ROOT = Path(__file__).resolve().parents[2]


# -- the services ---------------------------------------------------------------------------------


def start_mlflow(home: Path, port: int | None = None, artifacts_destination: str | None = None) -> Service:
    """MLflow tracking server on loopback: SQLite backend, artifacts proxied to a folder (or S3 URL)."""
    home.mkdir(parents=True, exist_ok=True)
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
        # standalone starts its components as `airflow ...` commands: this venv's bin must come first.
        "PATH": os.pathsep.join((str(Path(sys.executable).parent), os.environ.get("PATH", ""))),
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p),
    }
    if port:
        env["AIRFLOW__API__PORT"] = str(port)
        env["AIRFLOW__API__BASE_URL"] = f"http://127.0.0.1:{port}"
    return env


def start_airflow(home: Path, port: int | None = None, env: dict[str, str] | None = None) -> Service:
    """``airflow standalone`` (SQLite, LocalExecutor) in its own process group."""
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    cmd = [str(Path(sys.executable).with_name("airflow")), "standalone"]
    full_env = {**airflow_env(home, port), **(env or {})}
    return start(
        "airflow",
        cmd,
        port=port,
        health_path="/api/v2/monitor/health",
        log=home / "standalone.log",
        env=full_env,
    )


def airflow_admin_password(home: Path) -> str | None:
    """The admin password that standalone's SimpleAuthManager generated."""
    path = home / "simple_auth_manager_passwords.json.generated"
    try:
        return json.loads(path.read_text()).get("admin")
    except (OSError, ValueError):
        return None


# -- the stack file ---------------------------------------------------------------------------------


def save_stack(path: Path, services: list[Service], extra: dict | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"services": [asdict(s) for s in services], **(extra or {})}, indent=2))


def load_stack(path: Path) -> tuple[list[Service], dict]:
    if not path.exists():
        return [], {}
    data = json.loads(path.read_text())
    services = [Service(**s) for s in data.pop("services", [])]
    return services, data


# -- the embedded stack -----------------------------------------------------------------------------


def admin_token(home: Path) -> str:
    """The serving admin token of the embedded stack: generated once, kept in a 0600 file."""
    path = home / "admin_token"
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32))
    return path.read_text().strip()


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


def _airflow_cli(home: Path, env: dict[str, str], *args: str) -> None:
    """Run an ``airflow`` CLI command against the embedded Airflow home; fail loudly with its output."""
    cmd = [str(Path(sys.executable).with_name("airflow")), *args]
    result = subprocess.run(
        cmd, env={**os.environ, **airflow_env(home), **env}, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"`airflow {' '.join(args)}` failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        )


def up(settings, *, serving: bool = True) -> dict:
    """Start MLflow, Airflow standalone and the serving app (if not already running); returns their URLs."""
    home: Path = settings.home
    stack_file = home / "stack.json"
    services, info = load_stack(stack_file)
    alive = [s for s in services if s.is_alive()]
    wanted = {"mlflow", "airflow"} | ({"serving"} if serving else set())
    if alive and {s.name for s in alive} >= wanted:
        return info
    for service in alive:  # a partial stack: restart it whole, so every part has the same settings
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
        _airflow_cli(airflow_home, env, "db", "migrate")
        _airflow_cli(airflow_home, env, "pools", "import", str(settings.include_dir / POOLS_FILE))
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
        for service in started:
            stop(service)
        raise
    info = {
        "airflow_url": settings.airflow_url,
        "airflow_user": "admin",
        "airflow_password": _wait_for_password(airflow_home),
        "mlflow_url": settings.mlflow_tracking_uri,
        "serving_url": settings.serving_url if serving else None,
        "store_url": settings.store_url,
    }
    save_stack(stack_file, started, info)
    return info


def _wait_for_password(airflow_home: Path, timeout: float = 60.0) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        password = airflow_admin_password(airflow_home)
        if password:
            return password
        time.sleep(0.5)
    return None


def down(settings) -> list[str]:
    """Stop every service recorded in the stack file (whole process groups); returns their names."""
    stack_file = settings.home / "stack.json"
    services, info = load_stack(stack_file)
    for service in services:
        stop(service)
    if services:
        save_stack(stack_file, [], info)
    return [s.name for s in services]
