"""Shared fixtures: real services on loopback (moto S3, MLflow), stores on both backends, Airflow DB.

The environment is set before anything imports Airflow, Hugging Face or Great Expectations, so that
every test runs offline and against a throwaway Airflow home.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="vigil-tests-"))

os.environ.update(
    {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "GX_ANALYTICS_ENABLED": "false",
        "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": "false",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "VIGIL_HOME": str(_SESSION_DIR / "vigil"),
        "VIGIL_DOWNLOAD__POLITENESS_DELAY_S": "0",
    }
)
from tasks.stack import airflow_env  # noqa: E402  (after the environment is set)

os.environ.update(airflow_env(_SESSION_DIR / "airflow"))


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite Airflow metadata DB for dag.test() and DagBag tests (one per session)."""
    home = Path(os.environ["AIRFLOW_HOME"])
    if not (home / "airflow.db").exists():
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    return home


@pytest.fixture(scope="session")
def moto_endpoint() -> str:
    """A real HTTP S3 endpoint (moto's server) on 127.0.0.1."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def make_bucket(endpoint: str) -> str:
    import boto3

    name = f"vigil-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["local", "s3"])
def store_env(request, tmp_path, monkeypatch) -> dict[str, str]:
    """Point VIGIL_* at a fresh store on each backend; returns the env it set (for subprocesses too)."""
    env = {"VIGIL_HOME": str(tmp_path / "home")}
    if request.param == "local":
        env["VIGIL_STORE_URL"] = (tmp_path / "store").as_uri()
    else:
        endpoint = request.getfixturevalue("moto_endpoint")
        env["VIGIL_STORE_URL"] = f"s3://{make_bucket(endpoint)}/vigil"
        env["VIGIL_S3_ENDPOINT_URL"] = endpoint
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def settings(store_env):
    from tasks.settings import Settings

    return Settings()


@pytest.fixture
def store(settings):
    from tasks.storage import ObjectStore

    return ObjectStore.from_settings(settings)


@pytest.fixture
def local_store(tmp_path):
    from tasks.storage import ObjectStore

    return ObjectStore((tmp_path / "store").as_uri())


@pytest.fixture(scope="session")
def mlflow_server() -> str:
    """A real MLflow tracking server (SQLite + proxied artifacts) on loopback; yields its URI."""
    from tasks import stack

    service = stack.start_mlflow(_SESSION_DIR / "mlflow")
    try:
        stack.wait_healthy(service, timeout=120)
        yield service.url
    finally:
        stack.stop(service)
