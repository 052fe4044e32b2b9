"""The reviewed tuning config (``include/tuning.yaml``): the candidates to measure, the objective's bounds
and the time budget. Every field is documented in that file; an error names the file and the field."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from tasks.settings import Section, Settings, load_yaml

if TYPE_CHECKING:
    from tasks.model.card import InferenceSettings
    from tasks.settings import Settings

CONFIG_NAME = "tuning.yaml"
BASELINE = "baseline"
MIN_PIXELS = 28 * 28  # one 28x28 patch group: the smallest image the vision tower takes


class Candidate(Section):
    """One setting to try: changes over the safe defaults (:class:`InferenceSettings`); unset fields keep them."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=40)
    dtype: Literal["float32", "bfloat16", "float16"] | None = None
    quantization: Literal["none", "int8-dynamic"] | None = None
    compile: bool | None = None
    batch_size: int | None = Field(None, ge=1)
    threads: int | None = Field(None, ge=1)
    max_pixels_ratio: float | None = Field(None, gt=0, lt=1)

    def settings(self, trained_max_pixels: int | None) -> InferenceSettings:
        """The candidate's InferenceSettings; ``max_pixels_ratio`` is relative to the trained pixel count
        (a family without a pixel budget, the probe, ignores it: the candidate is then skipped)."""
        from tasks.model.card import InferenceSettings

        changes = self.model_dump(exclude={"name", "max_pixels_ratio"}, exclude_none=True)
        if self.max_pixels_ratio is not None and trained_max_pixels is None:
            changes["max_pixels"] = MIN_PIXELS  # marks the candidate as changing a field the family lacks
        elif self.max_pixels_ratio is not None:
            changes["max_pixels"] = max(MIN_PIXELS, int(trained_max_pixels * self.max_pixels_ratio))
        return InferenceSettings(**changes)


class CascadeObjective(Section):
    """How ``vigil tune --cascade`` picks the band of first-stage scores sent to the VLM."""

    max_vlm_share: float = Field(0.3, gt=0, le=1)
    max_auc_loss: float = Field(0.01, ge=0, le=1)


class TuningConfig(Section):
    """What to measure and how to pick; see include/tuning.yaml."""

    auc_margin: float = Field(0.01, ge=0, le=1)
    max_p95_latency_ms: float = Field(500.0, gt=0)
    max_memory_mb: float | None = Field(None, gt=0)
    min_gain: float = Field(0.05, ge=0)
    time_budget_s: float = Field(30.0, gt=0)
    max_images: int = Field(200, ge=4)
    latency_requests: int = Field(20, ge=5)
    throughput_rounds: int = Field(2, ge=1)
    candidates: tuple[Candidate, ...] = ()
    cascade: CascadeObjective = CascadeObjective()

    @model_validator(mode="after")
    def _unique_names(self) -> TuningConfig:
        names = [c.name for c in self.candidates]
        if BASELINE in names:
            raise ValueError(
                f"the candidate name {BASELINE!r} is reserved for the safe defaults, measured first"
            )
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"candidate names must be unique, repeated: {duplicates}")
        return self


def load_tuning_config(path: str | Path | None = None, settings: Settings | None = None) -> TuningConfig:
    """``path``, else ``include/tuning.yaml`` of the settings."""
    if path is None:
        path = (settings or Settings()).include(CONFIG_NAME)
    return load_yaml(path, TuningConfig)
