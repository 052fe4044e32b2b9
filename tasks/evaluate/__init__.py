"""Evaluation of a detector on a frame: metrics overall and per slice, robustness, report files.

Used by training (the test report of every run), by ``vigil evaluate`` and by the promotion gate,
which calls :func:`compare` to evaluate challenger and champion on the same frozen frames. Reports
are plain JSON-serialisable dicts::

    {"model": {...}, "data": {"name", "n", "counts"},
     "overall": metrics,
     "slices": {"source": {value: metrics}, "label_source": {...}, "generator": {...}, "original_format": {...}},
     "robustness": {"jpeg_q75": {...}, "resize_0.5x": {...}},
     "curves": {"roc": {"fpr": [...], "tpr": [...]}, "reliability": [...]}}

``metrics`` is :func:`tasks.evaluate.metrics.binary_metrics` at the detector's threshold; undefined
values (ROC AUC of a one-class slice...) are None. A generator slice holds every real image of the
frame plus that generator's fakes, so its AUC is defined.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.evaluate.controls import shortcut_warning, trivial_control
from tasks.evaluate.metrics import binary_metrics, reliability_bins
from tasks.model.detector import FEATURE_CACHE, shared_features

if TYPE_CHECKING:
    from PIL import Image

    from tasks.data.frames import Frame
    from tasks.model.detector import Detector
    from tasks.settings import Settings

log = logging.getLogger("vigil.evaluate")
SLICE_COLUMNS = ("source", "label_source", "generator", "original_format")
UNKNOWN = "unknown"


def jpeg_q75(image: Image.Image) -> Image.Image:
    from PIL import Image as PILImage

    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=75)
    return PILImage.open(io.BytesIO(buf.getvalue())).convert("RGB")


def resize_half(image: Image.Image) -> Image.Image:
    from PIL import Image as PILImage

    return image.resize((max(1, image.width // 2), max(1, image.height // 2)), PILImage.BICUBIC)


PERTURBATIONS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "jpeg_q75": jpeg_q75,
    "resize_0.5x": resize_half,
}


def _values(column) -> list[str]:
    return [UNKNOWN if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in column]


def slice_metrics(frame: Frame, scores: np.ndarray, threshold: float) -> dict[str, dict[str, dict[str, Any]]]:
    """Metrics per value of each slice column; per generator: all reals plus that generator's fakes."""
    labels = frame.labels
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for column in SLICE_COLUMNS:
        values = np.array(_values(frame.table[column]))
        groups: dict[str, dict[str, Any]] = {}
        if column == "generator":
            for name in sorted(set(values[labels == 1]) - {UNKNOWN}):
                mask = (labels == 0) | (values == name)
                groups[name] = binary_metrics(labels[mask], scores[mask], threshold)
        else:
            for name in sorted(set(values)):
                mask = values == name
                groups[name] = binary_metrics(labels[mask], scores[mask], threshold)
        out[column] = groups
    return out


def robustness(
    detector: Detector, images: list, labels: np.ndarray, clean: np.ndarray, clean_metrics: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Metrics after each perturbation and their deltas to the clean images (negative = worse)."""
    out = {}
    threshold = detector.threshold
    for name, perturb in PERTURBATIONS.items():
        scores = detector.score([perturb(image) for image in images])
        metrics = binary_metrics(labels, scores, threshold)
        entry = {k: metrics[k] for k in ("roc_auc", "accuracy", "balanced_accuracy", "recall", "tnr")}
        for key in ("roc_auc", "accuracy", "balanced_accuracy"):
            before, after = clean_metrics[key], metrics[key]
            entry[f"delta_{key}"] = None if before is None or after is None else after - before
        entry["flip_rate"] = (
            float(np.mean((scores >= threshold) != (clean >= threshold))) if len(scores) else None
        )
        out[name] = entry
    return out


def roc_points(
    labels: np.ndarray, scores: np.ndarray, max_points: int = 200
) -> dict[str, list[float]] | None:
    from sklearn.metrics import roc_curve

    if len(set(labels.tolist())) < 2:
        return None
    fpr, tpr, _ = roc_curve(labels, scores)
    if len(fpr) > max_points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return {"fpr": [float(x) for x in fpr], "tpr": [float(x) for x in tpr]}


def evaluate_detector(
    detector: Detector,
    frame: Frame,
    *,
    with_robustness: bool = True,
    keep_scores: bool = False,
    train: Frame | None = None,
    control: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The full report of ``detector`` on ``frame`` (see the module docstring).

    With ``train`` (the training split of the same data), the report also has the trivial-statistics
    control (:mod:`tasks.evaluate.controls`) next to the model, clean and after JPEG q75; ``control``:
    that control already computed for this frame (it does not depend on the detector).
    """
    if len(frame) == 0:
        raise ValueError(f"{frame.name}: no labeled images to evaluate")
    images, labels = frame.images(), frame.labels
    scores = detector.score(images)
    overall = binary_metrics(labels, scores, detector.threshold)
    report: dict[str, Any] = {
        "model": detector.describe(),
        "data": {"name": frame.name, "n": len(frame), "counts": frame.counts()},
        "overall": overall,
        "slices": slice_metrics(frame, scores, detector.threshold),
        "robustness": robustness(detector, images, labels, scores, overall) if with_robustness else {},
        "curves": {"roc": roc_points(labels, scores), "reliability": reliability_bins(labels, scores)},
        "controls": {},
    }
    if train is not None and len(train):
        control = control if control is not None else trivial_control(train, images, labels, jpeg_q75)
        control = {**control, "warning": shortcut_warning(overall["roc_auc"], control)}
        report["controls"]["trivial_statistics"] = control
        if control["warning"]:
            log.warning("%s: %s", frame.name, control["warning"])
    if keep_scores:
        report["scores"] = [float(s) for s in scores]
        report["image_ids"] = [str(i) for i in frame.table["image_id"]]
    log.info(
        "%s on %s: AUC %s, balanced accuracy %s, n=%d",
        detector.name,
        frame.name,
        _fmt(overall["roc_auc"]),
        _fmt(overall["balanced_accuracy"]),
        len(frame),
    )
    return report


def compare(
    detectors: dict[str, Detector],
    frames: dict[str, Frame],
    *,
    with_robustness: bool = True,
    keep_scores: bool = False,
    train: Frame | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Every detector on every frame (the same frozen frames for all): ``{frame: {detector: report}}``.

    What does not depend on the detector is computed once: the trivial-statistics control of a frame,
    and the features of detectors that share a frozen backbone (:func:`shared_features`).
    """
    results: dict[str, dict[str, dict[str, Any]]] = {}
    with shared_features(detectors.values()):
        for frame_name, frame in frames.items():
            control = None
            reports = results[frame_name] = {}
            for name, det in detectors.items():
                reports[name] = evaluate_detector(
                    det,
                    frame,
                    with_robustness=with_robustness,
                    keep_scores=keep_scores,
                    train=train,
                    control=control,
                )
                control = reports[name]["controls"].get("trivial_statistics", control)
    return results


def feature_folder(settings: Settings) -> Path:
    """The feature cache (training's too): evaluations keep frozen-backbone features there by image
    content (:func:`shared_features`), so the gate finds those of the training run's test report."""
    return Path(settings.home) / "cache" / FEATURE_CACHE


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
