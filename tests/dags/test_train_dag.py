"""train_detector: parsed by Airflow, run end to end with dag.test() (local launcher), and its docker
launcher's DockerOperator inspected (no Docker engine here)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.helpers.dags import without_deadline

REPO = Path(__file__).resolve().parents[2]
DAG_FILE = REPO / "dags" / "train.py"


@pytest.fixture(scope="module")
def demo_a(demo_root) -> Path:
    return demo_root / "demo_a"


@pytest.fixture(autouse=True)
def dags_on_path(monkeypatch):
    """Airflow puts the DAGs folder on sys.path for its own processes; the tests do it here."""
    monkeypatch.syspath_prepend(str(REPO / "dags"))


def parse_dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert not bag.import_errors, bag.import_errors
    return without_deadline(bag.get_dag("train_detector"))


def test_the_dag_is_wiring_with_a_documented_form(airflow_db, monkeypatch):
    monkeypatch.setenv("VIGIL_TRAINING__LAUNCHER", "local")
    dag = parse_dag(airflow_db)
    assert "vigil://curated-dataset" in str(dag.timetable.asset_condition)
    assert {"profile", "snapshot", "epochs", "learning_rate", "lora_r", "reason"} <= set(dag.params.keys())
    for name in dag.params:
        param = dag.params.get_param(name)
        assert param.schema.get("title") and param.description, name
    assert dag.doc_md and "min_new_images" in dag.doc_md
    assert [t.task_id for t in dag.topological_sort()] == [
        "enough_new_images",
        "train",
        "announce_challenger",
    ]
    source = DAG_FILE.read_text()
    for heavy in ("import torch", "import transformers", "import mlflow", "import pandas", "from PIL"):
        assert heavy not in source.split("def train_detector")[0], heavy


def test_docker_launcher_requests_gpus_shm_network_pool_and_env(airflow_db, monkeypatch):
    from airflow.providers.docker.operators.docker import DockerOperator

    monkeypatch.setenv("VIGIL_TRAINING__LAUNCHER", "docker")
    monkeypatch.setenv("VIGIL_STORE_URL", "s3://vigil/store")
    monkeypatch.setenv("VIGIL_S3_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "minio-user")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "minio-secret")
    task = parse_dag(airflow_db).get_task("train")
    assert isinstance(task, DockerOperator)
    assert task.image == "vigil-trainer:latest" and task.pool == "gpu"
    [request] = task.device_requests
    assert request["Count"] == -1 and request["Capabilities"] == [["gpu"]]
    assert task.shm_size == 8 * 1024**3 and task.network_mode == "vigil"
    assert task.environment["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert task.environment["VIGIL_STORE_URL"] == "s3://vigil/store"
    assert task.environment["VIGIL_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert task._private_environment == {
        "AWS_ACCESS_KEY_ID": "minio-user",
        "AWS_SECRET_ACCESS_KEY": "minio-secret",
    }
    assert "minio-secret" not in str(task.environment)
    assert {(m["Target"], m["Source"]) for m in task.mounts} == {
        ("/vigil", "vigil-trainer-work"),
        ("/vigil/hf-cache", "vigil-hf-cache"),
    }
    assert task.command[:3] == ["python", "-m", "tasks.train"] and task.do_xcom_push
    # Empty form fields render to empty arguments, which the entry point ignores.
    from tasks.train.launch import add_arguments

    rendered = [
        arg.replace("{{ params.epochs or '' }}", "4").replace("{{ params.reason or '' }}", "a reason")
        for arg in task.command[3:]
    ]
    rendered = ["" if "{{" in arg else arg for arg in rendered]
    import argparse

    args = add_arguments(argparse.ArgumentParser()).parse_args(rendered)
    assert (args.epochs, args.reason, args.profile, args.snapshot, args.learning_rate) == (
        4,
        "a reason",
        None,
        None,
        None,
    )


def test_dag_test_trains_registers_and_announces_the_challenger(
    airflow_db, mlflow_server, demo_a, publish_demo, tmp_path, monkeypatch
):
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from mlflow import MlflowClient

    from tasks.storage import ObjectStore

    name = f"detector-{uuid.uuid4().hex[:8]}"
    env = {
        "VIGIL_TRAINING__LAUNCHER": "local",
        "VIGIL_HOME": str(tmp_path / "home"),
        "VIGIL_STORE_URL": (tmp_path / "store").as_uri(),
        "MLFLOW_TRACKING_URI": mlflow_server,
        "VIGIL_MODEL_NAME": name,
        "VIGIL_TRAINING__EXPERIMENT": "vigil-training-tests",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    publish_demo(ObjectStore(env["VIGIL_STORE_URL"]), demo_a)

    run = parse_dag(airflow_db).test(run_conf={"epochs": 2, "reason": "dag.test run"})
    assert run.state == "success"
    version = MlflowClient(mlflow_server).get_model_version_by_alias(name, "challenger")
    assert version.version == "1" and version.tags["reason"] == "dag.test run"
    with create_session() as session:
        events = (
            session.query(AssetEvent)
            .filter(AssetEvent.source_dag_id == "train_detector", AssetEvent.source_run_id == run.run_id)
            .all()
        )
    assert len(events) == 1
    extra = events[0].extra
    assert extra["model_name"] == name and extra["version"] == "1" and extra["snapshot"] == "v0001"
    assert extra["model_uri"] == f"models:/{name}/1"
