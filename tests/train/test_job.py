"""`python -m tasks.train` against a real MLflow server: registration, resumption after a kill, continual
training with replay, and the "enough new images" rule of the DAG."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml

from tasks.model.config import load_config
from tasks.model.detector import Detector

IMAGE_COMMIT = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


def trainer_env(tmp: Path, mlflow_server: str, model_name: str) -> dict[str, str]:
    return {
        **os.environ,
        "VIGIL_HOME": str(tmp / "home"),
        "VIGIL_STORE_URL": (tmp / "store").as_uri(),
        "MLFLOW_TRACKING_URI": mlflow_server,
        "VIGIL_MODEL_NAME": model_name,
        "VIGIL_VLM_MODEL_NAME": model_name,  # these tests train the VLM family's tiny profile
        "VIGIL_TRAINING__EXPERIMENT": "vigil-training-tests",
        # A stray registry URI (mlflow.set_registry_uri exports one to child processes) must not
        # send the registration elsewhere: Vigil has one MLflow server for runs and registry.
        "MLFLOW_REGISTRY_URI": "http://127.0.0.1:9",
        # What the trainer image carries from its build argument (it has no .git to ask).
        "VIGIL_TRAINING__GIT_COMMIT": IMAGE_COMMIT,
    }


def run_trainer(env: dict[str, str], *args: str, epochs: int = 3) -> tuple[dict, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "tasks.train", "--profile", "tiny", "--epochs", str(epochs), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


@pytest.fixture(scope="module")
def round1(tmp_path_factory, mlflow_server, demo_root, publish_demo):
    """Generator A's snapshot v0001 trained by the entry point, as the `train_detector` DAG would."""
    from tasks.storage import ObjectStore

    tmp = tmp_path_factory.mktemp("round1")
    env = trainer_env(tmp, mlflow_server, f"detector-{uuid.uuid4().hex[:8]}")
    publish_demo(ObjectStore(env["VIGIL_STORE_URL"]), demo_root / "demo_a")
    # As the train_detector task runs it: Airflow exports the run to the task and its children.
    airflow = {
        "AIRFLOW_CTX_DAG_ID": "train_detector",
        "AIRFLOW_CTX_DAG_RUN_ID": "manual__2026-12-01T10:00:00+00:00",
        "AIRFLOW__API__BASE_URL": "http://airflow.example:8080/",
    }
    result, log = run_trainer({**env, **airflow}, "--reason", "first model on generator A")
    return env, result, log


AIRFLOW_RUN_URL = (
    "http://airflow.example:8080/dags/train_detector/runs/manual__2026-12-01T10%3A00%3A00%2B00%3A00"
)


def test_entry_point_registers_a_challenger_with_its_tags_metrics_and_artifacts(round1):
    from mlflow import MlflowClient

    env, result, log = round1
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    name = env["VIGIL_MODEL_NAME"]
    version = client.get_model_version_by_alias(name, "challenger")
    assert version.version == result["version"] == "1" and version.run_id == result["run_id"]
    tags = version.tags
    assert tags["snapshot"] == "v0001" and tags["profile"] == "tiny" and tags["method"] == "full"
    assert tags["base_model"] == "tiny (built offline)" and float(tags["threshold"]) == pytest.approx(
        result["threshold"]
    )
    assert tags["reason"] == "first model on generator A"

    run = client.get_run(result["run_id"])
    assert run.data.params["reason"] == "first model on generator A"
    assert run.data.params["train.epochs"] == "3" and run.data.params["snapshot"] == "v0001"
    assert (
        run.data.tags["mlflow.source.git.commit"] == IMAGE_COMMIT
        and run.data.tags["vigil.snapshot"] == "v0001"
    )
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) >= 3  # per step
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_roc_auc")] == [
        1,
        2,
        3,
    ]  # per epoch
    for metric in (
        "test_roc_auc",
        "test_balanced_accuracy",
        "test_ece",
        "test_jpeg_q75_delta_roc_auc",
        "threshold",
    ):
        assert metric in run.data.metrics, metric
    dataset = run.inputs.dataset_inputs[0].dataset
    assert dataset.name == "snapshot-v0001"
    assert json.loads(dataset.source)["uri"] == env["VIGIL_STORE_URL"] + "/snapshots/v0001/manifest.parquet"
    assert len(dataset.digest) == 20

    artifacts = {f.path for f in client.list_artifacts(run.info.run_id, "evaluation/test")}
    assert {
        f"evaluation/test/{n}"
        for n in ("report.json", "report.md", "roc.png", "reliability.png", "confusion.png")
    } <= artifacts
    assert {f.path for f in client.list_artifacts(run.info.run_id, "config")} == {"config/model_config.yaml"}
    # The registered model is the detector: load it by alias and it scores like the job's own folder.
    detector = Detector.load(f"models:/{name}@challenger", settings=_settings(env))
    assert (detector.name, detector.version) == (name, "1")
    images = _test_images(env)
    np.testing.assert_array_equal(detector.score(images), Detector.load(result["detector_dir"]).score(images))
    assert "epoch 3/3" in log and "progress: epoch 1/3 | step 1/" in log


