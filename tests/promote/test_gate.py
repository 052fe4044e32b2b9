"""The promotion gate against a real MLflow server and a real store: first model, floors, forgetting, pass.

The tiny detector trained on generator A is the competent model; the same architecture with random
weights is the one that fails floors and "forgets" A.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

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


def test_a_retrain_on_the_champions_own_snapshot_is_not_judged_on_new_data_it_does_not_have(
    gate_settings, trained_dir, register
):
    """No test image is new since the champion's snapshot: "better on new data" has nothing to judge.
    It used to fall back to the whole test split and reject a model as good as (or better than) the
    champion for not beating it by min_improvement."""
    registry = Registry(gate_settings)
    champion = register(trained_dir, gate_settings, "v0001")
    registry.promote(champion, "round 1")
    retrained = register(trained_dir, gate_settings, "v0001")

    floors = {"roc_auc": 0.75, "balanced_accuracy": 0.6, "max_ece": 0.5}
    report = evaluate(gate_settings, retrained, policy(floors=floors, new_data={"min_improvement": 0.05}))
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses["better_on_new_data"] == "not applicable"
    assert report["decision"] == "promoted", report["reasons"]
    assert "new data" not in " ".join(report["reasons"])
    store = ObjectStore.from_settings(gate_settings)
    prefix = report_prefix(gate_settings.model_name, retrained)
    assert (
        "➖ not applicable: new data: no test image is new"
        in store.read_bytes(f"{prefix}/report.md").decode()
    )


def test_the_gate_metrics_are_logged_against_both_logged_models_on_the_same_test_snapshot(
    gate_settings, trained_dir, untrained_dir, register
):
    import mlflow

    registry = Registry(gate_settings)
    old = register(untrained_dir, gate_settings, "v0001")
    registry.promote(old, "a weak first model")
    new = register(trained_dir, gate_settings, "v0001")
    report = evaluate(
        gate_settings, new, policy(floors={"roc_auc": 0.0, "balanced_accuracy": 0.0, "max_ece": 1.0})
    )

    mlflow.set_tracking_uri(gate_settings.mlflow_tracking_uri)
    rows = {row["slice"]: row for row in report["slices"]}
    for role, version in (("challenger", new), ("champion", old)):
        model_id = report[role]["model_id"]
        assert model_id and registry.get(version).source == f"models:/{model_id}"
        metrics = {m.key: m for m in mlflow.get_logged_model(model_id).metrics if m.key.startswith("gate/")}
        auc = metrics["gate/generator_A/roc_auc"]
        assert auc.value == pytest.approx(rows["generator=A"][role]["roc_auc"])
        assert auc.dataset_name == "snapshot-v0001" and auc.dataset_digest
        assert metrics["gate/overall/roc_auc"].value == pytest.approx(rows["overall"][role]["roc_auc"])
    # The pictures: per-slice bars, champion vs challenger, in the stored report.
    html = ObjectStore.from_settings(gate_settings).read_bytes(
        f"{report_prefix(gate_settings.model_name, new)}/report.html"
    )
    assert b'<svg class="slice-bars"' in html and b'data-slice="generator=A"' in html
    value = f"{rows['generator=A']['challenger']['roc_auc']:.4f}".encode()
    assert b'class="challenger" data-value="' + value in html


def test_a_rejection_fails_with_its_reasons_and_a_person_can_promote_it_anyway_with_a_reason(
    gate_settings, trained_dir, untrained_dir, register
):
    from tasks.promote.gate import GateRejected, OverrideError, markdown, override_request, reject

    registry = Registry(gate_settings)
    champion = register(trained_dir, gate_settings, "v0001")
    registry.promote(champion, "round 1")
    challenger = register(untrained_dir, gate_settings, "v0001")
    report = evaluate(gate_settings, challenger, policy(floors={"roc_auc": 0.9}))
    assert report["decision"] == "rejected"

    with pytest.raises(
        GateRejected, match=rf"gate REJECTED .* version {challenger}: overall roc_auc"
    ) as rejected:
        reject(gate_settings, report)
    assert f"Model version {challenger}" in str(rejected.value)  # says how to override
    assert registry.get(challenger).tags["rejected"] == "true"
    assert registry.aliases()[CHAMPION] == champion

    # An override names the version, gives a reason, and comes from an allowed user.
    form = {
        "version": challenger,
        "override": True,
        "override_reason": "  golden set too small;\n ok by QA  ",
    }
    with pytest.raises(OverrideError, match="needs a reason"):
        override_request(gate_settings, {**form, "override_reason": " "}, "ana")
    with pytest.raises(OverrideError, match="needs the model version"):
        override_request(gate_settings, {**form, "version": None}, "ana")
    strict = gate_settings.model_copy(
        update={"promotion": gate_settings.promotion.model_copy(update={"override_users": ("lead",)})}
    )
    with pytest.raises(OverrideError, match="user 'ana' may not override"):
        override_request(strict, form, "ana")
    assert override_request(gate_settings, {**form, "override": False}, "ana") is None
    override = override_request(gate_settings, form, "ana")
    assert override == {"reason": "golden set too small; ok by QA", "by": "ana"}

    result = apply(gate_settings, report, override=override)
    assert result["promoted"] and result["overridden"] and result["previous"] == champion
    assert registry.aliases()[CHAMPION] == challenger
    tags = registry.get(challenger).tags
    assert (
        tags["gate_override_reason"] == "golden set too small; ok by QA" and tags["gate_override_by"] == "ana"
    )
    assert tags["gate_decision"] == "overridden" and tags["rejected"] == "false"
    assert "promoted by override of ana: golden set too small" in tags["promotion_reason"]
    stored = json.loads(
        ObjectStore.from_settings(gate_settings).read_bytes(
            f"{report_prefix(gate_settings.model_name, challenger)}/report.json"
        )
    )
    assert stored["decision"] == "overridden" and stored["override"]["by"] == "ana"
    assert stored["override"]["gate_reasons"] == report["reasons"] and stored["checks"]
    assert "Promoted by ana" in markdown(stored)
    logged = registry.client.download_artifacts(registry.get(challenger).run_id, "gate/gate_report.json")
    assert json.loads(Path(logged).read_text())["decision"] == "overridden"
