"""Where serving keeps the bytes of review candidates, so the monitor can tell them from the log's own.

Serving decides which predictions are candidates (its settings ``serving.review_margin``: near the
threshold; ``serving.audit_rate``: a uniform audit sample) and says why in the log row's
``review_candidate`` (``near_threshold``, ``audit``). With ``serving.log_image_bytes`` off, a candidate's
bytes belong under ``review/candidates/<sha256>.<ext>`` (:func:`keep_candidate`), the row's
``image_key`` pointing there: the monitor copies the ones it queues into the queue and deletes the
others once their window is processed (:func:`is_candidate_key`), so an image is kept only while it is
(or may be) queued. Bytes anywhere else (``log_image_bytes``' copies) are never deleted by the monitor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tasks.storage import ObjectStore

CANDIDATES_PREFIX = "review/candidates"
NEAR_THRESHOLD, AUDIT = "near_threshold", "audit"


def keep_candidate(store: ObjectStore, data: bytes, ext: str) -> str:
    """Store a candidate's bytes (content-addressed); the key for the log row's ``image_key``."""
    return store.put_content(data, CANDIDATES_PREFIX, ext)


def is_candidate_key(key: str | None) -> bool:
    """Bytes kept only for review (deleted once not queued), not the log's own ``log_image_bytes`` copies."""
    return bool(key) and key.startswith(CANDIDATES_PREFIX + "/")
