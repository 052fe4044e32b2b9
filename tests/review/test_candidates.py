"""Which images serving keeps for review: near the threshold, a random audit share, nothing else."""

from __future__ import annotations

import random

from tasks.monitor.config import ReviewPolicy
from tasks.review.candidates import is_candidate_key, keep_candidate, review_candidate


def test_near_the_threshold_and_the_audit_share_by_the_policy():
    policy = ReviewPolicy(near_threshold=0.1, near_threshold_share=0.5, audit_share=0.01)
    assert review_candidate(0.55, 0.5, policy, draw=0.49) == "near_threshold"
    assert review_candidate(0.55, 0.5, policy, draw=0.51) is None  # near, but not drawn
    assert review_candidate(0.95, 0.5, policy, draw=0.005) == "audit"
    assert review_candidate(0.95, 0.5, policy, draw=0.02) is None
    rng = random.Random(0)
    drawn = [review_candidate(rng.random(), 0.5, ReviewPolicy(), rng.random()) for _ in range(20_000)]
    near, audit = drawn.count("near_threshold") / len(drawn), drawn.count("audit") / len(drawn)
    assert (
        0.18 < near < 0.22 and 0.006 < audit < 0.011
    )  # 20 % of uniform scores lie within 0.1; 1 % of the rest


def test_kept_bytes_are_content_addressed_under_their_own_prefix(local_store):
    key = keep_candidate(local_store, b"\x89PNG\r\n\x1a\nabc", "png")
    assert key.startswith("review/candidates/") and key.endswith(".png") and is_candidate_key(key)
    assert keep_candidate(local_store, b"\x89PNG\r\n\x1a\nabc", "png") == key
    assert not is_candidate_key("predictions/images/abc.png") and not is_candidate_key(None)
