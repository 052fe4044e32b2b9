"""The review queue on both store backends: order, capacity, the one decision function and its audit trail."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from tasks.monitor.config import ReviewPolicy
from tasks.review import queue
from tasks.review.candidates import keep_candidate
from tests.helpers.monitor import png


def candidate(store, item_id: str, reason: str, p_fake: float, colour=(200, 30, 30), **extra) -> dict:
    return {
        "item_id": item_id,
        "prediction_id": item_id,
        "reasons": [reason],
        "image_key": keep_candidate(store, png(colour), "png"),
        "p_fake": p_fake,
        "threshold": 0.5,
        "verdict": "fake" if p_fake >= 0.5 else "real",
        "model_name": "vigil-detector",
        "model_version": "3",
        "source": "web",
        "predicted_at": "2026-01-01T00:00:00.000+00:00",
        "image_sha256": "0" * 64,
        "window_id": None,
        "campaign": None,
        "claims": [],
        **extra,
    }


@pytest.fixture
def inbox(tmp_path):
    from tasks.storage import ObjectStore

    return ObjectStore((tmp_path / "inbox").as_uri())


def test_items_wait_in_review_order_and_a_full_queue_keeps_the_ones_that_matter(store):
    policy = ReviewPolicy(queue_size=4)
    counts = queue.enqueue(
        store,
        [
            candidate(store, "audit1", "audit", 0.02, (1, 2, 3)),
            candidate(store, "near_far", "near_threshold", 0.59, (4, 5, 6)),
            candidate(store, "near_close", "near_threshold", 0.52, (7, 8, 9)),
            candidate(store, "drift1", "drift", 0.3, (10, 11, 12)),
        ],
        policy,
    )
    assert counts["queued"] == 4
    assert [i.id for i in queue.list_items(store)] == ["near_close", "near_far", "drift1", "audit1"]
    # Full: a claim pushes out the audit item; another audit item stays outside.
    counts = queue.enqueue(
        store,
        [
            candidate(store, "claim1", "claim", 0.1, (13, 14, 15)),
            candidate(store, "audit2", "audit", 0.9, (16, 17, 18)),
        ],
        policy,
    )
    assert counts["evicted"] == 1 and counts["full"] == 1
    assert [i.id for i in queue.list_items(store)] == ["claim1", "near_close", "near_far", "drift1"]
    assert not store.list("review/queue/audit1")  # its image went with it
    # The same prediction again gains the reason instead of a second item.
    queue.enqueue(store, [candidate(store, "drift1", "audit", 0.3, (10, 11, 12))], policy)
    assert queue.read_item(store, "drift1").reasons == ["drift", "audit"]


def test_a_decision_labels_the_image_in_the_inbox_and_is_recorded_with_the_reviewer(store, inbox):
    queue.enqueue(store, [candidate(store, "p1", "near_threshold", 0.55)], ReviewPolicy())
    data = queue.item_image(store, "p1")
    record = queue.decide(store, inbox, "p1", "real", "alice")

    assert inbox.read_bytes("review/0_real/p1.png") == data
    assert record["reviewer"] == "alice" and record["decision"] == "real" and record["label"] == "real"
    assert record["correct"] is False  # the model said fake
    assert record["inbox_key"] == "review/0_real/p1.png"
    assert datetime.fromisoformat(record["decided_at"]) > datetime.now(UTC) - timedelta(minutes=1)
    assert store.read_json("review/decided/p1.json") == record
    assert store.read_json(f"review/decisions/date={record['decided_at'][:10]}/p1.json") == record
    assert queue.list_items(store) == [] and not store.list("review/queue")
    assert queue.recent_decisions(store)[0]["item_id"] == "p1"

    # Decided is decided: another reviewer learns who decided what; the same decision again is harmless.
    with pytest.raises(queue.AlreadyDecided, match="real by alice"):
        queue.decide(store, inbox, "p1", "fake", "bob")
    assert not inbox.exists("review/1_fake/p1.png")


def test_skip_records_the_decision_without_a_label(store, inbox):
    queue.enqueue(store, [candidate(store, "p2", "audit", 0.1)], ReviewPolicy())
    record = queue.decide(store, inbox, "p2", "skip", "carol")
    assert record["label"] is None and record["inbox_key"] is None and record["correct"] is None
    assert inbox.list("review") == [] and queue.list_items(store) == []


def test_bad_decisions_are_refused_with_a_reason(store, inbox):
    queue.enqueue(store, [candidate(store, "p3", "audit", 0.1)], ReviewPolicy())
    with pytest.raises(queue.BadDecision, match="real, fake, skip"):
        queue.decide(store, inbox, "p3", "maybe", "alice")
    with pytest.raises(queue.BadDecision, match="user name"):
        queue.decide(store, inbox, "p3", "real", "  ")
    with pytest.raises(queue.UnknownItem, match="no item"):
        queue.decide(store, inbox, "nope", "real", "alice")
    with pytest.raises(queue.UnknownItem, match="invalid item id"):
        queue.decide(store, inbox, "../p3", "real", "alice")
    assert [i.id for i in queue.list_items(store)] == ["p3"]  # nothing happened to it


def test_two_reviewers_at_once_exactly_one_decides(store, inbox):
    queue.enqueue(store, [candidate(store, "p4", "claim", 0.9)], ReviewPolicy())
    barrier, outcomes = threading.Barrier(2), {}

    def review(name: str, label: str) -> None:
        barrier.wait()
        try:
            outcomes[name] = queue.decide(store, inbox, "p4", label, name)["decision"]
        except queue.AlreadyDecided as exc:
            outcomes[name] = exc.record["reviewer"]

    threads = [threading.Thread(target=review, args=a) for a in (("alice", "real"), ("bob", "fake"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winner = store.read_json("review/decided/p4.json")["reviewer"]
    loser = "bob" if winner == "alice" else "alice"
    assert outcomes[loser] == winner  # the loser was told who decided
    label = store.read_json("review/decided/p4.json")["label"]
    assert inbox.list("review") == [f"review/{'0_real' if label == 'real' else '1_fake'}/p4.png"]


def test_an_interrupted_decision_is_completed_later(store, inbox):
    import json

    queue.enqueue(store, [candidate(store, "p5", "near_threshold", 0.45)], ReviewPolicy())
    item = queue.read_item(store, "p5")
    record = queue._decision_record(item, "fake", "dave")
    store.write_bytes(queue.decided_key("p5"), json.dumps(record).encode(), exclusive=True)  # then it died
    assert [i.id for i in queue.list_items(store)] == ["p5"] and inbox.list("review") == []

    assert queue.decide(store, inbox, "p5", "fake", "dave")["decided_at"] == record["decided_at"]
    assert inbox.list("review") == ["review/1_fake/p5.png"] and queue.list_items(store) == []

    queue.enqueue(store, [candidate(store, "p6", "near_threshold", 0.45)], ReviewPolicy())
    record = queue._decision_record(queue.read_item(store, "p6"), "real", "erin")
    store.write_bytes(queue.decided_key("p6"), json.dumps(record).encode(), exclusive=True)
    assert queue.complete_decided(store, inbox) == ["p6"]
    assert inbox.exists("review/0_real/p6.png") and queue.list_items(store) == []


def test_deciding_closes_the_predictions_feedback_claims(store, inbox):
    claim = {
        "prediction_id": "p7",
        "claimed_label": "synthetic",
        "time": "2026-01-01T00:00:00.000+00:00",
        "client": "ip:abc",
        "status": "pending",
        "image_key": "claims/p7/synthetic.png",
    }
    store.write_bytes("claims/p7/synthetic.png", png((9, 9, 9)))
    store.write_json("claims/p7/synthetic.json", claim)
    queue.enqueue(
        store, [candidate(store, "p7", "claim", 0.2, image_key="claims/p7/synthetic.png")], ReviewPolicy()
    )
    queue.decide(store, inbox, "p7", "fake", "frank")
    closed = store.read_json("claims/p7/synthetic.json")
    assert (
        closed["status"] == "reviewed"
        and closed["review_decision"] == "fake"
        and closed["decided_by"] == "frank"
    )
    assert not store.exists("claims/p7/synthetic.png")


def test_items_nobody_decided_expire(store):
    old = datetime.now(UTC) - timedelta(days=20)
    queue.enqueue(store, [candidate(store, "old", "audit", 0.1)], ReviewPolicy(), now=old)
    queue.enqueue(store, [candidate(store, "new", "audit", 0.2, (5, 5, 5))], ReviewPolicy())
    assert queue.expire(store, 14) == ["old"]
    assert [i.id for i in queue.list_items(store)] == ["new"] and not store.list("review/queue/old")
