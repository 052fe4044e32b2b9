"""Which predictions serving keeps the image of, for the review queue (``review`` in monitor.yaml).

Serving keeps no image bytes by default. For each prediction it asks :func:`review_candidate` (the
policy: :func:`tasks.monitor.config.load_review_policy`, read once at start):

* ``near_threshold`` — ``|p_fake - threshold| <= review.near_threshold``, kept with probability
  ``review.near_threshold_share``: the verdicts a label would most likely change;
* ``audit`` — any other prediction, with probability ``review.audit_share``: a uniform sample of
  traffic, whose labels estimate accuracy without the bias of choosing hard cases (and show what
  the model is confidently wrong about, which no score-based rule can find);
* ``None`` — the bytes are not kept.

The bytes of a candidate go to ``review/candidates/<sha256>.<ext>`` (:func:`keep_candidate`) and the
row's ``image_key`` points there; the monitor moves the ones it queues into the queue and deletes the
others once their window is processed, so an image is kept only while it is (or may be) queued.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tasks.monitor.config import ReviewPolicy
    from tasks.storage import ObjectStore

CANDIDATES_PREFIX = "review/candidates"
NEAR_THRESHOLD, AUDIT = "near_threshold", "audit"


def review_candidate(
    p_fake: float, threshold: float, policy: ReviewPolicy, draw: float | None = None
) -> str | None:
    """Why this prediction's image should be kept for review, or None. ``draw``: uniform in [0, 1)."""
    draw = random.random() if draw is None else draw
    if abs(p_fake - threshold) <= policy.near_threshold:
        return NEAR_THRESHOLD if draw < policy.near_threshold_share else None
    return AUDIT if draw < policy.audit_share else None


def keep_candidate(store: ObjectStore, data: bytes, ext: str) -> str:
    """Store a candidate's bytes (content-addressed); the key for the log row's ``image_key``."""
    return store.put_content(data, CANDIDATES_PREFIX, ext)


def is_candidate_key(key: str | None) -> bool:
    """Bytes kept only for review (deleted once not queued), not the log's own ``log_image_bytes`` copies."""
    return bool(key) and key.startswith(CANDIDATES_PREFIX + "/")
