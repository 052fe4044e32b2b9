"""The promotion policy (``include/gate.yaml``) and the decision it makes.

The decision is a pure function of two evaluation reports (challenger and champion, computed on
the same frozen test sets), so it is unit-testable and explainable: every check is recorded with
the numbers it compared (or, when it has nothing to judge, as not applicable), and the reasons of a
failure are the failed checks, in words.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import Field

from tasks.settings import Section, Settings, load_yaml

Metrics = dict[str, Any]  # one slice: {"n": ..., "roc_auc": ..., "balanced_accuracy": ..., "ece": ...}


class Floors(Section):
    roc_auc: float = Field(0.90, ge=0, le=1)
    balanced_accuracy: float = Field(0.80, ge=0, le=1)
    max_ece: float = Field(0.15, ge=0, le=1)


class SliceRule(Section):
    metric: str = "roc_auc"
    min_samples: int = Field(30, ge=1)
    max_regression: float = Field(0.02, ge=0, le=1)


class NewDataRule(Section):
    min_improvement: float = Field(0.0, ge=-1, le=1)


class RobustnessRule(Section):
    max_drop: float = Field(0.10, ge=0, le=1)


class GatePolicy(Section):
    """Promotion policy; every field is documented in include/gate.yaml."""

    floors: Floors = Floors()
    slices: SliceRule = SliceRule()
    new_data: NewDataRule = NewDataRule()
    robustness: RobustnessRule = RobustnessRule()
    golden_set: str | None = None
    human_approval: bool = False


PASSED, FAILED, NOT_APPLICABLE = "passed", "failed", "not applicable"


@dataclass(frozen=True)
class Check:
    """One rule applied to the numbers: passed, failed, or not applicable (no data to judge it on)."""

    name: str
    status: str  # PASSED | FAILED | NOT_APPLICABLE
    detail: str

    @property
    def passed(self) -> bool:
        """Only a failed check blocks a promotion; a rule without data neither passes nor fails."""
        return self.status != FAILED


def _check(name: str, ok: bool, detail: str) -> Check:
    return Check(name, PASSED if ok else FAILED, detail)


@dataclass(frozen=True)
class Decision:
    passed: bool
    checks: list[Check] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        """Failed checks, in words (the tag and log text of a rejection)."""
        return [c.detail for c in self.checks if c.status == FAILED]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "reasons": self.reasons,
            "checks": [{**asdict(c), "passed": c.passed} for c in self.checks],
        }


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def decide(policy: GatePolicy, challenger: dict[str, Any], champion: dict[str, Any] | None) -> Decision:
    """Apply ``policy`` to evaluation reports ``{"overall", "slices", "new_data", "robustness"}``.

    A rule with nothing to judge is recorded as not applicable, never as failed: a slice smaller than
    ``slices.min_samples`` or without the metric on either side, "better on new data" when no test image
    is new since the champion's snapshot (a retrain on the same data), a robustness drop that could not
    be measured. The floors always apply: a model must be measurable to be promoted.
    """
    checks: list[Check] = []
    overall = challenger["overall"]
    floors = policy.floors
    for metric, floor, higher_is_better in (
        ("roc_auc", floors.roc_auc, True),
        ("balanced_accuracy", floors.balanced_accuracy, True),
        ("ece", floors.max_ece, False),
    ):
        value = overall.get(metric)
        ok = value is not None and (value >= floor if higher_is_better else value <= floor)
        bound = ">=" if higher_is_better else "<="
        checks.append(
            _check(f"floor:{metric}", ok, f"overall {metric} {_fmt(value)} must be {bound} {floor}")
        )

    if champion is not None:
        checks += _slice_checks(policy.slices, challenger, champion)
        checks.append(_new_data_check(policy, challenger, champion))
        for name, result in sorted(challenger.get("robustness", {}).items()):
            drop, bound = result.get("drop"), policy.robustness.max_drop
            metric = policy.slices.metric
            if drop is None:
                checks.append(
                    Check(
                        f"robustness:{name}",
                        NOT_APPLICABLE,
                        f"{metric} drop under {name}: not measurable (the test split lacks a class)",
                    )
                )
                continue
            checks.append(
                _check(
                    f"robustness:{name}",
                    drop <= bound,
                    f"{metric} drop under {name} {_fmt(drop)} must be <= {bound}",
                )
            )
    return Decision(all(c.passed for c in checks), checks)


def _slice_checks(rule: SliceRule, challenger: dict[str, Any], champion: dict[str, Any]) -> list[Check]:
    """No forgetting: every slice with enough images, against the champion on the same images."""
    metric, checks = rule.metric, []
    for name, mine in sorted(challenger.get("slices", {}).items()):
        theirs = champion.get("slices", {}).get(name)
        n = mine.get("n", 0)
        new, old = mine.get(metric), (theirs or {}).get(metric)
        check = f"no_forgetting:{name}"
        if n < rule.min_samples:
            checks.append(
                Check(check, NOT_APPLICABLE, f"slice {name} (n={n}): fewer than {rule.min_samples} images")
            )
        elif new is None or old is None:
            checks.append(
                Check(check, NOT_APPLICABLE, f"slice {name} (n={n}): {metric} undefined (one class only)")
            )
        else:
            checks.append(
                _check(
                    check,
                    new >= old - rule.max_regression,
                    f"slice {name} (n={n}): {metric} {_fmt(new)} vs champion {_fmt(old)} "
                    f"(allowed drop {rule.max_regression})",
                )
            )
    return checks


def _new_data_check(policy: GatePolicy, challenger: dict[str, Any], champion: dict[str, Any]) -> Check:
    """Better than the champion on the test images it never saw; not applicable when there are none."""
    metric, delta = policy.slices.metric, policy.new_data.min_improvement
    mine, theirs = challenger.get("new_data"), champion.get("new_data")
    if not mine or not theirs or not mine.get("n"):
        return Check(
            "better_on_new_data",
            NOT_APPLICABLE,
            "new data: no test image is new since the champion's training snapshot (nothing to judge; "
            "the other checks compare both models on the same test split)",
        )
    new, old = mine.get(metric), theirs.get(metric)
    detail = f"new data (n={mine['n']}): {metric} {_fmt(new)} must be >= champion {_fmt(old)} + {delta}"
    if new is None or old is None:
        return Check("better_on_new_data", NOT_APPLICABLE, f"{detail}: {metric} undefined (one class only)")
    return _check("better_on_new_data", new >= old + delta, detail)


def load_policy(settings: Settings) -> GatePolicy:
    """``include/gate.yaml``; errors name the field."""
    return load_yaml(settings.include(settings.promotion.policy_file), GatePolicy)
