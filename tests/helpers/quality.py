"""Helpers for the data-quality page tests: batches with quarantined images of every kind of preview."""

from __future__ import annotations

from tests.helpers import corpus

HTML = b"<!doctype html><html><body><script>alert(1)</script>not a picture</body></html>"


def quarantine_mix() -> list[dict]:
    """Rejected files: two with a thumbnail (a blank and a tiny image), three without (no bytes, not an
    image, a decompression bomb)."""
    from tests.helpers.curation import encode, photo

    return [
        {"data": corpus.near_constant_png(), "name": "blank.png", "label": "real"},
        {"data": encode(photo(40, size=16)), "name": "tiny.png", "label": "fake"},
        {"data": b"", "name": "zero.jpg"},
        {"data": HTML, "name": "page.png"},
        {"data": corpus.png_header_only(100_000, 100_000), "name": "bomb.png"},
    ]


def curate_two_batches(store, settings) -> tuple[str, str]:
    """Curate a batch of 18 images with 5 quarantined (28 %), then a clean batch of 10 from another
    source; their batch ids."""
    from tasks.curate import curate
    from tests.helpers.curation import add_batch, good_images

    first = add_batch(store, [*good_images(13), *quarantine_mix()], source="inbox")
    curate(settings, store)
    second = add_batch(store, good_images(10, start=30), source="mastodon")
    curate(settings, store)
    return first.batch_id, second.batch_id
