"""Serving's feedback records, as the review queue and the monitor read them.

The format is serving's (:mod:`tasks.serve.records`); this module is the only reader, so a change of
that format is a change here:

* **claims** — untrusted feedback: ``claims/<prediction_id>/<claimed_label>.json`` with
  ``prediction_id, claimed_label`` (``synthetic``/``authentic``), ``time, client, model_name,
  model_version, p_fake, predicted, predicted_at, image_sha256, status`` (``pending`` until decided)
  and ``image_key`` (the image bytes beside it, kept while it awaits review);
* **trusted feedback** — labels sent with a ``relabel`` token: ``feedback/date=YYYY-MM-DD/
  <prediction_id>.json`` with the claim's fields, ``label``, ``decided_by`` and ``decided_at``.

A claim that disagrees with the model's verdict is worth a person's look; one that agrees is not.
Once a reviewer decides the prediction, :func:`close_claims` marks its pending claims ``reviewed``
(with the decision) and deletes their image copies.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tasks.storage import ObjectStore

log = logging.getLogger(__name__)

CLAIMS_PREFIX = "claims"
FEEDBACK_PREFIX = "feedback"
SERVING_LABELS = {"synthetic": "fake", "authentic": "real"}  # serving's words -> the dataset's


def new_claims(store: ObjectStore, since: float) -> list[tuple[float, dict[str, Any]]]:
    """(modification time, record) of the claims written or changed at or after ``since`` - 1 s, oldest first.

    One listing of ``claims/`` (keys and times only); only those records are read. The second of overlap
    reads again what was written in the cursor's own second: callers dedupe by prediction.
    """
    try:
        found = store.fs.find(f"{store.root}/{CLAIMS_PREFIX}", detail=True)
    except FileNotFoundError:
        return []
    root = store.root.rstrip("/") + "/"
    fresh = sorted(
        (_timestamp(info), path)
        for path, info in found.items()
        if path.endswith(".json") and info.get("type") != "directory" and _timestamp(info) >= since - 1
    )
    claims = []
    for modified, path in fresh:
        key = path[len(root) :] if path.startswith(root) else path
        try:
            claims.append((modified, {**store.read_json(key), "key": key}))
        except (FileNotFoundError, ValueError):
            continue
    return claims


def disagrees(claim: dict[str, Any]) -> bool:
    """A pending claim whose label is not the model's verdict."""
    return claim.get("status") == "pending" and claim.get("claimed_label") != claim.get("predicted")


def claims_of(store: ObjectStore, prediction_id: str) -> list[dict[str, Any]]:
    claims = []
    for key in store.list(f"{CLAIMS_PREFIX}/{prediction_id}"):
        if key.endswith(".json"):
            try:
                claims.append({**store.read_json(key), "key": key})
            except (FileNotFoundError, ValueError):
                continue
    return claims


def close_claims(store: ObjectStore, prediction_id: str, decision: dict[str, Any]) -> int:
    """Mark the prediction's pending claims reviewed with the decision; drop their image copies."""
    closed = 0
    for claim in claims_of(store, prediction_id):
        if claim.get("status") != "pending":
            continue
        key = claim.pop("key")
        store.write_json(
            key,
            {
                **claim,
                "status": "reviewed",
                "review_decision": decision["decision"],
                "decided_by": decision["reviewer"],
                "decided_at": decision["decided_at"],
            },
        )
        if claim.get("image_key"):
            store.delete(claim["image_key"])
        closed += 1
    return closed


def trusted_feedback(store: ObjectStore, day: str) -> list[dict[str, Any]]:
    """The trusted feedback labels recorded on ``day`` (YYYY-MM-DD), each with its key."""
    records = []
    for key in store.list(f"{FEEDBACK_PREFIX}/date={day}/"):
        if key.endswith(".json"):
            try:
                records.append({**store.read_json(key), "key": key})
            except (FileNotFoundError, ValueError):
                continue
    return records


def _timestamp(info: dict[str, Any]) -> float:
    value = info.get("mtime") or info.get("LastModified") or info.get("created") or 0
    if isinstance(value, datetime):
        return value.replace(tzinfo=value.tzinfo or UTC).timestamp()
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0
