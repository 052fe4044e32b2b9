"""The Review page and its JSON API: the waiting items, each decided real / fake / skip by a person.

The page lists the queue (:mod:`tasks.review.queue`) in review order, each item with a thumbnail (a
PNG the server makes from the queued bytes, never the bytes themselves), P(fake) against the
threshold, the model version, source, why it is there and any feedback claims, and three buttons.
A decision goes through :func:`tasks.review.queue.decide` with the reviewer's Airflow user name;
the page shows the open drift campaigns and the latest decisions (the audit trail). The JSON API
(``GET /vigil/api/review/queue``, ``POST /vigil/api/review/<item>/decision``,
``GET /vigil/api/review/decisions``) answers the same data and calls the same function.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tasks.review import queue
from tasks.ui import render_page

if TYPE_CHECKING:
    from tasks.settings import ImageSettings
    from tasks.storage import ObjectStore

LISTED_ITEMS = 60
LISTED_DECISIONS = 20
REASON_WORDS = {
    "claim": "feedback claim disagrees with the model",
    "near_threshold": "near the threshold",
    "drift": "drifting window",
    "audit": "random audit sample",
}


def review_page(
    store: ObjectStore,
    base: str,
    *,
    can_decide: bool,
    user: str,
    decided: str | None = None,
    error: str | None = None,
) -> str:
    items = queue.list_items(store)
    waiting = {item.id for item in items}
    campaigns = [
        {**c, "waiting": sum(1 for i in c.get("items", []) if i in waiting)}
        for c in queue.recent_campaigns(store)
    ]
    notice = None
    if decided:
        try:
            notice = store.read_json(queue.decided_key(decided))
        except (FileNotFoundError, queue.ReviewError):
            notice = None
    counts: dict[str, int] = {}
    for item in items:
        for reason in item.reasons:
            counts[reason] = counts.get(reason, 0) + 1
    return render_page(
        "review.html",
        base=base,
        nav="review",
        title="Review",
        items=[item.record for item in items[:LISTED_ITEMS]],
        total=len(items),
        counts=counts,
        reason_words=REASON_WORDS,
        campaigns=[c for c in campaigns if c["waiting"]],
        decisions=queue.recent_decisions(store, limit=LISTED_DECISIONS),
        notice=notice,
        error=error,
        can_decide=can_decide,
        user=user,
    )


def item_thumbnail(store: ObjectStore, policy: ImageSettings, item_id: str) -> bytes:
    """A small PNG of a waiting item's image; FileNotFoundError when there is none to show."""
    from tasks.ui.quality import thumbnail

    try:
        data = queue.item_image(store, item_id)
    except queue.ReviewError as exc:
        raise FileNotFoundError(str(exc)) from None
    if len(data) > policy.max_file_bytes:
        raise FileNotFoundError("no preview: the file is over images.max_file_bytes")
    return thumbnail(data, policy, side=192)


def queue_json(store: ObjectStore) -> dict[str, Any]:
    items = [item.public() for item in queue.list_items(store)]
    return {"items": items, "count": len(items)}


def decisions_json(store: ObjectStore, days: int) -> dict[str, Any]:
    records = queue.recent_decisions(store, days=max(1, min(days, 90)))
    keep = (
        "item_id",
        "decision",
        "label",
        "reviewer",
        "decided_at",
        "verdict",
        "p_fake",
        "model_version",
        "reasons",
        "inbox_key",
        "correct",
    )
    return {"decisions": [{k: r.get(k) for k in keep} for r in records]}
