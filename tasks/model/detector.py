"""The detector interface every family implements, and the one way to load a saved detector.

    from tasks.model.detector import Detector
    detector = Detector.load("models:/vigil-detector@champion")   # the card says which family
    p_fake = detector.score(images)            # P(fake), one batched pass per batch
    verdicts = detector.is_fake(p_fake)        # the threshold chosen on validation data
    reasons = detector.explain(images, p_fake) # why, in words (each family says what it honestly can)
    vectors = detector.embed(images)           # a compact embedding per image (monitoring drift)

Training, evaluation, the gate, tuning and serving only use this interface, so a family is one
module (:mod:`tasks.model.vlm`, :mod:`tasks.model.probe`) registered in :data:`FAMILIES`.
"""

from __future__ import annotations

import hashlib
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from tasks.model.artifacts import ResolvedModel, resolve_model
from tasks.model.card import INFERENCE_NAME, DetectorCard, InferenceSettings, detector_folder, read_card

if TYPE_CHECKING:
    from PIL import Image

# family -> "module:class" (imported on first use: the VLM needs torch, the probe onnxruntime).
FAMILIES = {"vlm": "tasks.model.vlm:VLMDetector", "probe": "tasks.model.probe:ProbeDetector"}


class Detector(ABC):
    """A loaded detector. Thread-safe: a family serialises calls into its model with ``self._lock``."""

    family: ClassVar[str]
    _feature_memo: FeatureMemo | None = None  # see shared_features

    def __init__(
        self,
        card: DetectorCard,
        *,
        path: Path | None = None,
        name: str | None = None,
        version: str | None = None,
        source: str | None = None,
        inference: InferenceSettings | None = None,
    ) -> None:
        self.card = card
        self.path = path
        self.name = name or card.name
        self.version = version
        self.source = source or (str(path) if path else None)
        self.inference = inference or InferenceSettings()
        self._lock = threading.Lock()

    # -- loading --------------------------------------------------------------------------------
    @staticmethod
    def load(
        source: str | Path,
        inference: InferenceSettings | dict | str | Path | None = None,
        *,
        settings=None,
    ) -> Detector:
        """Load from ``models:/name@alias``, ``models:/name/3``, a ``runs:/`` URI or a local folder.

        ``inference``: settings, a dict, or a path to an ``inference.json``; default: the folder's
        ``inference.json`` if it has one, else a registry version's tuned settings (its ``inference``
        tag, written by inference tuning), else :class:`InferenceSettings` defaults.
        """
        resolved = resolve_model(str(source), settings=settings)
        folder = detector_folder(resolved.path)
        card = read_card(folder)
        module, _, name = FAMILIES[card.family].partition(":")
        family = getattr(import_module(module), name)
        return family.from_folder(
            folder, card, _inference_settings(inference, folder, resolved), resolved, source=str(source)
        )

    @classmethod
    @abstractmethod
    def from_folder(
        cls,
        folder: Path,
        card: DetectorCard,
        inference: InferenceSettings,
        resolved: ResolvedModel,
        source: str,
    ) -> Detector:
        """Build the family's detector from a saved folder."""

    def with_inference(self, inference: InferenceSettings) -> Detector:
        """The same saved model loaded again with other inference settings (tuning benchmarks these)."""
        if self.path is None:
            raise ValueError("with_inference() needs a detector loaded from a folder")
        clone = Detector.load(self.path, inference)
        clone.name, clone.version, clone.source = self.name, self.version, self.source
        return clone

    # -- inference ------------------------------------------------------------------------------
    @property
    def threshold(self) -> float:
        return self.card.threshold

    @abstractmethod
    def score(self, images: Sequence[Image.Image]) -> np.ndarray:
        """P(fake) per image (float64 array): calibrated for the probe, the Yes/No softmax for the VLM."""

    @abstractmethod
    def explain(self, images: Sequence[Image.Image], p_fake: Sequence[float] | None = None) -> list[str]:
        """A reason per image, consistent with the verdict the score and threshold give."""

    @abstractmethod
    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """A compact embedding per image (float32, ``[n, d]``): what the monitor compares across windows."""

    def feature_setup(self) -> str | None:
        """What fixes the features this detector computes from an image, when they are frozen (the probe's
        backbone and forensic settings): detectors with the same setup may share them. None: not shared."""
        return None

    def use_feature_memo(self, memo: FeatureMemo | None) -> None:
        """Keep the features of images seen (by content) in ``memo``, or stop (None); see
        :func:`shared_features`. A family without frozen features ignores it."""
        del memo

    def is_fake(self, p_fake: np.ndarray) -> np.ndarray:
        return np.asarray(p_fake) >= self.threshold

    def describe(self) -> dict[str, Any]:
        """Name, version, threshold and provenance, for serving responses and reports."""
        return {
            "name": self.name,
            "version": self.version,
            "source": self.source,
            "family": self.card.family,
            "threshold": self.threshold,
            "profile": self.card.profile,
            "snapshot": self.card.snapshot,
            "inference": self.inference.model_dump(),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, version={self.version!r}, threshold={self.threshold:.4f})"


