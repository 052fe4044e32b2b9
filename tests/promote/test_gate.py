"""The promotion gate against a real MLflow server and a real store: first model, floors, forgetting, pass.

The tiny detector trained on generator A is the competent model; the same architecture with random
weights is the one that fails floors and "forgets" A.
"""

from __future__ import annotations

import json
import uuid

import pytest

from tasks.promote.gate import apply, evaluate, report_prefix
from tasks.promote.policy import GatePolicy
from tasks.registry import CHAMPION, PREVIOUS, Registry
from tasks.settings import Settings
from tasks.storage import ObjectStore

# The small demo sets have 8 test images per class and generator: slices of 16 images count.
LENIENT = {"slices": {"min_samples": 10, "max_regression": 0.02}, "robustness": {"max_drop": 1.0}}


@pytest.fixture
def gate_settings(mlflow_server, tmp_path, demo_root, publish_demo) -> Settings:
    settings = Settings(
        mlflow_tracking_uri=mlflow_server,
        model_name=f"detector-{uuid.uuid4().hex[:8]}",
        home=tmp_path / "home",
        store_url=(tmp_path / "store").as_uri(),
    )
    publish_demo(ObjectStore.from_settings(settings), demo_root / "demo_a")
    return settings


def policy(**overrides) -> GatePolicy:
    return GatePolicy.model_validate({**LENIENT, **overrides})


def test_the_first_model_meets_floors_only_and_becomes_champion(gate_settings, trained_dir, register):
    version = register(trained_dir, gate_settings, "v0001")
    report = evaluate(
        gate_settings, version, policy(floors={"roc_auc": 0.75, "balanced_accuracy": 0.6, "max_ece": 0.5})
    )
    assert report["decision"] == "promoted", report["reasons"]
    assert report["champion"] is None
    assert {c["name"].split(":")[0] for c in report["checks"]} == {"floor"}

    result = apply(gate_settings, report)
    assert result == {
        "version": version,
        "promoted": True,
        "previous": None,
        "report_url": report["report_url"],
    }
    assert Registry(gate_settings).aliases() == {CHAMPION: version, "challenger": version}


def test_a_model_below_a_floor_is_rejected_with_the_reason(gate_settings, untrained_dir, register):
    version = register(untrained_dir, gate_settings, "v0001")
    report = evaluate(gate_settings, version, policy(floors={"roc_auc": 0.9}))
    assert report["decision"] == "rejected"
    assert any("overall roc_auc" in reason and ">= 0.9" in reason for reason in report["reasons"])

    apply(gate_settings, report)
    registry = Registry(gate_settings)
    assert CHAMPION not in registry.aliases()
    tags = registry.get(version).tags
    assert tags["rejected"] == "true" and "roc_auc" in tags["rejection_reasons"]
    assert tags["gate_decision"] == "rejected"


def test_forgetting_an_old_generator_fails_even_when_floors_pass(
    gate_settings, trained_dir, untrained_dir, register
):
    champion = register(trained_dir, gate_settings, "v0001")
    Registry(gate_settings).promote(champion, "round 1")
    challenger = register(untrained_dir, gate_settings, "v0001")

    no_floors = {"roc_auc": 0.0, "balanced_accuracy": 0.0, "max_ece": 1.0}
    report = evaluate(gate_settings, challenger, policy(floors=no_floors, new_data={"min_improvement": -1.0}))
    assert report["decision"] == "rejected"
    failed = [c["name"] for c in report["checks"] if not c["passed"]]
    assert "no_forgetting:generator=A" in failed
    assert all(not name.startswith("floor") for name in failed)
    apply(gate_settings, report)
    assert Registry(gate_settings).aliases()[CHAMPION] == champion


def test_a_better_challenger_is_promoted_and_rollback_restores_the_old_champion(
    gate_settings, trained_dir, untrained_dir, register
):
    registry = Registry(gate_settings)
    old = register(untrained_dir, gate_settings, "v0001")
    registry.promote(old, "a weak first model")
    new = register(trained_dir, gate_settings, "v0001")

    report = evaluate(
        gate_settings, new, policy(floors={"roc_auc": 0.75, "balanced_accuracy": 0.6, "max_ece": 0.5})
    )
    assert report["decision"] == "promoted", report["reasons"]
    rows = {row["slice"]: row for row in report["slices"]}
    a = rows["generator=A"]
    assert a["n"] == 16 and a["champion"]["roc_auc"] < a["challenger"]["roc_auc"]

    # The report is stored (JSON, Markdown, HTML side by side) and logged to the challenger's run.
    store = ObjectStore.from_settings(gate_settings)
    prefix = report_prefix(gate_settings.model_name, new)
    stored = json.loads(store.read_bytes(f"{prefix}/report.json"))
    assert stored["decision"] == "promoted" and stored["champion"]["version"] == old
    html = store.read_bytes(f"{prefix}/report.html").decode()
    assert "generator=A" in html and "champion" in html
    run_id = registry.get(new).run_id
    assert {a.path for a in registry.client.list_artifacts(run_id, "gate")} >= {
        "gate/gate_report.json",
        "gate/gate_report.html",
    }

    apply(gate_settings, report)
    assert registry.aliases() == {CHAMPION: new, PREVIOUS: old, "challenger": new}
    registry.rollback("post-deploy check failed")
    assert registry.aliases()[CHAMPION] == old


def test_a_bad_policy_file_names_the_field(gate_settings, tmp_path):
    from tasks.promote.policy import load_policy
    from tasks.settings import ConfigError

    (tmp_path / "include").mkdir()
    (tmp_path / "include" / "gate.yaml").write_text("floors:\n  roc_auc: 1.5\n")
    with pytest.raises(ConfigError, match=r"floors\.roc_auc"):
        load_policy(Settings(include_dir=tmp_path / "include", home=tmp_path / "home"))
