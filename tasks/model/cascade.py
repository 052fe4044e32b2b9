"""Two detectors as one: the fast probe scores every image, the VLM looks at the uncertain part.

Production detection services use cascades: a cheap model answers the easy cases and an expensive one
the hard ones. Here the first stage is the probe family (CPU, ~15 ms per image) and the second the
VLM (GPU; it also writes a reason). An image whose first-stage P(fake) falls in the **band**
``[low, high)`` goes to the second stage, whose P(fake) then decides; every answer says which stage
decided. ``explain`` goes to the VLM when one is deployed. The probe's P(fake) is calibrated
(Platt scaling on validation), the VLM's is its Yes/No softmax: the two are not one scale, so each
answer is judged against the deciding stage's own threshold.

The band is chosen by inference tuning on validation data for a stated objective
(:func:`choose_band`): the least VLM load whose AUC is within ``max_auc_loss`` of the best of the
two stages alone, with at most ``max_share`` of the images sent on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

    from tasks.model.detector import Detector

FIRST, SECOND = "probe", "vlm"


@dataclass(frozen=True)
class Decision:
    """The cascade's answer for a batch: one entry per image."""

    p_fake: np.ndarray  # the deciding stage's P(fake)
    threshold: np.ndarray  # the deciding stage's threshold
    stage: list[str]  # "probe" | "vlm"
    embeddings: np.ndarray  # the first stage's embedding (one space for the monitor, whatever decided)
    first_p_fake: np.ndarray  # the first stage's P(fake), also where the second decided


class Cascade:
    """``first`` always; ``second`` (may be None) for first-stage scores in ``band``."""

    def __init__(
        self, first: Detector, second: Detector | None = None, band: tuple[float, float] | None = None
    ) -> None:
        self.first, self.second = first, second
        self.band = band if second is not None else None

    def decide(self, images: Sequence[Image.Image]) -> Decision:
        p, embeddings = self.first.score_and_embed(images)
        decided, thresholds = p.copy(), np.full(len(p), self.first.threshold)
        stage = [FIRST] * len(p)
        routed = self.routed(p)
        if routed.any():
            second = self.second.score([images[i] for i in np.flatnonzero(routed)])
            decided[routed], thresholds[routed] = second, self.second.threshold
            for i in np.flatnonzero(routed):
                stage[i] = SECOND
        return Decision(decided, thresholds, stage, embeddings, p)

    def routed(self, p_first: np.ndarray) -> np.ndarray:
        if self.band is None:
            return np.zeros(len(p_first), bool)
        low, high = self.band
        return (p_first >= low) & (p_first < high)

    def explainer(self) -> Detector:
        """The stage that writes reasons: the VLM when one is deployed."""
        return self.second or self.first

    def describe(self) -> dict[str, Any]:
        return {
            "stages": [self.first.describe(), *([self.second.describe()] if self.second else [])],
            "band": list(self.band) if self.band else None,
        }


def choose_band(
    labels: np.ndarray, first: np.ndarray, second: np.ndarray, *, max_share: float, max_auc_loss: float
) -> dict[str, Any]:
    """The band ``[low, high)`` of first-stage scores to send to the second stage, from validation scores
    of both stages on the same images: the smallest share of images whose cascade AUC is within
    ``max_auc_loss`` of the better stage alone, among bands sending at most ``max_share``. Bands are
    centred on the first stage's score quantiles; with none good enough, the best AUC within the share."""
    from sklearn.metrics import roc_auc_score

    labels, first, second = np.asarray(labels), np.asarray(first), np.asarray(second)
    target = max(roc_auc_score(labels, first), roc_auc_score(labels, second)) - max_auc_loss
    quantiles = np.quantile(first, np.linspace(0, 1, 41))
    candidates = []
    for i in range(len(quantiles)):
        for j in range(i + 1, len(quantiles)):
            low, high = float(quantiles[i]), float(quantiles[j])
            routed = (first >= low) & (first < high)
            share = float(routed.mean())
            if share > max_share:
                continue
            auc = float(roc_auc_score(labels, np.where(routed, second, first)))
            candidates.append({"band": [low, high], "share": share, "auc": auc})
    first_only = {"band": None, "share": 0.0, "auc": float(roc_auc_score(labels, first))}
    good = [c for c in candidates if c["auc"] >= target]
    if good:
        best = min(good, key=lambda c: (c["share"], -c["auc"]))
    else:
        best = max([first_only, *candidates], key=lambda c: (c["auc"], -c["share"]))
    return {
        **best,
        "target_auc": target,
        "first_auc": first_only["auc"],
        "second_auc": float(roc_auc_score(labels, second)),
    }
