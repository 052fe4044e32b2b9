"""The review queue in the object store, and the one function that records a reviewer's decision.

Layout (store keys):

* ``review/queue/<item_id>.json`` and ``review/queue/<item_id>.<ext>`` — a waiting item and its image
  (a copy: the source of the bytes may go away). ``item_id`` is the prediction id. An item has one or
  more ``reasons``: ``claim`` (a feedback claim that disagrees with the model), ``near_threshold``,
  ``drift`` (a drift alert's campaign), ``audit`` (the uniform sample); the page lists them in that
  order, closest to the threshold first within ``near_threshold``.
* ``review/decided/<item_id>.json`` — the decision, created exclusively: of two reviewers deciding the
  same item at once exactly one wins, the other is told who decided what (409).
* ``review/decisions/date=YYYY-MM-DD/<item_id>.json`` — the same record by day: the audit trail, and
  what the monitor counts as measured accuracy.
* ``review/campaigns/<alert_id>.json`` — a drift alert's review campaign (which items it added).

A decision is ``real``, ``fake`` or ``skip`` (cannot tell: no label). ``real``/``fake`` put the image in
the inbox as a trusted label (:func:`tasks.review.labels.write_trusted_label`); every decision closes
the item's pending feedback claims, deletes the queued image and records the reviewer's user name and
the time. A decision interrupted half way is completed by the same reviewer sending it again, or by
the next monitor run (:func:`complete_decided`).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from tasks.errors import PermanentError
from tasks.images import EXTENSIONS, sniff_format
from tasks.review.claims import close_claims
from tasks.review.labels import LABEL_DIRS, write_trusted_label

if TYPE_CHECKING:
    from tasks.monitor.config import ReviewPolicy
    from tasks.storage import ObjectStore

log = logging.getLogger(__name__)

QUEUE_PREFIX = "review/queue"
DECIDED_PREFIX = "review/decided"
DECISIONS_PREFIX = "review/decisions"
CAMPAIGNS_PREFIX = "review/campaigns"
PRIORITY = {"claim": 0, "near_threshold": 1, "drift": 2, "audit": 3}
DECISIONS = ("real", "fake", "skip")
MAX_REVIEWER = 200
_ITEM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


class ReviewError(PermanentError):
    """A decision that cannot be recorded; ``status`` is the HTTP status an API answers with."""

    status = 400


class UnknownItem(ReviewError):
    status = 404


class AlreadyDecided(ReviewError):
    status = 409

    def __init__(self, message: str, record: dict[str, Any]) -> None:
        super().__init__(message)
        self.record = record


class BadDecision(ReviewError):
    status = 422


def check_item_id(item_id: str) -> str:
    if not isinstance(item_id, str) or not _ITEM_ID.match(item_id):
        raise UnknownItem(f"invalid item id {item_id!r}: letters, digits, '_' and '-' only")
    return item_id


def item_key(item_id: str) -> str:
    return f"{QUEUE_PREFIX}/{check_item_id(item_id)}.json"


def decided_key(item_id: str) -> str:
    return f"{DECIDED_PREFIX}/{check_item_id(item_id)}.json"


@dataclass(frozen=True)
class Item:
    """A waiting item, as the page and the API show it."""

    record: dict[str, Any]

    @property
    def id(self) -> str:
        return self.record["item_id"]

    @property
    def reasons(self) -> list[str]:
        return list(self.record.get("reasons") or [])

    @property
    def priority(self) -> int:
        return min((PRIORITY.get(r, len(PRIORITY)) for r in self.reasons), default=len(PRIORITY))

    def sort_key(self) -> tuple:
        distance = abs(float(self.record.get("p_fake") or 0) - float(self.record.get("threshold") or 0.5))
        return (
            self.priority,
            distance if self.priority == PRIORITY["near_threshold"] else 0,
            self.record.get("queued_at", ""),
            self.id,
        )

    def public(self) -> dict[str, Any]:
        """What the JSON API answers (no store keys)."""
        keep = (
            "item_id",
            "prediction_id",
            "reasons",
            "p_fake",
            "threshold",
            "verdict",
            "model_name",
            "model_version",
            "source",
            "predicted_at",
            "queued_at",
            "window_id",
            "campaign",
            "claims",
            "image_sha256",
        )
        return {k: self.record.get(k) for k in keep}


def list_items(store: ObjectStore) -> list[Item]:
    """Every waiting item, in review order (one listing of the queue, one read per item)."""
    items = []
    for key in store.list(QUEUE_PREFIX):
        if key.endswith(".json"):
            try:
                items.append(Item(store.read_json(key)))
            except (FileNotFoundError, ValueError):
                continue  # decided (or expired) between the listing and the read
    return sorted(items, key=Item.sort_key)


def read_item(store: ObjectStore, item_id: str) -> Item:
    try:
        return Item(store.read_json(item_key(item_id)))
    except FileNotFoundError:
        raise UnknownItem(f"no item {item_id} in the review queue") from None


def item_image(store: ObjectStore, item_id: str) -> bytes:
    """The queued image's bytes (FileNotFoundError when the item is gone)."""
    item = read_item(store, item_id)
    return store.read_bytes(item.record["image"])


