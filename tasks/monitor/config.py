"""The monitoring and review policy (``include/monitor.yaml``): one frozen, strict model.

Every field is documented next to its value in the YAML file; an unknown key or a bad value fails
with the file and the field named (:func:`tasks.settings.load_yaml`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from tasks.settings import Section, Settings, load_yaml

Signal = Literal["score", "verdict", "embedding", "estimated_accuracy"]
LabelSet = Literal["audit", "near_threshold", "claim", "drift", "feedback"]


class WindowPolicy(Section):
    min_rows: int = Field(200, ge=1)
    max_rows: int = Field(100_000, ge=1)
    lookback_days: int = Field(1, ge=0, le=31)
    min_group_rows: int = Field(200, ge=1)
    max_groups: int = Field(12, ge=0)
    report_days: int = Field(30, ge=1)


class ReferencePolicy(Section):
    splits: tuple[Literal["train", "val", "test"], ...] = ("test",)
    max_rows: int = Field(5000, ge=10)


class ScoreDrift(Section):
    ks_p_value: float = Field(0.05, gt=0, lt=1)
    wasserstein: float = Field(0.1, gt=0)


class VerdictDrift(Section):
    p_value: float = Field(0.05, gt=0, lt=1)
    min_delta: float = Field(0.05, ge=0, le=1)


class EmbeddingDrift(Section):
    sample_rows: int = Field(5000, ge=50)
    roc_auc: float = Field(0.55, gt=0.5, lt=1)


class EstimatedAccuracyDrift(Section):
    max_drop: float = Field(0.05, ge=0, le=1)


class DriftPolicy(Section):
    score: ScoreDrift = ScoreDrift()
    verdict: VerdictDrift = VerdictDrift()
    embedding: EmbeddingDrift = EmbeddingDrift()
    estimated_accuracy: EstimatedAccuracyDrift = EstimatedAccuracyDrift()


class AlertPolicy(Section):
    consecutive_windows: int = Field(2, ge=1, le=100)
    signals: tuple[Signal, ...] = ("score", "verdict", "embedding", "estimated_accuracy")

    @field_validator("signals")
    @classmethod
    def _some_signal(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("name at least one signal (score, verdict, embedding, estimated_accuracy)")
        return value


class AccuracyPolicy(Section):
    label_days: int = Field(14, ge=1, le=365)
    confidence: float = Field(0.95, gt=0.5, lt=1)


class PerWindow(Section):
    near_threshold: int = Field(20, ge=0)
    audit: int = Field(5, ge=0)
    claims: int = Field(50, ge=0)


class ReviewPolicy(Section):
    queue_size: int = Field(200, ge=1, le=100_000)
    per_window: PerWindow = PerWindow()
    drift_sample: int = Field(30, ge=0)
    expire_days: int = Field(14, ge=1, le=365)


class AccuracyDropTrigger(Section):
    enabled: bool = True
    labels_from: tuple[LabelSet, ...] = ("audit",)
    min_labels: int = Field(30, ge=1)
    max_drop: float = Field(0.05, ge=0, le=1)
    min_new_labels: int = Field(1, ge=0)


class RetrainPolicy(Section):
    accuracy_drop: AccuracyDropTrigger = AccuracyDropTrigger()


class MonitorConfig(Section):
    """``include/monitor.yaml``; every field is documented there."""

    schedule: str | None = "*/30 * * * *"
    window: WindowPolicy = WindowPolicy()
    reference: ReferencePolicy = ReferencePolicy()
    drift: DriftPolicy = DriftPolicy()
    alert: AlertPolicy = AlertPolicy()
    accuracy: AccuracyPolicy = AccuracyPolicy()
    review: ReviewPolicy = ReviewPolicy()
    retrain: RetrainPolicy = RetrainPolicy()

    @field_validator("schedule")
    @classmethod
    def _valid_schedule(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from croniter import croniter

        presets = {"@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly"}
        if value not in presets and not croniter.is_valid(value):
            raise ValueError(f"not a cron expression or one of {sorted(presets)}")
        return value


def load_monitor_config(settings: Settings | None = None, path: str | Path | None = None) -> MonitorConfig:
    """``include/<monitoring.config_file>`` (default ``monitor.yaml``), or ``path``; errors name the file
    and the field."""
    settings = settings or Settings()
    return load_yaml(path or settings.include(settings.monitoring.config_file), MonitorConfig)
