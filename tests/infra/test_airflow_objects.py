"""Connections, variables and pools as code: the same names in both modes, read by real Airflow.

Compose spells the connections and variables out in docker-compose.yaml; the embedded stack
(tasks/stack/embedded.py) merges ``airflow_objects.airflow_env(settings)`` into its Airflow processes'
environment. Both import the one pools file, ``include/airflow/pools.json``: compose's airflow-init
and the embedded stack after its ``airflow db migrate``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tasks.settings import Settings
from tasks.stack import airflow_objects
from tests.helpers.deploy_files import REPO, service_environment
from tests.infra.test_compose import AIRFLOW, settings_of

POOLS = REPO / "include" / airflow_objects.POOLS_FILE


def compose_airflow_objects(compose: dict, service: str) -> dict[str, str]:
    env = service_environment(compose["services"][service])
    return {k: v for k, v in env.items() if k.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_"))}


def test_every_airflow_component_sees_the_same_connections_and_variables(compose):
    objects = {json.dumps(compose_airflow_objects(compose, name), sort_keys=True) for name in AIRFLOW}
    assert len(objects) == 1


def test_compose_connections_are_what_the_code_derives_from_compose_settings(compose, monkeypatch):
    settings = settings_of(compose, "airflow-worker", monkeypatch)
    in_compose = {
        k: json.loads(v)
        for k, v in compose_airflow_objects(compose, "airflow-worker").items()
        if k.startswith("AIRFLOW_CONN_")
    }
    derived = {
        k: json.loads(v)
        for k, v in airflow_objects.airflow_env(settings).items()
        if k.startswith("AIRFLOW_CONN_")
    }
    assert in_compose == derived


def test_embedded_mode_defines_the_same_names_as_compose(compose, tmp_path, monkeypatch):
    monkeypatch.delenv("VIGIL_S3_ENDPOINT_URL", raising=False)
    embedded = airflow_objects.airflow_env(
        Settings(home=tmp_path, mlflow_tracking_uri="http://127.0.0.1:5123")
    )
    assert set(embedded) == set(compose_airflow_objects(compose, "airflow-worker"))
    assert json.loads(embedded["AIRFLOW_CONN_VIGIL_MLFLOW"])["port"] == 5123
    assert embedded["AIRFLOW_VAR_VIGIL_MLFLOW_UI_URL"] == "http://127.0.0.1:5123"


def test_compose_variables_are_urls_a_browser_can_open(compose, generated_env):
    objects = compose_airflow_objects(compose, "airflow-worker")
    published = {
        name: [p.split(":")[1] for p in compose["services"][name]["ports"]] for name in ("mlflow", "serving")
    }
    host = generated_env["VIGIL_PUBLIC_HOST"]
    assert objects["AIRFLOW_VAR_VIGIL_MLFLOW_UI_URL"] == f"http://{host}:{published['mlflow'][0]}"
    assert objects["AIRFLOW_VAR_VIGIL_SERVING_UI_URL"] == f"http://{host}:{published['serving'][0]}"


def test_airflow_parses_the_compose_connections_and_variables(compose, monkeypatch):
    """Airflow's own secrets backend and the Amazon provider read the values as intended."""
    for key, value in compose_airflow_objects(compose, "airflow-worker").items():
        monkeypatch.setenv(key, value)
    from airflow.models.variable import Variable
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.sdk import BaseHook

    assert S3Hook(aws_conn_id="vigil_s3").conn_config.endpoint_url == "http://minio:9000"
    mlflow = BaseHook.get_connection("vigil_mlflow")
    assert (mlflow.conn_type, mlflow.schema, mlflow.host, mlflow.port) == ("http", "http", "mlflow", 5000)
    x = BaseHook.get_connection("vigil_x")
    assert x.host == "api.x.com" and not x.password  # no secret in the connection: X_BEARER_TOKEN holds it
    assert Variable.get("vigil_mlflow_ui_url").startswith("http://")


def test_compose_imports_the_pools_file_the_embedded_stack_imports(compose):
    script = compose["services"]["airflow-init"]["command"][-1]
    assert 'airflow pools import "${VIGIL_INCLUDE_DIR}/' + airflow_objects.POOLS_FILE + '"' in script


def test_pools_file_imports_into_airflow(airflow_db):
    """The same command the airflow-init service runs, against a real Airflow metadata database."""
    airflow = [sys.executable, "-m", "airflow"]
    env = {**os.environ, "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR"}
    result = subprocess.run(
        [*airflow, "pools", "import", str(POOLS)], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    listed = subprocess.run(
        [*airflow, "pools", "list", "-o", "json"], capture_output=True, text=True, env=env, check=True
    )
    pools = {p["pool"]: int(p["slots"]) for p in json.loads(listed.stdout)}
    expected = {name: spec["slots"] for name, spec in json.loads(POOLS.read_text()).items()}
    assert expected.items() <= pools.items()
    assert expected["gpu"] == 1 and {"collect_x", "collect_mastodon", "collect_folder"} <= set(expected)


def test_a_malformed_pools_file_fails_the_import(airflow_db, tmp_path: Path):
    # What airflow-init does with a bad pools.json: it fails, so the stack does not start half-configured.
    bad = tmp_path / "pools.json"
    bad.write_text(json.dumps({"gpu": {"slots": 1}}))  # no description
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "pools", "import", str(bad)], capture_output=True, text=True
    )
    assert result.returncode != 0 and "gpu" in result.stdout + result.stderr