# -- filling ------------------------------------------------------------------------------------


def enqueue(
    store: ObjectStore, candidates: list[dict[str, Any]], policy: ReviewPolicy, now: datetime | None = None
) -> dict[str, int]:
    """Add candidates (each: ``item_id``, ``reasons``, ``image_key`` of its bytes, and the prediction's
    fields) in priority order; an item already waiting gains the new reasons and claims. When the queue
    is full, a candidate replaces the lowest-priority item only if it ranks higher. Counts by outcome."""
    now = now or datetime.now(UTC)
    waiting = {item.id: item for item in list_items(store)}
    counts = {"queued": 0, "merged": 0, "decided": 0, "full": 0, "no_image": 0, "evicted": 0}
    for candidate in sorted(candidates, key=lambda c: Item(c).sort_key()):
        item_id = check_item_id(candidate["item_id"])
        if item_id in waiting:
            merged = _merge(waiting[item_id].record, candidate)
            if merged != waiting[item_id].record:
                store.write_json(item_key(item_id), merged)
                waiting[item_id] = Item(merged)
            counts["merged"] += 1
            continue
        if store.exists(decided_key(item_id)):
            counts["decided"] += 1
            continue
        new = Item(candidate)
        if len(waiting) >= policy.queue_size:
            worst = max(waiting.values(), key=lambda i: (i.priority, i.record.get("queued_at", "")))
            if new.priority >= worst.priority:
                counts["full"] += 1
                continue
            remove(store, worst.id)
            del waiting[worst.id]
            counts["evicted"] += 1
        try:
            data = store.read_bytes(candidate["image_key"])
        except FileNotFoundError:
            counts["no_image"] += 1
            continue
        ext = EXTENSIONS.get(sniff_format(data) or "", "bin")
        image = store.write_bytes(f"{QUEUE_PREFIX}/{item_id}.{ext}", data)
        record = {
            **{k: v for k, v in candidate.items() if k != "image_key"},
            "image": image,
            "queued_at": now.isoformat(timespec="seconds"),
        }
        store.write_json(item_key(item_id), record)
        waiting[item_id] = Item(record)
        counts["queued"] += 1
    return counts


def _merge(record: dict[str, Any], candidate: dict[str, Any]) -> dict[str, Any]:
    reasons = list(dict.fromkeys([*(record.get("reasons") or []), *(candidate.get("reasons") or [])]))
    claims = list(record.get("claims") or [])
    for claim in candidate.get("claims") or []:
        if claim not in claims:
            claims.append(claim)
    merged = {**record, "reasons": reasons, "claims": claims}
    if candidate.get("campaign") and not record.get("campaign"):
        merged["campaign"] = candidate["campaign"]
    return merged


def remove(store: ObjectStore, item_id: str) -> None:
    """Drop a waiting item and its image (decided, expired or evicted)."""
    try:
        record = store.read_json(item_key(item_id))
    except FileNotFoundError:
        return
    if record.get("image"):
        store.delete(record["image"])
    store.delete(item_key(item_id))


def expire(store: ObjectStore, expire_days: int, now: datetime | None = None) -> list[str]:
    """Remove items nobody decided within ``expire_days``; their ids."""
    cutoff = ((now or datetime.now(UTC)) - timedelta(days=expire_days)).isoformat(timespec="seconds")
    gone = [item.id for item in list_items(store) if item.record.get("queued_at", "") < cutoff]
    for item_id in gone:
        remove(store, item_id)
    return gone


# -- deciding -----------------------------------------------------------------------------------


