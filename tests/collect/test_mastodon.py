"""Mastodon source against a loopback server shaped like Mastodon's timeline API."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from tasks.collect.base import CollectError
from tasks.collect.mastodon import next_max_id
from tasks.collect.run import collect, cursor_key
from tests.helpers.collect import FakeMastodon, all_rows, json_reply

SOURCES = """
    sources:
      - name: masto
        kind: mastodon
        schedule: "0 */6 * * *"
        query: {{hashtags: {hashtags}}}
        max_images: {max_images}
        label_prior: real
        options: {{instance: "{url}", scope: {scope}}}
"""


@pytest.fixture
def fake_masto(http_server):
    return FakeMastodon(http_server, page_size=5)


@pytest.fixture
def masto_settings(with_sources, http_server):
    def make(hashtags=("aiart",), max_images: int = 100, scope: str = "all"):
        return with_sources(
            SOURCES.format(url=http_server.url, hashtags=list(hashtags), max_images=max_images, scope=scope),
            loopback=True,
        )

    return make


def timeline_calls(server, path="/api/v1/timelines/tag/aiart"):
    return server.hits(path)


def test_next_max_id_from_link_header():
    link = (
        '<https://m.social/api/v1/timelines/tag/cats?max_id=109&only_media=true>; rel="next", '
        '<https://m.social/api/v1/timelines/tag/cats?min_id=120>; rel="prev"'
    )
    assert next_max_id(link) == "109"
    assert next_max_id('<https://m.social/x?min_id=1>; rel="prev"') is None and next_max_id(None) is None


def test_pages_images_only_alt_text_and_hashed_author(fake_masto, masto_settings, http_server, store):
    for i in range(12):
        fake_masto.add_status(["image", "video"] if i % 3 == 0 else ["image"], description=f"alt {i}")
    fake_masto.add_status(["gifv"])

    summary = collect("masto", masto_settings(), store)

    assert summary["images"] == 12 and summary["labels"] == {"real": 12}
    assert summary["skipped"] == {"not an image (video)": 4, "not an image (gifv)": 1}
    calls = timeline_calls(http_server)
    statuses = fake_masto.statuses  # newest first, pages of 5: the last page is empty
    assert [c.query.get("max_id") for c in calls] == [
        None,
        statuses[4]["id"],
        statuses[9]["id"],
        statuses[12]["id"],
    ]
    assert all(c.query["only_media"] == "true" for c in calls)
    rows = all_rows(store)
    by_alt = {r["alt_text"]: r for r in rows}
    assert set(by_alt) == {f"alt {i}" for i in range(12)}
    row = by_alt["alt 0"]
    assert row["author_hash"] == hashlib.sha256(b"mastodon:https://example.social/@carol").hexdigest()
    assert row["post_url"].startswith("https://example.social/@carol/") and row["source_kind"] == "mastodon"
    assert row["created_at"] == "2024-06-01T08:30:00+00:00"
    assert all(store.read_bytes(r["raw_key"])[:4] == b"\x89PNG" for r in rows)


def test_since_id_cursor_across_two_runs(fake_masto, masto_settings, http_server, store):
    for _ in range(3):
        fake_masto.add_status(["image"])
    settings = masto_settings()
    assert collect("masto", settings, store)["images"] == 3
    newest = fake_masto.statuses[0]["id"]
    assert store.read_json(cursor_key("masto"))["state"] == {"since_id": {"tag:aiart": newest}}

    fake_masto.add_status(["image"])
    fake_masto.add_status(["image"])
    before = len(http_server.requests)
    assert collect("masto", settings, store)["images"] == 2
    assert timeline_calls(http_server)[len(timeline_calls(http_server)) - 2].query["since_id"] == newest
    assert len(http_server.requests) - before == 2 + 2  # one page, one empty page, two images
    assert collect("masto", settings, store)["batch_id"] is None


@pytest.mark.parametrize("store_env", ["local"], indirect=True)  # waits; one backend is enough
def test_rate_limit_waits_until_reset(fake_masto, masto_settings, http_server, store):
    fake_masto.add_status(["image"])
    reset = (datetime.now(UTC) + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    fake_masto.failures.append(
        json_reply(
            {"error": "Too many requests"},
            429,
            {"X-RateLimit-Limit": "300", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset},
        )
    )
    assert collect("masto", masto_settings(), store)["images"] == 1
    first, second = timeline_calls(http_server)[:2]
    assert second.at - first.at >= 0.8


def test_hashtags_share_the_budget_and_scope_is_passed(fake_masto, masto_settings, http_server, store):
    for _ in range(6):
        fake_masto.add_status(["image"], tag="cats")
        fake_masto.add_status(["image"], tag="dogs", local=False)
    summary = collect("masto", masto_settings(hashtags=("cats", "dogs"), max_images=6), store)
    assert summary["images"] == 6
    domains = [r["post_url"].split("/")[2] for r in all_rows(store)]  # cats are local, dogs remote
    assert domains.count("example.social") == 3 and domains.count("elsewhere.social") == 3

    collect("masto", masto_settings(hashtags=(), scope="local"), store)
    (public,) = http_server.hits("/api/v1/timelines/public")[:1]
    assert public.query["local"] == "true"


def test_unreachable_timeline_is_a_clear_error(fake_masto, masto_settings, store):
    fake_masto.add_status(["image"])
    fake_masto.failures.append(json_reply({"error": "This method requires an authenticated user"}, 401))
    with pytest.raises(CollectError, match="HTTP 401.*may require an access token.*MASTODON_ACCESS_TOKEN"):
        collect("masto", masto_settings(), store)
