"""The training setup: one reviewed YAML file per setup (``include/model_config*.yaml``), validated here.

Every field is documented next to its value in the YAML files; this module holds the types, bounds
and defaults. A bad value fails before any work with the file and the field's name
(:func:`tasks.settings.load_yaml`). Overrides from the Airflow form or the CLI go through
:meth:`ModelConfig.with_overrides`, which validates them the same way.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from tasks.settings import ConfigError, Section, Settings, describe_validation_error, load_yaml

Profile = Literal["tiny", "qwen2.5-vl-3b"]
PROFILES: tuple[str, ...] = ("tiny", "qwen2.5-vl-3b")
# The checkpoint a profile starts from; the tiny profile's base is built offline from `tiny:` sizes.
PROFILE_BASE_MODELS: dict[str, str | None] = {"tiny": None, "qwen2.5-vl-3b": "Qwen/Qwen2.5-VL-3B-Instruct"}


class TinyArchitecture(Section):
    """Sizes of the randomly initialised tiny Qwen2.5-VL (profile ``tiny`` only)."""

    hidden_size: int = Field(
        128, ge=32, description="Text model width; also the vision tower's output width."
    )
    layers: int = Field(2, ge=1, description="Text decoder layers.")
    heads: int = Field(4, ge=1, description="Text attention heads (head_dim = hidden_size / heads).")
    intermediate_size: int = Field(256, ge=8, description="Text MLP width.")
    vision_depth: int = Field(2, ge=1, description="Vision transformer blocks.")
    vision_hidden_size: int = Field(64, ge=16, description="Vision transformer width.")
    vision_heads: int = Field(2, ge=1)
    vocab_size: int = Field(
        400, ge=300, le=5000, description="Target size of the BPE vocabulary built offline."
    )
    seed: int = Field(
        0, description="Seed of the random initialisation (the base is a pure function of these sizes)."
    )

    @model_validator(mode="after")
    def _head_dim(self) -> TinyArchitecture:
        if self.hidden_size % self.heads or (self.hidden_size // self.heads) % 8:
            raise ValueError(
                f"hidden_size/heads must be a multiple of 8, got {self.hidden_size}/{self.heads}"
            )
        if self.vision_hidden_size % self.vision_heads:
            raise ValueError(
                f"vision_hidden_size must be divisible by vision_heads, got "
                f"{self.vision_hidden_size}/{self.vision_heads}"
            )
        return self


class LoraSettings(Section):
    """LoRA adapters (method ``lora``)."""

    r: int = Field(16, ge=1, le=512, description="Rank of the adapters.")
    alpha: int = Field(32, ge=1, description="Scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1)
    targets: Literal["language", "language+vision"] = Field(
        "language",
        description="language: attention + MLP projections of the language model; +vision: also the vision tower's.",
    )
    modules_to_save: tuple[str, ...] = Field(
        (), description="Modules trained in full next to the adapters, e.g. lm_head."
    )


class ImageSize(Section):
    """How images are resized before the vision tower (Qwen2-VL smart resize: aspect kept, sides multiples of 28)."""

    min_pixels: int = Field(
        56 * 56, ge=28 * 28, description="Smaller images are upscaled to at least this many pixels."
    )
    max_pixels: int = Field(
        56 * 56, ge=28 * 28, description="Larger images are downscaled to at most this many pixels."
    )

    @model_validator(mode="after")
    def _ordered(self) -> ImageSize:
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) must not exceed max_pixels ({self.max_pixels})")
        return self


class TrainSettings(Section):
    """Optimisation."""

    epochs: int = Field(8, ge=1, le=1000)
    batch_size: int = Field(32, ge=1, description="Images per device and optimizer micro-step.")
    grad_accumulation: int = Field(1, ge=1, description="Micro-steps per optimizer step.")
    eval_batch_size: int = Field(
        64, ge=1, description="Images per forward pass when scoring the validation split."
    )
    learning_rate: float = Field(1e-3, gt=0, lt=1)
    lr_schedule: Literal["constant", "linear", "cosine"] = "cosine"
    warmup_ratio: float = Field(
        0.05, ge=0, lt=1, description="Share of the optimizer steps spent warming up."
    )
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    early_stopping_patience: int = Field(
        3, ge=1, description="Stop after this many epochs without a better val AUC."
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass (less memory)."
    )
    dataloader_workers: int = Field(
        0, ge=0, description="Processes decoding and preprocessing training images."
    )
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto: bf16 on a GPU that supports it, else fp32."
    )
    distributed: Literal["ddp", "deepspeed-zero2"] = Field(
        "ddp",
        description="With several GPUs: plain data parallel, or DeepSpeed ZeRO-2 (include/deepspeed_zero2.json).",
    )


class DataSettings(Section):
    """Which images to train on."""

    snapshot: str = Field("latest", pattern=r"^(latest|v\d{4,})$", description="Dataset snapshot version.")
    replay: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Share of the already-seen training images (those of the snapshot the starting model was trained "
        "on) mixed with all new ones; only when continuing from the champion.",
    )


class ModelConfig(Section):
    """One training setup."""

    profile: Profile = "tiny"
    base_model: str | None = Field(None, description="Hub id or local path; None = the profile's base.")
    revision: str | None = Field(None, description="Hub revision (commit sha or tag) of base_model.")
    tiny: TinyArchitecture = TinyArchitecture()
    method: Literal["full", "lora"] = "full"
    lora: LoraSettings = LoraSettings()
    init_from: Literal["base", "champion"] = Field(
        "champion",
        description="Continue from the current champion (when it has this profile and method), else the base.",
    )
    images: ImageSize = ImageSize()
    train: TrainSettings = TrainSettings()
    data: DataSettings = DataSettings()
    target_fpr: float = Field(
        0.05, gt=0, lt=0.5, description="Share of real val images allowed above the threshold."
    )
    seed: int = 0

    @model_validator(mode="after")
    def _profile_base(self) -> ModelConfig:
        if self.profile == "tiny" and self.base_model is not None:
            raise ValueError(
                "base_model must be null for profile 'tiny' (its base is built offline from `tiny:`)"
            )
        return self

    @property
    def resolved_base_model(self) -> str | None:
        """The hub id or path training starts from (None: the offline tiny base)."""
        return self.base_model or PROFILE_BASE_MODELS[self.profile]

    def with_overrides(self, overrides: dict[str, Any]) -> ModelConfig:
        """A copy with dotted-path overrides (``{"train.epochs": 3}``) applied and validated; None values are skipped."""
        data = self.model_dump(mode="json")
        for path, value in overrides.items():
            if value is None or value == "":
                continue
            node = data
            *parents, leaf = path.split(".")
            for key in parents:
                if not isinstance(node.get(key), dict):
                    raise ConfigError(f"unknown config field {path!r}")
                node = node[key]
            if leaf not in node:
                raise ConfigError(f"unknown config field {path!r}")
            node[leaf] = value
        try:
            return ModelConfig.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"override {overrides}: {describe_validation_error(exc, data)}") from exc

    def digest(self) -> str:
        """Short stable hash of the whole setup (part of the training job's identity)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def flat(self) -> dict[str, Any]:
        """Dotted-path view for MLflow params."""
        out: dict[str, Any] = {}

        def walk(prefix: str, node: Any) -> None:
            if isinstance(node, dict):
                for key, value in node.items():
                    walk(f"{prefix}.{key}" if prefix else key, value)
            else:
                out[prefix] = node

        walk("", self.model_dump(mode="json"))
        return out


def config_path(settings: Settings, profile: str | None = None) -> Path:
    """The reviewed config file for ``profile``: the configured file if it is for that profile, else
    ``include/model_config.<profile>.yaml``."""
    default = settings.include(settings.training.model_config_file)
    if not profile:
        return default
    if profile not in PROFILES:
        raise ConfigError(f"profile must be one of {list(PROFILES)}, got {profile!r}")
    if default.exists() and load_yaml(default, ModelConfig).profile == profile:
        return default
    candidate = settings.include(f"model_config.{profile}.yaml")
    if not candidate.exists():
        raise ConfigError(
            f"no config for profile {profile!r}: {default} is for another profile and {candidate} is missing"
        )
    return candidate


def load_config(
    path: str | Path | None = None, settings: Settings | None = None, profile: str | None = None
) -> ModelConfig:
    """Load and validate a training setup (default: the configured file, or the profile's file)."""
    path = Path(path) if path else config_path(settings or Settings(), profile)
    config = load_yaml(path, ModelConfig)
    if profile and config.profile != profile:
        raise ConfigError(f"{path}: profile is {config.profile!r}, but profile {profile!r} was asked for")
    return config