def decide(
    store: ObjectStore, inbox: ObjectStore, item_id: str, decision: str, reviewer: str
) -> dict[str, Any]:
    """Record ``reviewer``'s ``decision`` (real, fake or skip) on a waiting item; the decision record.

    Raises :class:`BadDecision` (422), :class:`UnknownItem` (404) or :class:`AlreadyDecided` (409).
    """
    if decision not in DECISIONS:
        raise BadDecision(f"label {decision!r}: one of {', '.join(DECISIONS)}")
    reviewer = (reviewer or "").strip()
    if not reviewer or len(reviewer) > MAX_REVIEWER:
        raise BadDecision("a decision needs the reviewer's user name")
    check_item_id(item_id)
    try:
        item = read_item(store, item_id)
    except UnknownItem:
        existing = _decided(store, item_id)
        if existing is None:
            raise
        raise AlreadyDecided(_already(existing), existing) from None
    record = _decision_record(item, decision, reviewer)
    try:
        store.write_bytes(
            decided_key(item_id), json.dumps(record, indent=2, sort_keys=True).encode(), exclusive=True
        )
    except FileExistsError:
        existing = _decided(store, item_id) or {}
        if existing.get("reviewer") != reviewer or existing.get("decision") != decision:
            raise AlreadyDecided(_already(existing), existing) from None
        record = existing  # the same decision again: finish what an interrupted call started
    _complete(store, inbox, item, record)
    log.info(
        "review: %s decided %s on %s (%s; model said %s at P(fake)=%.3f)",
        reviewer,
        decision,
        item_id,
        "+".join(item.reasons),
        item.record.get("verdict"),
        float(item.record.get("p_fake") or 0),
    )
    return record


def _decision_record(item: Item, decision: str, reviewer: str) -> dict[str, Any]:
    label = None if decision == "skip" else decision
    ext = item.record["image"].rsplit(".", 1)[-1]
    return {
        **{k: v for k, v in item.record.items() if k != "image"},
        "decision": decision,
        "label": label,
        "correct": None if label is None else label == item.record.get("verdict"),
        "reviewer": reviewer,
        "decided_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "inbox_key": None if label is None else f"review/{LABEL_DIRS[label]}/{item.id}.{ext}",
    }


def _complete(store: ObjectStore, inbox: ObjectStore, item: Item, record: dict[str, Any]) -> None:
    """Everything after the decision record, idempotently: label, dated copy, claims, queue entry."""
    if record["label"] is not None:
        data = store.read_bytes(item.record["image"])
        write_trusted_label(inbox, item.id, record["label"], data, item.record["image"].rsplit(".", 1)[-1])
    store.write_json(f"{DECISIONS_PREFIX}/date={record['decided_at'][:10]}/{item.id}.json", record)
    close_claims(store, item.record.get("prediction_id") or item.id, record)
    remove(store, item.id)


def _decided(store: ObjectStore, item_id: str) -> dict[str, Any] | None:
    try:
        return store.read_json(decided_key(item_id))
    except FileNotFoundError:
        return None


def _already(record: dict[str, Any]) -> str:
    return (
        f"item {record.get('item_id')} was already decided: {record.get('decision')} by "
        f"{record.get('reviewer')} at {record.get('decided_at')}"
    )


def complete_decided(store: ObjectStore, inbox: ObjectStore) -> list[str]:
    """Finish decisions whose item is still waiting (a decision interrupted half way); their ids."""
    done = []
    for item in list_items(store):
        record = _decided(store, item.id)
        if record is not None:
            _complete(store, inbox, item, record)
            done.append(item.id)
    return done


def decisions_of_day(store: ObjectStore, day: str) -> list[str]:
    """Keys of the decision records of ``day`` (YYYY-MM-DD)."""
    return [k for k in store.list(f"{DECISIONS_PREFIX}/date={day}/") if k.endswith(".json")]


def recent_decisions(store: ObjectStore, days: int = 7, limit: int = 200) -> list[dict[str, Any]]:
    """The newest decision records of the last ``days`` days, newest first."""
    today = datetime.now(UTC).date()
    records: list[dict[str, Any]] = []
    for back in range(days):
        for key in decisions_of_day(store, (today - timedelta(days=back)).isoformat()):
            try:
                records.append(store.read_json(key))
            except (FileNotFoundError, ValueError):
                continue
        if len(records) >= limit:
            break
    return sorted(records, key=lambda r: r.get("decided_at", ""), reverse=True)[:limit]


# -- campaigns ----------------------------------------------------------------------------------


def open_campaign(store: ObjectStore, alert: dict[str, Any], item_ids: list[str]) -> dict[str, Any]:
    """Record a drift alert's review campaign (what it asked people to look at)."""
    campaign = {
        "alert_id": alert["alert_id"],
        "window_id": alert["window_id"],
        "group": alert["group"],
        "reason": alert["reason"],
        "opened_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "items": item_ids,
    }
    store.write_json(f"{CAMPAIGNS_PREFIX}/{alert['alert_id']}.json", campaign)
    return campaign


def recent_campaigns(store: ObjectStore, limit: int = 10) -> list[dict[str, Any]]:
    keys = sorted((k for k in store.list(CAMPAIGNS_PREFIX) if k.endswith(".json")), reverse=True)[:limit]
    campaigns = []
    for key in keys:
        try:
            campaigns.append(store.read_json(key))
        except (FileNotFoundError, ValueError):
            continue
    return sorted(campaigns, key=lambda c: c.get("opened_at", ""), reverse=True)
