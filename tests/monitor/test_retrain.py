"""When a measured accuracy drop warrants training: on the current champion, once its labels are curated."""

from __future__ import annotations

import logging
import uuid

import pytest

from tasks.monitor.config import MonitorConfig
from tasks.monitor.retrain import accuracy_drop_warrants_training
from tasks.monitor.run import ACCURACY_KEY


@pytest.fixture
def champion(tmp_path, mlflow_server, demo_root, publish_demo):
    """v0001 published; a version trained on it is the champion."""
    import mlflow

    from tasks.registry import Registry, use_mlflow
    from tasks.settings import Settings
    from tasks.storage import ObjectStore

    settings = Settings(
        home=tmp_path / "home",
        store_url=(tmp_path / "store").as_uri(),
        mlflow_tracking_uri=mlflow_server,
        model_name=f"rt-{uuid.uuid4().hex[:8]}",
    )
    store = ObjectStore.from_settings(settings)
    publish_demo(store, demo_root / "demo_a")
    use_mlflow(settings)
    mlflow.set_experiment("vigil-tests")
    with mlflow.start_run() as run:
        mlflow.log_text("stand-in", "model/README.txt")
    client = Registry(settings).client
    client.create_registered_model(settings.model_name)
    version = client.create_model_version(
        settings.model_name, f"runs:/{run.info.run_id}/model", run.info.run_id, tags={"snapshot": "v0001"}
    ).version
    client.set_registered_model_alias(settings.model_name, "champion", str(version))
    return settings, store, str(version)


def check(store, settings, version: str, dropped: bool = True) -> None:
    store.write_json(
        ACCURACY_KEY,
        {
            "model_name": settings.model_name,
            "version": version,
            "dropped": dropped,
            "reason": "audit 0.50 < 0.80",
        },
    )


def test_a_drop_on_the_champion_trains_once_its_labels_are_in_a_snapshot(
    champion, demo_root, publish_demo, caplog
):
    settings, store, version = champion
    caplog.set_level(logging.INFO, logger="tasks.monitor.retrain")
    assert not accuracy_drop_warrants_training(settings)  # no check yet
    check(store, settings, version, dropped=False)
    assert not accuracy_drop_warrants_training(settings)
    check(store, settings, version)
    caplog.clear()
    assert not accuracy_drop_warrants_training(settings)  # the labels are not curated yet
    assert "waiting for the labels to be curated" in caplog.text

    publish_demo(store, demo_root / "demo_b")  # new labeled images (the reviewed ones, say)
    assert accuracy_drop_warrants_training(settings)
    off = MonitorConfig(retrain={"accuracy_drop": {"enabled": False}})
    assert not accuracy_drop_warrants_training(settings, config=off)
    check(store, settings, "99")  # measured on a version that no longer serves
    assert not accuracy_drop_warrants_training(settings)
