"""Connections, variables and pools as code: the same names in both modes, read by real Airflow.

Pools and connections are files under ``include/airflow/`` that both modes import with Airflow's own
commands: compose's airflow-init, and the embedded Airflow service after its ``airflow db migrate``
(tasks/stack/airflow_service.py). Variables are environment variables: compose spells them out in
docker-compose.yaml, the embedded stack derives them (``airflow_objects.airflow_env(settings)``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from tasks.collect.kinds import KINDS
from tasks.settings import Settings
from tasks.stack import airflow_objects
from tests.helpers.deploy_files import REPO, service_environment
from tests.infra.test_compose import AIRFLOW

POOLS = REPO / "include" / airflow_objects.POOLS_FILE
CONNECTIONS = REPO / "include" / airflow_objects.CONNECTIONS_FILE
AIRFLOW_CLI = [sys.executable, "-m", "airflow"]


def compose_airflow_objects(compose: dict, service: str) -> dict[str, str]:
    env = service_environment(compose["services"][service])
    return {k: v for k, v in env.items() if k.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_"))}


def airflow(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR"}
    return subprocess.run([*AIRFLOW_CLI, *args], capture_output=True, text=True, env=env)


def test_every_airflow_component_sees_the_same_variables(compose):
    objects = {json.dumps(compose_airflow_objects(compose, name), sort_keys=True) for name in AIRFLOW}
    assert len(objects) == 1


def test_no_connection_comes_from_the_environment(compose):
    """An AIRFLOW_CONN_* variable would win over the database connection of the same id, and could not be
    edited in the UI: `airflow connections add vigil_x` would be silently ignored."""
    for name in AIRFLOW:
        assert not [k for k in compose_airflow_objects(compose, name) if k.startswith("AIRFLOW_CONN_")], name
    assert not [k for k in airflow_objects.airflow_env(Settings()) if k.startswith("AIRFLOW_CONN_")]


def test_the_connections_file_holds_the_connections_the_code_reads_and_no_secret():
    defined = json.loads(CONNECTIONS.read_text())
    read = {kind.credential.conn_id: kind.credential for kind in KINDS.values() if kind.credential}
    assert set(defined) == set(read)
    for conn_id, connection in defined.items():
        assert not {"password", "login", "extra"} & set(connection), conn_id
        assert read[conn_id].env in connection["description"], "the description names the fallback"


def test_embedded_mode_defines_the_same_variables_as_compose(compose, tmp_path):
    embedded = airflow_objects.airflow_env(
        Settings(home=tmp_path, mlflow_tracking_uri="http://127.0.0.1:5123")
    )
    assert set(embedded) == set(compose_airflow_objects(compose, "airflow-worker"))
    assert embedded["AIRFLOW_VAR_VIGIL_MLFLOW_UI_URL"] == "http://127.0.0.1:5123"


def test_every_variable_is_read_by_the_ui_plugin():
    spec = importlib.util.spec_from_file_location("vigil_ui", REPO / "plugins" / "vigil_ui.py")
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    assert set(airflow_objects.variables(Settings())) == {plugin.MLFLOW_UI_VARIABLE}


def test_compose_variables_are_urls_a_browser_can_open(compose, generated_env):
    objects = compose_airflow_objects(compose, "airflow-worker")
    published = [p.split(":")[1] for p in compose["services"]["mlflow"]["ports"]]
    assert (
        objects["AIRFLOW_VAR_VIGIL_MLFLOW_UI_URL"]
        == f"http://{generated_env['VIGIL_PUBLIC_HOST']}:{published[0]}"
    )


def test_airflow_reads_the_compose_variable(compose, monkeypatch):
    for key, value in compose_airflow_objects(compose, "airflow-worker").items():
        monkeypatch.setenv(key, value)
    from airflow.models.variable import Variable

    assert Variable.get("vigil_mlflow_ui_url").startswith("http://")


def test_compose_imports_the_files_the_embedded_stack_imports(compose):
    script = compose["services"]["airflow-init"]["command"][-1]
    assert 'airflow pools import "${VIGIL_INCLUDE_DIR}/' + airflow_objects.POOLS_FILE + '"' in script
    assert (
        'airflow connections import "${VIGIL_INCLUDE_DIR}/' + airflow_objects.CONNECTIONS_FILE + '"' in script
    )


def test_pools_file_imports_into_airflow(airflow_db):
    """The same command the airflow-init service runs, against a real Airflow metadata database."""
    result = airflow("pools", "import", str(POOLS))
    assert result.returncode == 0, result.stderr[-2000:]
    listed = airflow("pools", "list", "-o", "json")
    pools = {p["pool"]: int(p["slots"]) for p in json.loads(listed.stdout)}
    expected = {name: spec["slots"] for name, spec in json.loads(POOLS.read_text()).items()}
    assert expected.items() <= pools.items()
    assert expected["gpu"] == 1 and {"collect_x", "collect_mastodon", "collect_folder"} <= set(expected)


def test_a_malformed_pools_file_fails_the_import(airflow_db, tmp_path: Path):
    # What airflow-init does with a bad pools.json: it fails, so the stack does not start half-configured.
    bad = tmp_path / "pools.json"
    bad.write_text(json.dumps({"gpu": {"slots": 1}}))  # no description
    result = airflow("pools", "import", str(bad))
    assert result.returncode != 0 and "gpu" in result.stdout + result.stderr


def test_importing_the_connections_again_keeps_what_a_person_edited(airflow_db):
    """What every start does (airflow-init, the embedded stack): an edited connection stays as edited."""
    try:
        first = airflow("connections", "import", str(CONNECTIONS))
        assert first.returncode == 0 and "Imported connection vigil_x" in first.stdout, first.stderr[-2000:]
        # A person sets the token: the CLI way (delete + add; the UI edits in place).
        assert airflow("connections", "delete", "vigil_x").returncode == 0
        added = airflow("connections", "add", "vigil_x", "--conn-type", "generic", "--conn-password", "t0ken")
        assert added.returncode == 0, added.stderr[-2000:]

        again = airflow("connections", "import", str(CONNECTIONS))

        assert again.returncode == 0 and "vigil_x: connection already exists" in again.stdout
        (kept,) = json.loads(airflow("connections", "get", "vigil_x", "-o", "json").stdout)
        assert kept["password"] == "t0ken"
    finally:
        for conn_id in json.loads(CONNECTIONS.read_text()):
            airflow("connections", "delete", conn_id)
