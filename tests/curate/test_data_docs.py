"""Data Docs tell the truth and work offline: the suite sees the quarantined images (share and reasons,
agreeing with the batch's status), every page loads only files of the site, and one index lists every
batch. Both store backends."""

from __future__ import annotations

import posixpath
import re

from tasks.curate import curate
from tasks.curate.data_docs import INDEX_HTML, INDEX_JSON, STATIC_PREFIX
from tasks.settings import Settings
from tests.helpers.curation import add_batch, good_images

BAD = [
    {"data": b"", "name": "zero.jpg"},
    {"data": b"<!doctype html><html><body>not a picture</body></html>", "name": "page.png"},
]
_LOADS = re.compile(r"<(?:link|script|img)\b[^>]*\b(?:href|src)=[\"']([^\"']+)[\"']", re.IGNORECASE)


def rejected_share(report: dict) -> dict:
    return next(
        r for r in report["expectations"]["results"] if r["expectation"] == "expect_column_values_to_be_null"
    )


def resolve(page_key: str, link: str) -> str:
    return posixpath.normpath(posixpath.join(posixpath.dirname(page_key), link))


def test_the_suite_sees_the_quarantined_images_and_agrees_with_the_batch_status(store, settings):
    passed = add_batch(store, [*good_images(7), *BAD])  # 2 of 9 rejected: 22%
    failed = add_batch(
        store, [*good_images(3, start=10), *BAD, {"data": b"", "name": "zero2.jpg", "sha256": "f" * 64}]
    )

    curate(Settings(curation={"max_failure_ratio": 0.25}), store)

    report = store.read_json(f"reports/{passed.batch_id}/summary.json")
    assert report["status"] == "passed" and report["failure_ratio"] == round(2 / 9, 4)
    share = rejected_share(report)
    assert share["column"] == "rejection_code" and share["success"] is True
    assert (
        share["kwargs"]["mostly"] == 0.75 and share["element_count"] == 9 and share["unexpected_count"] == 2
    )
    assert share["partial_unexpected_counts"] == [
        {"value": "empty", "count": 1},
        {"value": "not_an_image", "count": 1},
    ]
    page = report["expectations"]["validation_page"]
    html = store.read_bytes(f"reports/{passed.batch_id}/data_docs/{page}").decode()
    assert "rejection_code" in html and "not_an_image" in html and "empty" in html

    report = store.read_json(f"reports/{failed.batch_id}/summary.json")
    assert report["status"] == "failed"
    assert rejected_share(report)["success"] is False and report["expectations"]["success"] is False
    assert rejected_share(report)["unexpected_count"] == 3


def test_pages_load_only_files_of_the_site_and_one_index_lists_every_batch(store, settings):
    first = add_batch(store, [*good_images(10), *BAD])
    curate(settings, store)
    second = add_batch(store, good_images(10, start=20), source="mastodon")
    curate(settings, store)

    for batch in (first, second):
        prefix = f"reports/{batch.batch_id}/data_docs"
        pages = [k for k in store.list(prefix) if k.endswith(".html")]
        assert len(pages) >= 2  # the batch's index and its validation page
        for key in pages:
            loads = _LOADS.findall(store.read_bytes(key).decode())
            assert loads, key
            for link in loads:
                assert not re.match(r"^(https?:)?//", link), (key, link)  # nothing from a CDN
                assert store.exists(resolve(key, link)), (key, link)  # relative, and there
            stylesheets = [link for link in loads if link.endswith(".css")]
            assert any(
                resolve(key, link) == f"{STATIC_PREFIX}/bootstrap-4.3.1.min.css" for link in stylesheets
            )
    assert store.exists(f"{STATIC_PREFIX}/LICENSE-bootstrap.txt")

    index = store.read_bytes(INDEX_HTML).decode()
    assert "<script" not in index  # lists the batches without JavaScript
    entries = {e["batch_id"]: e for e in store.read_json(INDEX_JSON)}
    assert set(entries) == {first.batch_id, second.batch_id}
    assert entries[first.batch_id]["by_code"] == {"empty": 1, "not_an_image": 1}
    assert entries[first.batch_id]["quarantined"] == 2 and entries[second.batch_id]["source"] == "mastodon"
    for batch_id, entry in entries.items():
        link = f"../{batch_id}/data_docs/{entry['validation_page']}"
        assert f'href="{link}"' in index and store.exists(resolve(INDEX_HTML, link))
        assert f'<tr id="{batch_id}">' in index
    assert index.index(second.batch_id) < index.index(first.batch_id)  # newest first
    for link in _LOADS.findall(index):
        assert store.exists(resolve(INDEX_HTML, link))
    report = store.read_json(f"reports/{second.batch_id}/summary.json")
    assert report["links"]["data_docs_index"] == store.uri(INDEX_HTML)