def test_the_mlflow_run_links_back_to_airflow_and_the_logged_model_has_a_signature_and_metrics(round1):
    """MLflow conventions: the experiment's kind (its UI opens on runs and models, not GenAI traces),
    the Airflow run on the MLflow run and the version, a signature and an input example on the logged
    model, the evaluation metrics linked to it."""
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    env, result, _ = round1
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    run = client.get_run(result["run_id"])
    assert run.data.tags["vigil.airflow_run_url"] == AIRFLOW_RUN_URL
    assert run.data.tags["vigil.airflow_dag_id"] == "train_detector"
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert client.get_model_version(env["VIGIL_MODEL_NAME"], result["version"]).tags["airflow_run_url"] == (
        AIRFLOW_RUN_URL
    )

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    model_uri = f"models:/{result['model_id']}"
    info = mlflow.models.get_model_info(model_uri)
    assert info.signature.inputs.to_dict() == [{"type": "binary", "name": "image", "required": True}]
    assert [c["name"] for c in info.signature.outputs.to_dict()] == ["p_fake", "is_fake"]
    logged = mlflow.get_logged_model(result["model_id"])
    metrics = {m.key: m.value for m in logged.metrics}
    assert metrics["test_roc_auc"] == pytest.approx(run.data.metrics["test_roc_auc"])
    assert {"threshold", "best_val_roc_auc"} <= set(metrics)
    assert info.saved_input_example_info["type"] == "dataframe"
    # The registered pyfunc answers encoded images, as its signature says.
    images = pd.DataFrame({"image": [Path(f).read_bytes() for f in _test_files(env)[:3]]})
    scores = mlflow.pyfunc.load_model(model_uri).predict(images)
    assert list(scores.columns) == ["p_fake", "is_fake"] and len(scores) == 3


def _settings(env: dict[str, str]):
    from tasks.settings import Settings

    return Settings(
        home=env["VIGIL_HOME"],
        store_url=env["VIGIL_STORE_URL"],
        mlflow_tracking_uri=env["MLFLOW_TRACKING_URI"],
        model_name=env["VIGIL_MODEL_NAME"],
    )


def _test_files(env: dict[str, str]) -> list[str]:
    from tasks.data.frames import snapshot_frame
    from tasks.storage import ObjectStore

    store = ObjectStore(env["VIGIL_STORE_URL"])
    return (
        snapshot_frame(store, "latest", ("test",), Path(env["VIGIL_HOME"]) / "cache").table["file"].tolist()
    )


def _test_images(env: dict[str, str]):
    from tasks.data.frames import snapshot_frame
    from tasks.storage import ObjectStore

    store = ObjectStore(env["VIGIL_STORE_URL"])
    return snapshot_frame(store, "latest", ("test",), Path(env["VIGIL_HOME"]) / "cache").images()


