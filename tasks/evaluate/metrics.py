"""Binary detection metrics on P(fake) scores; every metric that is undefined for the data is None.

Label convention: 1 = fake (positive), 0 = real. A slice with one class still reports what is
defined (accuracy, recall or true-negative rate, calibration) and None for ROC AUC and friends,
so a small slice never crashes a report.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def threshold_at_fpr(labels: np.ndarray, scores: np.ndarray, target_fpr: float) -> float:
    """The lowest threshold that flags at most ``target_fpr`` of the real images (``p >= t`` means fake).

    With no real image the conventional 0.5 is returned.
    """
    real = np.sort(np.asarray(scores, dtype=np.float64)[np.asarray(labels) == 0])[::-1]
    if real.size == 0:
        return 0.5
    allowed = int(np.floor(target_fpr * real.size + 1e-9))  # real images allowed at or above the threshold
    if allowed >= real.size:
        return float(real[-1])
    # Just above the (allowed+1)-th highest real score: exactly `allowed` reals (ties excluded) stay above.
    return float(min(1.0, np.nextafter(real[allowed], np.inf)))


def expected_calibration_error(labels: np.ndarray, scores: np.ndarray, bins: int = 10) -> float | None:
    """Weighted mean |accuracy - confidence| of P(fake) over equal-width bins."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    if labels.size == 0:
        return None
    idx = np.minimum((scores * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            ece += mask.mean() * abs(labels[mask].mean() - scores[mask].mean())
    return float(ece)


def reliability_bins(labels: np.ndarray, scores: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Per bin: mean score, observed fake share and count (the reliability diagram's data)."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    idx = np.minimum((scores * bins).astype(int), bins - 1)
    return [
        {
            "bin_low": b / bins,
            "bin_high": (b + 1) / bins,
            "mean_score": float(scores[idx == b].mean()),
            "fake_share": float(labels[idx == b].mean()),
            "count": int((idx == b).sum()),
        }
        for b in range(bins)
        if (idx == b).any()
    ]


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den else None


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """Accuracy, balanced accuracy, ROC AUC, average precision, precision/recall/F1 at the threshold,
    true-negative and false-positive rates, expected calibration error, confusion matrix and counts."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    predicted = (scores >= threshold).astype(int)
    tp = int(((predicted == 1) & (labels == 1)).sum())
    tn = int(((predicted == 0) & (labels == 0)).sum())
    fp = int(((predicted == 1) & (labels == 0)).sum())
    fn = int(((predicted == 0) & (labels == 1)).sum())
    n_fake, n_real = tp + fn, tn + fp
    both = n_fake > 0 and n_real > 0
    recall, tnr = _ratio(tp, n_fake), _ratio(tn, n_real)
    precision = _ratio(tp, tp + fp)
    f1 = None if n_fake == 0 else (2 * tp / (2 * tp + fp + fn))
    return {
        "n": int(labels.size),
        "n_real": n_real,
        "n_fake": n_fake,
        "threshold": float(threshold),
        "accuracy": _ratio(tp + tn, labels.size),
        "balanced_accuracy": (recall + tnr) / 2 if both else None,
        "roc_auc": float(roc_auc_score(labels, scores)) if both else None,
        "average_precision": float(average_precision_score(labels, scores)) if both else None,
        "precision": precision,
        "recall": recall,
        "f1": None if f1 is None else float(f1),
        "tnr": tnr,
        "fpr": None if tnr is None else 1.0 - tnr,
        "ece": expected_calibration_error(labels, scores),
        "confusion": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
    }
