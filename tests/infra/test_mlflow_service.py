"""The compose file's MLflow service, run for real without Docker.

Debian's PostgreSQL stands in for the postgres container (initialised by the same init script the
container runs), moto's S3 server for MinIO, and the MLflow image's requirements venv runs the exact
command line and environment of the ``mlflow`` service, with only the host names and ports remapped
to loopback. Then a client logs a run, an artifact and a registered version with the champion alias.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tasks.stack import Service, free_port, stop, wait_healthy
from tests.helpers.deploy_files import REPO, load_compose, service_environment

INIT_SCRIPT = REPO / "docker" / "postgres" / "init-mlflow-db.sh"


def postgres_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL server binaries not found: `make test` installs Debian's postgresql")
    return Path(found[-1]).parent


@dataclass
class Postgres:
    port: int
    socket_dir: Path
    superuser: str
    database: str


@pytest.fixture(scope="module")
def postgres() -> Postgres:
    """A throwaway PostgreSQL cluster on loopback, initialised like the postgres image (airflow/airflow)."""
    bindir = postgres_bindir()
    root = Path(tempfile.mkdtemp(prefix="vigil-pg-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        user = pwd.getpwnam("postgres")
        for path in (root, sockets):
            os.chown(path, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    os.chmod(sockets, 0o755)
    subprocess.run(
        [
            *as_user,
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "airflow",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            *as_user,
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-k",
            str(sockets),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(root / "postgres.log", "wb"),  # noqa: SIM115 - the server outlives this block
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while (
            subprocess.run(
                [str(bindir / "pg_isready"), "-h", str(sockets), "-p", str(port)], capture_output=True
            ).returncode
            != 0
        ):
            assert proc.poll() is None and time.monotonic() < deadline, (root / "postgres.log").read_text()
            time.sleep(0.3)
        subprocess.run(
            [str(bindir / "createdb"), "-h", str(sockets), "-p", str(port), "-U", "airflow", "airflow"],
            check=True,
            capture_output=True,
        )
        yield Postgres(port, sockets, "airflow", "airflow")
    finally:
        stop(Service("postgres", proc.pid, port, "", "", str(root / "postgres.log")))
        shutil.rmtree(root, ignore_errors=True)


def psql(pg: Postgres, sql: str, *, url: str | None = None) -> str:
    target = [url] if url else ["-h", str(pg.socket_dir), "-p", str(pg.port), "-U", pg.superuser, pg.database]
    result = subprocess.run(
        ["psql", "-v", "ON_ERROR_STOP=1", "-At", "-c", sql, *target], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def mlflow_db(postgres, generated_env) -> str:
    """Runs the compose init script as the postgres image would; returns the mlflow role's password."""
    password = generated_env["MLFLOW_DB_PASSWORD"]
    env = {
        **os.environ,
        "POSTGRES_USER": "airflow",
        "POSTGRES_DB": "airflow",
        "MLFLOW_DB_PASSWORD": password,
        "PGHOST": str(postgres.socket_dir),
        "PGPORT": str(postgres.port),
    }
    result = subprocess.run(["bash", str(INIT_SCRIPT)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return password


def test_init_script_creates_mlflow_database_reachable_with_its_password(postgres, mlflow_db):
    url = f"postgresql://mlflow:{mlflow_db}@127.0.0.1:{postgres.port}/mlflow"
    assert psql(postgres, "select current_user, current_database()", url=url) == "mlflow|mlflow"
    wrong = subprocess.run(
        ["psql", "-At", "-c", "select 1", f"postgresql://mlflow:wrong@127.0.0.1:{postgres.port}/mlflow"],
        capture_output=True,
        text=True,
    )
    assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr


def test_init_script_refuses_to_run_without_a_password(postgres):
    env = {
        **os.environ,
        "POSTGRES_USER": "airflow",
        "POSTGRES_DB": "airflow",
        "PGHOST": str(postgres.socket_dir),
        "PGPORT": str(postgres.port),
    }
    env.pop("MLFLOW_DB_PASSWORD", None)
    result = subprocess.run(["bash", str(INIT_SCRIPT)], env=env, capture_output=True, text=True)
    assert result.returncode != 0 and "MLFLOW_DB_PASSWORD" in result.stderr


@pytest.fixture(scope="module")
def mlflow_service(image_venvs, postgres, mlflow_db, generated_env, moto_endpoint, tmp_path_factory):
    """The compose ``mlflow`` service's command and environment, with postgres and minio remapped to loopback."""
    import boto3

    bucket = f"mlflow-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=bucket)
    service = load_compose({**generated_env, "MLFLOW_BUCKET": bucket})["services"]["mlflow"]
    port = free_port()
    command = [
        a.replace("--host=0.0.0.0", "--host=127.0.0.1").replace("--port=5000", f"--port={port}")
        for a in service["command"]
    ]
    env = service_environment(service)
    env["MLFLOW_BACKEND_STORE_URI"] = env["MLFLOW_BACKEND_STORE_URI"].replace(
        "@postgres/", f"@127.0.0.1:{postgres.port}/"
    )
    env["MLFLOW_S3_ENDPOINT_URL"] = moto_endpoint
    python = image_venvs.python("mlflow")
    log = tmp_path_factory.mktemp("mlflow-service") / "mlflow.log"
    assert command[0] == "mlflow"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "VIGIL_"))}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(python), "-m", "mlflow", *command[1:]],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**clean, **env},
            start_new_session=True,
        )
    server = Service(
        "mlflow", proc.pid, port, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/health", str(log)
    )
    try:
        wait_healthy(server, timeout=240)
        yield server, bucket, moto_endpoint
    finally:
        stop(server)


def request(url: str, host: str) -> int:
    req = urllib.request.Request(url, headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def test_mlflow_accepts_the_compose_service_name_and_rejects_other_hosts(mlflow_service):
    server, _, _ = mlflow_service
    search = f"{server.url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert request(search, "mlflow:5000") == 200  # how Airflow, serving and the trainer address it
    assert request(search, "localhost:5000") == 200  # a browser through the published port
    assert request(search, "attacker.example") == 403


def test_runs_artifacts_and_registry_aliases_land_in_postgres_and_s3(
    mlflow_service, postgres, mlflow_db, tmp_path
):
    import boto3
    from mlflow import MlflowClient

    server, bucket, endpoint = mlflow_service
    client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
    experiment = client.create_experiment(f"infra-{uuid.uuid4().hex[:6]}")
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "roc_auc", 0.97)
    client.log_text(run.info.run_id, "gate passed", "reports/gate.md")  # proxied: the client has no S3 access
    client.set_terminated(run.info.run_id)
    name = f"vigil-detector-{uuid.uuid4().hex[:6]}"
    client.create_registered_model(name)
    version = client.create_model_version(name, f"{run.info.artifact_uri}/reports", run_id=run.info.run_id)
    client.set_registered_model_alias(name, "champion", version.version)

    assert client.get_model_version_by_alias(name, "champion").version == version.version
    downloaded = client.download_artifacts(run.info.run_id, "reports/gate.md", str(tmp_path))
    assert Path(downloaded).read_text() == "gate passed"
    keys = [
        o["Key"] for o in boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=bucket)["Contents"]
    ]
    assert any(k.startswith("artifacts/") and k.endswith("reports/gate.md") for k in keys), keys
    url = f"postgresql://mlflow:{mlflow_db}@127.0.0.1:{postgres.port}/mlflow"
    assert psql(postgres, f"select count(*) from registered_models where name = '{name}'", url=url) == "1"
