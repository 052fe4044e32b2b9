"""The probe family: a frozen pretrained backbone, pooled multi-layer features and a small trained head.

**Score = calibrated P(fake)**: ``features -> standardise -> head logit -> sigmoid(a * logit + b)``,
where the features are the pooled stage features of the frozen open_nsfw ResNet-50
(:mod:`tasks.model.backbone`) fused with low-level forensic features (:mod:`tasks.model.forensics`),
the head is a logistic regression or a one-hidden-layer MLP trained on the snapshot
(:mod:`tasks.train.probe`), and ``a, b`` are fitted on the validation split (Platt scaling). Inference
is numpy and onnxruntime only: no torch, no GPU, ~15 ms per image on two CPU cores.

**Reason**: the head's logit decomposes over its inputs (exactly for the linear head, by gradient x
input for the MLP), so the reason names the feature groups that moved the score most, with their
signed share. It is honest about what it is: which kind of evidence, not a description of the image.

**Embedding**: the standardised features projected on their first principal components (fitted on
the training features), what the monitor compares across windows.

A saved probe is a folder::

    detector.json       the card: backbone (package, file, sha256, licence), feature groups, head, threshold
    head.npz            standardisation, head weights, calibration, PCA basis
    model_config.yaml   the training setup that produced it
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.model import backbone, forensics
from tasks.model.artifacts import ResolvedModel
from tasks.model.card import CARD_NAME, CONFIG_NAME, InferenceSettings, ProbeCard
from tasks.model.config import BackboneSettings, ForensicSettings
from tasks.model.detector import Detector, FeatureMemo

if TYPE_CHECKING:
    from PIL import Image

HEAD_FILE = "head.npz"
# What a feature group is, in words (for reasons and docs).
GROUP_WORDS = {
    "stem": "edges and colour gradients",
    "stage1": "fine textures",
    "stage2": "local patterns",
    "stage3": "object parts",
    "stage4": "whole-image appearance",
    "residual": "noise residuals",
    "spectrum": "frequency spectrum",
}


@dataclass(frozen=True)
class Head:
    """Everything after the features; plain arrays, saved in ``head.npz``."""

    mean: np.ndarray  # [D] feature standardisation
    scale: np.ndarray  # [D]
    weights: tuple[np.ndarray, ...]  # linear: (w [D], b [1]); mlp: (w1 [D,H], b1 [H], w2 [H], b2 [1])
    calibration: tuple[float, float]  # Platt (a, b): p = sigmoid(a * logit + b)
    pca_mean: np.ndarray  # [D] in standardised space
    pca_basis: np.ndarray  # [D, k]

    @property
    def kind(self) -> str:
        return "linear" if len(self.weights) == 2 else "mlp"

    def standardise(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.scale

    def logits(self, z: np.ndarray) -> np.ndarray:
        if self.kind == "linear":
            w, b = self.weights
            return z @ w + b[0]
        w1, b1, w2, b2 = self.weights
        return np.maximum(z @ w1 + b1, 0.0) @ w2 + b2[0]

    def probability(self, logits: np.ndarray) -> np.ndarray:
        a, b = self.calibration
        return 1.0 / (1.0 + np.exp(-np.clip(a * logits + b, -50.0, 50.0)))

    def contributions(self, z: np.ndarray) -> np.ndarray:
        """Per-feature contribution to each logit: exact for the linear head, gradient x input for the MLP."""
        if self.kind == "linear":
            return z * self.weights[0]
        w1, b1, w2, _ = self.weights
        active = (z @ w1 + b1) > 0  # [N, H]
        gradient = (active * w2) @ w1.T  # [N, D]
        return gradient * z

    def embed(self, z: np.ndarray) -> np.ndarray:
        return ((z - self.pca_mean) @ self.pca_basis).astype(np.float32)

    def save(self, path: Path) -> None:
        arrays = {f"w{i}": w for i, w in enumerate(self.weights)}
        np.savez(
            path,
            mean=self.mean,
            scale=self.scale,
            calibration=np.asarray(self.calibration),
            pca_mean=self.pca_mean,
            pca_basis=self.pca_basis,
            **arrays,
        )

    @classmethod
    def load(cls, path: Path) -> Head:
        with np.load(path) as data:
            count = sum(1 for key in data.files if key.startswith("w"))
            a, b = (float(v) for v in data["calibration"])
            return cls(
                mean=data["mean"],
                scale=data["scale"],
                weights=tuple(data[f"w{i}"] for i in range(count)),
                calibration=(a, b),
                pca_mean=data["pca_mean"],
                pca_basis=data["pca_basis"],
            )


class FeatureExtractor:
    """Images -> the probe's raw feature matrix (backbone then forensic columns), with their names."""

    def __init__(
        self,
        backbone_settings: BackboneSettings,
        forensic_settings: ForensicSettings,
        cache_dir: Path,
        threads: int | None = None,
    ) -> None:
        self.backbone = backbone.Backbone(backbone_settings, cache_dir, threads)
        self.forensics = forensic_settings
        self.names = backbone.feature_names(backbone_settings) + forensics.names(forensic_settings)
        self.setup = feature_setup(backbone_settings, forensic_settings)

    def __call__(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        deep = self.backbone.features(images, batch_size)
        if not (self.forensics.residuals or self.forensics.spectrum):
            return deep
        return np.concatenate([deep, forensics.features(images, self.forensics)], axis=1)


def feature_setup(backbone_settings: BackboneSettings, forensic_settings: ForensicSettings) -> str:
    """What fixes an image's raw features: the backbone's weights and settings, the forensic settings."""
    return "|".join(
        (backbone.SHA256, backbone_settings.model_dump_json(), forensic_settings.model_dump_json())
    )


def feature_group(name: str) -> str:
    """``stage4_mean`` -> ``stage4``; ``residual_lap_Y_logstd`` -> ``residual``."""
    return name.split("_", 1)[0]


class ProbeDetector(Detector):
    """A loaded probe. Calls into the onnxruntime session are serialised (serving micro-batches)."""

    family = "probe"

    def __init__(self, extractor: FeatureExtractor, head: Head, card: ProbeCard, **kwargs: Any) -> None:
        super().__init__(card, **kwargs)
        self.extractor = extractor
        self.head = head
        groups = [feature_group(name) for name in extractor.names]
        self._groups = {
            g: np.array([i for i, x in enumerate(groups) if x == g]) for g in dict.fromkeys(groups)
        }

    @classmethod
    def from_folder(
        cls, folder: Path, card: ProbeCard, inference: InferenceSettings, resolved: ResolvedModel, source: str
    ) -> ProbeDetector:
        extractor = FeatureExtractor(card.backbone, card.forensics, resolved.cache_dir, inference.threads)
        if extractor.names != card.feature_names:
            raise ValueError(
                f"{folder}: the backbone and forensic settings give other features than it was trained on"
            )
        return cls(
            extractor,
            Head.load(folder / HEAD_FILE),
            card,
            path=folder,
            name=resolved.name,
            version=resolved.version,
            source=source,
            inference=inference,
        )

    # -- inference ------------------------------------------------------------------------------
    def feature_setup(self) -> str:
        return self.extractor.setup

    def use_feature_memo(self, memo: FeatureMemo | None) -> None:
        self._feature_memo = memo

    def standardised(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.head.standardise(self.features(images))

    def features(self, images: Sequence[Image.Image]) -> np.ndarray:
        """The raw feature matrix of ``images``; with a memo (:func:`shared_features`), each image's once."""
        memo = self._feature_memo
        if memo is None or not images:
            with self._lock:
                return self.extractor(images, self.inference.batch_size)
        keys = [_pixels_key(image) for image in images]
        vectors = [memo.get(key) for key in keys]
        missing = list({keys[i]: i for i, v in enumerate(vectors) if v is None}.values())
        if missing:
            with self._lock:
                computed = self.extractor([images[i] for i in missing], self.inference.batch_size)
            for i, vector in zip(missing, computed, strict=True):
                memo.put(keys[i], vector)
        return np.stack([v if v is not None else memo.get(key) for v, key in zip(vectors, keys, strict=True)])

    def score(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.score_and_embed(images)[0]

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.score_and_embed(images)[1]

    def score_and_embed(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        if not images:
            return np.zeros(0), np.zeros((0, self.card.embedding_dims), np.float32)
        z = self.standardised(images)
        return self.head.probability(self.head.logits(z)).astype(np.float64), self.head.embed(z)

    def explain(self, images: Sequence[Image.Image], p_fake: Sequence[float] | None = None) -> list[str]:
        """Which feature groups moved the score, in words: no text model, so no description of the image."""
        if not images:
            return []
        z = self.standardised(images)
        scores = self.head.probability(self.head.logits(z)) if p_fake is None else np.asarray(p_fake)
        shares = self.head.contributions(z)
        return [self._reason(float(p), row) for p, row in zip(scores, shares, strict=True)]

    def _reason(self, p_fake: float, contributions: np.ndarray) -> str:
        verdict = "synthetic or manipulated" if p_fake >= self.threshold else "authentic"
        by_group = {g: float(contributions[idx].sum()) for g, idx in self._groups.items()}
        total = sum(abs(v) for v in by_group.values()) or 1.0
        ranked = sorted(by_group.items(), key=lambda kv: -abs(kv[1]))[:3]
        parts = [
            f"{GROUP_WORDS.get(g.split('_')[0], g)} ({g}) {'toward synthetic' if v > 0 else 'toward authentic'}, "
            f"{abs(v) / total:.0%}"
            for g, v in ranked
        ]
        return f"Likely {verdict} (P(fake) {p_fake:.2f}). Evidence: " + "; ".join(parts) + "."

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "backbone": self.card.backbone.name, "head": self.card.head.kind}


def _pixels_key(image: Image.Image) -> str:
    """A name for an image's pixels (mode, size and bytes): equal keys, equal features."""
    digest = hashlib.sha256(f"{image.mode}|{image.size}|".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def save_probe(dest: Path, card: ProbeCard, head: Head, config_yaml: str | None = None) -> Path:
    """Write a probe folder (card, head, config)."""
    import shutil

    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    head.save(dest / HEAD_FILE)
    (dest / CARD_NAME).write_text(card.model_dump_json(indent=2))
    if config_yaml is not None:
        (dest / CONFIG_NAME).write_text(config_yaml)
    return dest
