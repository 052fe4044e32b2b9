"""Connections that do what docs/collection.md says: the ones the code reads are rows in the embedded
Airflow's database (imported at start, without secrets), a person edits them in the UI or CLI, the edit
survives ``vigil stack down``/``up``, and the collector uses it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.stack.conftest import X_TOKEN

AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def airflow_cli(embedded, *args: str) -> str:
    """``airflow ...`` as a person runs it against the embedded stack: only AIRFLOW_HOME set."""
    env = {**os.environ, "AIRFLOW_HOME": str(embedded.airflow_home)}
    result = subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout


def get_connection(embedded, conn_id: str) -> dict:
    (connection,) = json.loads(airflow_cli(embedded, "connections", "get", conn_id, "-o", "json"))
    return connection


def test_the_connections_the_collectors_read_are_in_the_database_without_secrets(embedded):
    listed = json.loads(airflow_cli(embedded, "connections", "list", "-o", "json"))
    by_id = {c["conn_id"]: c for c in listed}
    assert {"vigil_x", "vigil_mastodon"} <= set(by_id)
    assert {"vigil_s3", "vigil_mlflow"}.isdisjoint(by_id)  # nothing reads them any more
    x = get_connection(embedded, "vigil_x")
    assert not x["password"] and "X_BEARER_TOKEN" in x["description"]


def test_a_token_edited_in_the_ui_survives_a_restart_and_reaches_the_x_api(embedded):
    client = embedded.client()
    # What the UI's connection form sends when a person fills in the password field and saves.
    client.request(
        "PATCH",
        "/connections/vigil_x",
        params={"update_mask": ["password"]},
        json={"connection_id": "vigil_x", "conn_type": "generic", "password": X_TOKEN},
    )

    embedded.restart()  # imports connections.json again: an existing connection is kept as edited

    assert get_connection(embedded, "vigil_x")["password"] == X_TOKEN
    embedded.fake_x.add_tweet(["photo"], alt="collected with the token from the UI")
    client = embedded.client()
    client.wait_for_dags(["collect_x_ai_art"])
    client.unpause("collect_x_ai_art")
    run_id = client.trigger("collect_x_ai_art", note="tests/stack: token from the connection")
    client.wait_for_run("collect_x_ai_art", run_id, timeout=900)

    # Unpausing also started the scheduled run, which may be the one that found the post (max one at a time).
    runs = client.runs("collect_x_ai_art")
    assert {r["state"] for r in runs} == {"success"}
    logs = ["\n".join(client.task_log("collect_x_ai_art", r["dag_run_id"], "collect", 1)) for r in runs]
    assert sum("stored 1 new images" in log for log in logs) == 1
    assert not [log for log in logs if X_TOKEN in log]
    searches = embedded.fake_x.server.hits("/2/tweets/search/recent")
    assert searches and {s.headers["authorization"] for s in searches} == {f"Bearer {X_TOKEN}"}
