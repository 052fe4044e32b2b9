"""The promotion policy (``include/gate.yaml``) and the decision it makes.

The decision is a pure function of two evaluation reports (challenger and champion, computed on
the same frozen test sets), so it is unit-testable and explainable: every check is recorded with
the numbers it compared, and the reasons of a failure are the failed checks, in words.
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


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Decision:
    passed: bool
    checks: list[Check] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        """Failed checks, in words (the tag and log text of a rejection)."""
        return [c.detail for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reasons": self.reasons, "checks": [asdict(c) for c in self.checks]}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def decide(policy: GatePolicy, challenger: dict[str, Any], champion: dict[str, Any] | None) -> Decision:
    """Apply ``policy`` to evaluation reports ``{"overall", "slices", "new_data", "robustness"}``."""
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
        checks.append(Check(f"floor:{metric}", ok, f"overall {metric} {_fmt(value)} must be {bound} {floor}"))

    if champion is not None:
        rule, metric = policy.slices, policy.slices.metric
        for name, mine in sorted(challenger.get("slices", {}).items()):
            theirs = champion.get("slices", {}).get(name)
            if theirs is None or mine.get("n", 0) < rule.min_samples:
                continue
            new, old = mine.get(metric), theirs.get(metric)
            if new is None or old is None:
                continue
            ok = new >= old - rule.max_regression
            checks.append(
                Check(
                    f"no_forgetting:{name}",
                    ok,
                    f"slice {name} (n={mine['n']}): {metric} {_fmt(new)} vs champion {_fmt(old)} "
                    f"(allowed drop {rule.max_regression})",
                )
            )
        new_mine, new_theirs = (
            challenger.get("new_data") or overall,
            champion.get("new_data") or champion["overall"],
        )
        new, old = new_mine.get(metric), new_theirs.get(metric)
        delta = policy.new_data.min_improvement
        ok = new is not None and old is not None and new >= old + delta
        checks.append(
            Check(
                "better_on_new_data",
                ok,
                f"new data (n={new_mine.get('n', 0)}): {metric} {_fmt(new)} must be >= champion "
                f"{_fmt(old)} + {delta}",
            )
        )
        for name, result in sorted(challenger.get("robustness", {}).items()):
            drop = result.get("drop")
            ok = drop is not None and drop <= policy.robustness.max_drop
            checks.append(
                Check(
                    f"robustness:{name}",
                    ok,
                    f"{metric} drop under {name} {_fmt(drop)} must be <= {policy.robustness.max_drop}",
                )
            )
    return Decision(all(c.passed for c in checks), checks)


def load_policy(settings: Settings) -> GatePolicy:
    """``include/gate.yaml``; errors name the field."""
    return load_yaml(settings.include(settings.promotion.policy_file), GatePolicy)