# The folder under <home>/cache of the frozen-backbone features that training and evaluation share.
FEATURE_CACHE = "features"


class FeatureMemo:
    """Feature vectors by image content for one frozen feature setup: in memory and, with a ``folder``,
    on disk (written atomically, so concurrent processes share them and a torn file is never read)."""

    def __init__(self, folder: Path | None = None) -> None:
        self.vectors: dict[str, np.ndarray] = {}
        self.folder = folder

    @classmethod
    def for_setup(cls, root: Path | None, setup: str) -> FeatureMemo:
        """The memo of ``setup`` under ``root`` (``<root>/<digest of setup>/<key[:2]>/<key>.npy``), or in
        memory only (``root`` None)."""
        return cls(None if root is None else Path(root) / hashlib.sha256(setup.encode()).hexdigest()[:16])

    def get(self, key: str) -> np.ndarray | None:
        vector = self.vectors.get(key)
        if vector is None and self.folder is not None:
            path = self.folder / key[:2] / f"{key}.npy"
            try:
                vector = self.vectors[key] = np.load(path)
            except (OSError, ValueError):  # not there yet (or unreadable): computed again
                return None
        return vector

    def put(self, key: str, vector: np.ndarray) -> None:
        self.vectors[key] = vector
        if self.folder is not None:
            path = self.folder / key[:2] / f"{key}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".tmp-{os.getpid()}-{threading.get_ident()}-{path.name}")
            np.save(tmp, vector)
            tmp.replace(path)


@contextmanager
def shared_features(detectors: Iterable[Detector], folder: Path | None = None) -> Iterator[None]:
    """Within the block, detectors with the same :meth:`Detector.feature_setup` compute each image's
    features once: the gate scores champion and challenger (both probes on one frozen backbone) on the
    same clean and perturbed images, and its subset frames repeat the test images. With ``folder`` (the
    feature cache training uses too) the features are kept there, so the gate finds those that
    training's test report computed.
    Evaluation only: tuning and serving must measure and pay for every forward pass. Nested blocks
    keep the outer memo."""
    memos: dict[str, FeatureMemo] = {}
    joined = []
    for detector in detectors:
        setup = detector.feature_setup()
        if setup is None or detector._feature_memo is not None:
            continue
        if setup not in memos:
            memos[setup] = FeatureMemo.for_setup(folder, setup)
        detector.use_feature_memo(memos[setup])
        joined.append(detector)
    try:
        yield
    finally:
        for detector in joined:
            detector.use_feature_memo(None)


def _inference_settings(value, folder: Path, resolved: ResolvedModel) -> InferenceSettings:
    if isinstance(value, InferenceSettings):
        return value
    if isinstance(value, dict):
        return InferenceSettings.model_validate(value)
    if value is not None:
        return InferenceSettings.from_file(value)
    saved = folder / INFERENCE_NAME
    if saved.exists():
        return InferenceSettings.from_file(saved)
    if resolved.inference is None:
        return InferenceSettings()
    try:
        return InferenceSettings.model_validate_json(resolved.inference)
    except ValueError as exc:
        raise ValueError(
            f"the 'inference' tag of {resolved.name} version {resolved.version} is not valid "
            f"InferenceSettings ({exc}); fix or delete the tag, or re-run inference tuning"
        ) from exc