def test_a_killed_job_resumes_from_its_last_checkpoint_and_matches_an_uninterrupted_run(
    round1, tmp_path, mlflow_server, demo_root, publish_demo
):
    from mlflow import MlflowClient

    from tasks.storage import ObjectStore

    _first_env, first, _ = round1
    env = trainer_env(tmp_path, mlflow_server, f"detector-{uuid.uuid4().hex[:8]}")
    publish_demo(ObjectStore(env["VIGIL_STORE_URL"]), demo_root / "demo_a")
    # Kill the job (SIGKILL, as a preempted container) right after its first checkpoint.
    proc = subprocess.Popen(
        [sys.executable, "-m", "tasks.train", "--profile", "tiny", "--epochs", "3"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "checkpoint saved: epoch 1," in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)[-3000:]
    work = Path(env["VIGIL_HOME"]) / "train" / first["job_id"]  # same setup, snapshot and start: same job
    killed_run = json.loads((work / "mlflow_run.json").read_text())["run_id"]
    saved = sorted(p.name for p in (work / "checkpoints").iterdir())
    assert saved and saved[-1] in ("checkpoint-2", "checkpoint-4")  # killed before the last epoch ended
    assert not (work / "result.json").exists()
    done = int(saved[-1].split("-")[1]) // 2  # 2 optimizer steps per epoch

    result, log = run_trainer(env)
    assert f"resuming from {saved[-1]}: {done} of 3 epochs done" in log
    epochs = [
        line.split("vigil.train: ")[1].split(":")[0]
        for line in log.splitlines()
        if "INFO vigil.train: epoch " in line
    ]
    assert epochs == [f"epoch {e}/3" for e in range(done + 1, 4)], epochs  # it did not redo epoch 1
    assert result["run_id"] == killed_run  # the same MLflow run continued
    history = MlflowClient(mlflow_server).get_metric_history(killed_run, "val_roc_auc")
    assert {m.step for m in history} == {1, 2, 3}
    # Deterministic for a seed: the resumed job ends exactly where the uninterrupted one did.
    assert result["job_id"] == first["job_id"]
    assert (result["threshold"], result["val_roc_auc"], result["test_roc_auc"]) == (
        first["threshold"],
        first["val_roc_auc"],
        first["test_roc_auc"],
    )
    images = _test_images(env)
    np.testing.assert_array_equal(
        Detector.load(result["detector_dir"]).score(images),
        Detector.load(first["detector_dir"]).score(images),
    )
    # A finished job only returns its result when launched again.
    again, log = run_trainer(env)
    assert again == result and "already finished" in log


def test_continual_training_from_the_champion_replays_old_images(round1, demo_root, publish_demo):
    from mlflow import MlflowClient

    from tasks.storage import ObjectStore
    from tasks.train.launch import new_images_since_last_training, should_train

    env, first, _ = round1
    settings = _settings(env)
    assert new_images_since_last_training(settings)[0] == 0
    assert not should_train("asset_triggered", settings) and should_train("manual", settings)

    publish_demo(ObjectStore(env["VIGIL_STORE_URL"]), demo_root / "demo_b")
    new, why = new_images_since_last_training(settings)
    assert new == 80 and "v0002" in why and "v0001" in why
    assert should_train("asset_triggered", settings)
    assert not should_train(
        "asset_triggered",
        settings.model_copy(update={"training": settings.training.model_copy(update={"min_new_images": 81})}),
    )

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    client.set_registered_model_alias(env["VIGIL_MODEL_NAME"], "champion", first["version"])
    # The reviewed tiny setup with every continual term on, and one re-encoded view per image.
    config = load_config(None, _settings(env), profile="tiny").with_overrides(
        {"continual.distillation_weight": 1.0, "continual.ewc_lambda": 5.0, "augment.views": 1}
    )
    config_file = Path(env["VIGIL_HOME"]) / "continual.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    result, log = run_trainer(env, "--config", str(config_file), epochs=2)
    assert result["start"] == "champion-v1" and result["snapshot"] == "v0002" and result["version"] == "2"
    params = client.get_run(result["run_id"]).data.params
    # All 48 new images plus a balanced replay buffer as large as the new data (continual.replay_budget: new).
    assert (params["train_new"], params["train_seen"], params["train_replayed"], params["train_total"]) == (
        "48",
        "48",
        "48",
        "96",
    )
    assert params["continual_strategy"] == "replay+kd+ewc"
    assert "distillation: the champion's logits on 96 training images" in log
    assert "EWC: diagonal Fisher of" in log and "on 48 seen images" in log
    # Two epochs over the 96 images and their 96 views, 32 per step: 6 steps each (3 without the views).
    assert "step 1/12 " in log
    assert client.get_model_version_by_alias(env["VIGIL_MODEL_NAME"], "challenger").version == "2"
    assert client.get_model_version_by_alias(env["VIGIL_MODEL_NAME"], "champion").version == "1"

    # A label corrected by feedback counts as new data for the next training trigger.
    from tasks.data.snapshots import publish_snapshot, read_snapshot

    store = ObjectStore(env["VIGIL_STORE_URL"])
    latest = read_snapshot(store)
    table = latest.table.copy()
    table.loc[0, "label"] = {"real": "fake", "fake": "real"}[table.loc[0, "label"]]
    publish_snapshot(store, table, latest.version, batches=list(latest.batches))
    new, why = new_images_since_last_training(settings)
    assert new == 1 and "with that label" in why


def test_without_a_recorded_commit_runs_are_tagged_with_the_checkout_head():
    from tasks.settings import Settings
    from tasks.train.tracking import git_commit

    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert git_commit(Settings(training={"git_commit": ""})) == head
    assert git_commit(Settings(training={"git_commit": IMAGE_COMMIT})) == IMAGE_COMMIT
