"""The gate's decision: floors, no forgetting, better on new data, robustness, first model."""

from tasks.promote.policy import NOT_APPLICABLE, PASSED, GatePolicy, decide


def report(auc, bacc=0.9, ece=0.05, slices=None, new=None, robustness=None):
    return {
        "overall": {"n": 200, "roc_auc": auc, "balanced_accuracy": bacc, "ece": ece},
        "slices": {name: {"n": n, "roc_auc": a} for name, (n, a) in (slices or {}).items()},
        "new_data": None if new is None else {"n": 100, "roc_auc": new},
        "robustness": {name: {"drop": d} for name, d in (robustness or {}).items()},
    }


POLICY = GatePolicy()


def test_first_model_needs_floors_only():
    decision = decide(POLICY, report(0.95, slices={"generator=A": (100, 0.5)}), champion=None)
    assert decision.passed
    assert {c.name for c in decision.checks} == {"floor:roc_auc", "floor:balanced_accuracy", "floor:ece"}


def test_fails_a_floor_with_the_numbers_in_the_reason():
    decision = decide(POLICY, report(0.85), champion=None)
    assert not decision.passed
    assert decision.reasons == ["overall roc_auc 0.8500 must be >= 0.9"]


def test_fails_on_forgetting_an_old_generator():
    champion = report(0.97, slices={"generator=A": (100, 0.99), "generator=B": (100, 0.60)}, new=0.60)
    challenger = report(
        0.96,
        slices={"generator=A": (100, 0.80), "generator=B": (100, 0.98)},
        new=0.98,
        robustness={"jpeg75": 0.01},
    )
    decision = decide(POLICY, challenger, champion)
    assert not decision.passed
    assert len(decision.reasons) == 1 and decision.reasons[0].startswith("slice generator=A (n=100)")


def test_passes_when_better_on_new_data_and_no_slice_regresses():
    champion = report(0.90, slices={"generator=A": (100, 0.99), "generator=B": (100, 0.60)}, new=0.60)
    challenger = report(
        0.98,
        slices={"generator=A": (100, 0.985), "generator=B": (100, 0.97)},
        new=0.97,
        robustness={"jpeg75": 0.02, "resize50": 0.05},
    )
    decision = decide(POLICY, challenger, champion)
    assert decision.passed, decision.reasons


def test_small_slices_are_not_gated():
    champion = report(0.95, slices={"source=x": (5, 1.0)}, new=0.9)
    challenger = report(0.96, slices={"source=x": (5, 0.5)}, new=0.95)
    assert decide(POLICY, challenger, champion).passed


def test_not_better_on_new_data_or_not_robust_fails():
    champion = report(0.95, new=0.95)
    challenger = report(0.95, new=0.94, robustness={"jpeg75": 0.3})
    reasons = decide(GatePolicy(new_data={"min_improvement": 0.0}), challenger, champion).reasons
    assert any(r.startswith("new data") for r in reasons)
    assert any("jpeg75" in r for r in reasons)


def test_without_new_test_images_the_new_data_rule_is_not_applicable_and_a_better_model_passes():
    """The manual retrain on the champion's own snapshot: better on every slice, and no test image is new.
    The rule used to fall back to the whole test split and reject it ("must be >= champion + 0.05")."""
    champion = report(0.938, slices={"generator=A": (120, 0.94), "generator=B": (120, 0.93)})
    challenger = report(
        0.970,
        slices={"generator=A": (120, 0.97), "generator=B": (120, 0.97)},
        robustness={"jpeg75": 0.02},
    )
    decision = decide(GatePolicy(new_data={"min_improvement": 0.05}), challenger, champion)
    assert decision.passed, decision.reasons
    [new_data] = [c for c in decision.checks if c.name == "better_on_new_data"]
    assert new_data.status == NOT_APPLICABLE and new_data.passed
    assert "no test image is new" in new_data.detail
    assert decision.to_dict()["checks"][3]["status"] in {PASSED, NOT_APPLICABLE}


def test_rules_without_data_are_recorded_as_not_applicable_never_as_failed():
    champion = report(0.95, slices={"source=x": (5, 1.0), "generator=C": (60, None)}, new=0.9)
    challenger = report(
        0.96, slices={"source=x": (5, 0.5), "generator=C": (60, 0.9)}, new=0.95, robustness={"jpeg75": None}
    )
    decision = decide(POLICY, challenger, champion)
    statuses = {c.name: c.status for c in decision.checks}
    assert statuses["no_forgetting:source=x"] == NOT_APPLICABLE  # 5 images < 30
    assert statuses["no_forgetting:generator=C"] == NOT_APPLICABLE  # the champion's AUC is undefined
    assert statuses["robustness:jpeg75"] == NOT_APPLICABLE
    assert statuses["better_on_new_data"] == PASSED
    assert decision.passed and decision.reasons == []
    # The floors always apply: a model that cannot be measured is not promoted.
    unmeasurable = report(None)
    assert not decide(POLICY, unmeasurable, None).passed
