"""Where review candidates' bytes live: content-addressed under a prefix of their own."""

from __future__ import annotations

from tasks.review.candidates import is_candidate_key, keep_candidate


def test_kept_bytes_are_content_addressed_under_their_own_prefix(local_store):
    key = keep_candidate(local_store, b"\x89PNG\r\n\x1a\nabc", "png")
    assert key.startswith("review/candidates/") and key.endswith(".png") and is_candidate_key(key)
    assert keep_candidate(local_store, b"\x89PNG\r\n\x1a\nabc", "png") == key
    assert not is_candidate_key("predictions/images/abc.png") and not is_candidate_key(None)
