"""What a saved detector is (``detector.json``, its card) and how a loaded one runs (:class:`InferenceSettings`).

Cheap to import (pydantic only): the registry, tuning, serving and the UI read cards without loading
a model. A card names its ``family`` — ``vlm`` (Qwen2.5-VL) or ``probe`` (a frozen pretrained
backbone with a trained head) — and :func:`read_card` returns the family's card class. Cards written
before families existed have no ``family`` and are VLM cards.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from tasks.model.config import (
    BackboneSettings,
    ForensicSettings,
    HeadSettings,
    ImageSize,
    ModelConfig,
    ProbeConfig,
    TinyArchitecture,
)

CARD_NAME = "detector.json"
CONFIG_NAME = "model_config.yaml"
INFERENCE_NAME = "inference.json"
QUESTION = "Is this image manipulated or synthesized?"


class CardBase(BaseModel):
    """Fields every detector card has: enough to explain where a model came from and how it decides."""

    model_config = ConfigDict(extra="forbid")

    format: int = 2
    name: str = "vigil-detector"
    profile: str
    threshold: float = Field(0.5, ge=0, le=1, description="P(fake) at or above it means synthetic.")
    target_fpr: float | None = None
    snapshot: str | None = None
    trained_at: str | None = None
    metrics: dict[str, float | None] = {}


class VLMCard(CardBase):
    """A Qwen2-VL / Qwen2.5-VL detector."""

    family: Literal["vlm"] = "vlm"
    method: Literal["full", "lora"]
    base_model: str | None = None
    revision: str | None = None
    tiny: TinyArchitecture | None = None
    images: ImageSize
    question: str = QUESTION


class BackboneIdentity(BaseModel):
    """Which exact pretrained weights the probe's features come from, and under which licence."""

    model_config = ConfigDict(extra="forbid")

    package: str
    version: str
    file: str
    sha256: str
    licence: str
    attribution: str


class ProbeCard(CardBase):
    """A frozen pretrained backbone, pooled multi-layer features (plus forensic ones) and a trained head."""

    family: Literal["probe"] = "probe"
    backbone: BackboneSettings
    weights: BackboneIdentity
    forensics: ForensicSettings
    head: HeadSettings
    feature_names: list[str] = Field(description="Feature group of each feature column, in order.")
    embedding_dims: int


DetectorCard = VLMCard | ProbeCard
_CARD = TypeAdapter(Annotated[VLMCard | ProbeCard, Field(discriminator="family")])


def parse_card(text: str) -> DetectorCard:
    """A card from its JSON; a card without ``family`` (format 1) is a VLM card."""
    import json

    data = json.loads(text)
    data.setdefault("family", "vlm")
    return _CARD.validate_python(data)


def card_for(config: ModelConfig, **kwargs: Any) -> DetectorCard:
    """The card of a detector trained with ``config`` (the fields it does not decide come as ``kwargs``)."""
    common = {"profile": config.profile, "target_fpr": config.target_fpr}
    if isinstance(config, ProbeConfig):
        return ProbeCard(
            backbone=config.backbone,
            forensics=config.forensics,
            head=config.head,
            embedding_dims=config.embedding_dims,
            **common,
            **kwargs,
        )
    return VLMCard(
        method=config.method,
        base_model=config.resolved_base_model,
        revision=config.revision,
        tiny=config.tiny if config.profile == "tiny" else None,
        images=config.images,
        **common,
        **kwargs,
    )


def detector_folder(path: Path) -> Path:
    """The detector folder inside a download: itself, or an MLflow pyfunc model's ``artifacts/detector``."""
    for candidate in (path, path / "artifacts" / "detector"):
        if (candidate / CARD_NAME).is_file():
            return candidate
    raise FileNotFoundError(f"{path} is not a Vigil detector: no {CARD_NAME} in it or in artifacts/detector")


def read_card(folder: Path) -> DetectorCard:
    return parse_card((detector_folder(Path(folder)) / CARD_NAME).read_text())


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class InferenceSettings(BaseModel):
    """How a loaded detector runs; benchmarked by inference tuning, applied by serving (``inference.json``).

    Each family uses the fields that apply to it (the probe: threads and batch size) and ignores the rest.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when available, else cpu.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bfloat16 on a GPU that supports it, else float32 (VLM)."
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="Intra-op threads (torch: process-wide; onnxruntime: per session); None: default.",
    )
    batch_size: int = Field(32, ge=1, description="Most images per forward pass.")
    max_pixels: int | None = Field(
        None, ge=28 * 28, description="Downscale larger images to this many pixels; None: as trained (VLM)."
    )
    quantization: Literal["none", "int8-dynamic"] = Field(
        "none", description="int8-dynamic: torch dynamic quantization of Linear layers (VLM, CPU)."
    )
    compile: bool = Field(False, description="torch.compile the forward pass used for scoring (VLM).")

    @classmethod
    def from_file(cls, path: str | Path) -> InferenceSettings:
        return cls.model_validate_json(Path(path).read_text())
