"""Accuracy without labels and with them.

* **Estimated** (no labels): confidence-based performance estimation (CBPE). For a calibrated
  P(fake) ``p`` and the verdict ``fake`` iff ``p >= t``, the verdict is right with probability ``p``
  when it says fake and ``1 - p`` when it says real; the window's expected accuracy is the mean of
  that. It is exact while the calibration holds, and it moves when the scores move (towards the
  threshold: less sure, lower estimate). It cannot see a confident mistake (a new generator scored
  0.02): that is what labels and the embedding test are for.
* **Measured** (trusted labels: review decisions and trusted feedback): the share of right verdicts
  with a Wilson score interval, per label set, because the sets are not sampled alike: ``audit``
  items are a uniform sample of traffic (an unbiased estimate); near-threshold, claimed and drifting
  items are chosen *because* they are hard, so their accuracy is lower by design.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np


def expected_accuracy(p_fake: np.ndarray, threshold: np.ndarray | float) -> float | None:
    """CBPE: the mean probability that each verdict is right, given calibrated scores."""
    p = np.asarray(p_fake, dtype=float)
    if not len(p):
        return None
    return float(np.mean(np.where(p >= threshold, p, 1.0 - p)))


def wilson_interval(right: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """The Wilson score interval of ``right / n`` (None without labels)."""
    if n <= 0:
        return None
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    share = right / n
    denominator = 1 + z * z / n
    centre = (share + z * z / (2 * n)) / denominator
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def measured(right: int, n: int, confidence: float = 0.95) -> dict[str, Any]:
    """``{"n", "right", "accuracy", "low", "high"}`` (accuracy and bounds None without labels)."""
    interval = wilson_interval(right, n, confidence)
    return {
        "n": n,
        "right": right,
        "accuracy": round(right / n, 5) if n else None,
        "low": round(interval[0], 5) if interval else None,
        "high": round(interval[1], 5) if interval else None,
    }


def accuracy_drop(
    counts: dict[str, list[int]],
    sets: tuple[str, ...],
    reference_accuracy: float | None,
    *,
    min_labels: int,
    max_drop: float,
    confidence: float,
) -> dict[str, Any]:
    """Whether labeled traffic shows a real drop: the interval's upper end below reference - ``max_drop``.

    ``counts``: label set -> ``[n, right]``. A drop needs at least ``min_labels`` labels in ``sets``; the
    rule asks the whole interval to sit below the bound, so a handful of unlucky labels cannot retrain.
    """
    n = sum(counts.get(s, [0, 0])[0] for s in sets)
    right = sum(counts.get(s, [0, 0])[1] for s in sets)
    result = {**measured(right, n, confidence), "sets": list(sets), "reference_accuracy": reference_accuracy}
    if reference_accuracy is None:
        return {**result, "dropped": False, "reason": "the reference has no measured accuracy"}
    bound = reference_accuracy - max_drop
    result["bound"] = round(bound, 5)
    if n < min_labels:
        return {
            **result,
            "dropped": False,
            "reason": f"{n} labels from {', '.join(sets)}; {min_labels} needed",
        }
    dropped = result["high"] < bound
    relation = "below" if dropped else "not below"
    return {
        **result,
        "dropped": dropped,
        "reason": (
            f"measured accuracy {result['accuracy']:.3f} on {n} labels ({', '.join(sets)}), "
            f"{confidence:.0%} interval [{result['low']:.3f}, {result['high']:.3f}]: upper end {relation} "
            f"the reference's {reference_accuracy:.3f} - {max_drop} = {bound:.3f}"
        ),
    }
