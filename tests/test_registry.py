"""Alias moves against a real MLflow server: promote, reject, roll back."""

import uuid

import pytest
from mlflow.tracking import MlflowClient

from tasks.registry import CHAMPION, PREVIOUS, Registry
from tasks.settings import Settings


@pytest.fixture
def registry(mlflow_server, tmp_path):
    settings = Settings(mlflow_tracking_uri=mlflow_server, model_name=f"detector-{uuid.uuid4().hex[:8]}")
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    client.create_registered_model(settings.model_name)
    experiment = client.create_experiment(f"registry-{uuid.uuid4().hex[:8]}")
    for _ in range(3):
        run = client.create_run(experiment)
        client.log_text(run.info.run_id, "weights", "model/weights.txt")
        client.create_model_version(
            settings.model_name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
        )
    return Registry(settings)


def test_first_promotion_has_no_previous(registry):
    move = registry.promote(1, reason="first model")
    assert (move.champion, move.previous) == ("1", None)
    assert registry.aliases() == {CHAMPION: "1"}
    assert registry.get(1).tags["promotion_reason"] == "first model"


def test_promotion_keeps_previous_and_rollback_restores_it(registry):
    registry.promote(1, reason="first")
    move = registry.promote(2, reason="better on new data")
    assert (move.champion, move.previous) == ("2", "1")
    assert registry.aliases() == {CHAMPION: "2", PREVIOUS: "1"}

    back = registry.rollback("smoke test failed: /readyz 503")
    assert back.champion == "1"
    assert registry.aliases() == {CHAMPION: "1"}
    assert registry.get(2).tags["rolled_back"] == "true"
    assert "readyz" in registry.get(2).tags["rollback_reason"]
    with pytest.raises(LookupError, match="no version has the alias 'previous'"):
        registry.rollback("again")


def test_reject_tags_reasons_and_leaves_aliases(registry):
    registry.promote(1, reason="first")
    registry.reject(3, ["generator=A: ROC AUC 0.61 < champion 0.99 - 0.02"])
    assert registry.aliases() == {CHAMPION: "1"}
    tags = registry.get(3).tags
    assert tags["rejected"] == "true" and "generator=A" in tags["rejection_reasons"]


def test_missing_model_has_no_aliases(mlflow_server):
    registry = Registry(Settings(mlflow_tracking_uri=mlflow_server, model_name="never-registered"))
    assert registry.aliases() == {} and registry.version(CHAMPION) is None
