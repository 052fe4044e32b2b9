"""X source: the real tweepy client against a loopback server shaped like X API v2 recent search."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest
import yaml

from tasks.collect.base import CollectError
from tasks.collect.run import collect, cursor_key
from tasks.collect.x import build_query
from tasks.data.batches import list_batches
from tasks.settings import DEFAULT_INCLUDE_DIR
from tests.helpers.collect import FakeX, all_rows, x_error

SOURCES = """
    sources:
      - name: x_art
        kind: x
        enabled: false
        schedule: "@hourly"
        query: {{terms: ["stable diffusion"], hashtags: [aiart]}}
        max_images: {max_images}
        label_prior: fake
        options: {{api_base_url: "{url}", max_rate_limit_wait_s: {max_wait}}}
"""


@pytest.fixture
def fake_x(http_server):
    return FakeX(http_server)


@pytest.fixture
def x_settings(with_sources, http_server):
    def make(max_images: int = 100, max_wait: float = 30):
        return with_sources(
            SOURCES.format(url=http_server.url, max_images=max_images, max_wait=max_wait), loopback=True
        )

    return make


def searches(server):
    return server.hits("/2/tweets/search/recent")


def test_build_query():
    assert (
        build_query(["stable diffusion"], ["aiart"], [])
        == '("stable diffusion" OR #aiart) has:images -is:retweet'
    )
    assert build_query([], [], ["alice", "bob"]) == "(from:alice OR from:bob) has:images -is:retweet"
    assert build_query(["cat"], [], ["alice"]) == "cat from:alice has:images -is:retweet"


def test_photos_are_collected_with_alt_text_and_hashed_author(fake_x, x_settings, http_server, store):
    fake_x.add_tweet(["photo"], author="u1", alt="a red square")
    fake_x.add_tweet(["video"], author="u2")
    fake_x.add_tweet(["photo", "animated_gif", "photo"], author="u2")

    summary = collect("x_art", x_settings(), store, token="test-bearer")

    assert (
        summary["images"] == 3
        and summary["labels"] == {"fake": 3}
        and summary["label_sources"] == {"prior": 3}
    )
    assert summary["skipped"] == {"not a photo (video)": 1, "not a photo (animated_gif)": 1}
    (search,) = searches(http_server)
    assert search.query["query"] == '("stable diffusion" OR #aiart) has:images -is:retweet'
    assert search.query["expansions"] == "attachments.media_keys,author_id"
    assert set(search.query["media.fields"].split(",")) == {"url", "type", "width", "height", "alt_text"}
    assert "created_at" in search.query["tweet.fields"]
    rows = {row["media_url"].rsplit("/", 1)[-1]: row for row in all_rows(store)}
    first = rows["3_1000000_0.jpg"]
    assert first["alt_text"] == "a red square" and first["post_id"] == "1000000"
    assert first["post_url"] == "https://x.com/alice/status/1000000"
    assert first["author_hash"] == hashlib.sha256(b"x:u1").hexdigest()
    assert first["created_at"] == "2024-05-01T12:00:00+00:00" and first["format"] == "JPEG"
    assert "u1" not in str(list(first.values())) and "alice" not in (first["author_hash"] or "")
    for key, row in rows.items():
        assert store.read_bytes(row["raw_key"]) == fake_x.images[key.removesuffix(".jpg")]


def test_paging_stops_at_max_images(fake_x, x_settings, http_server, store):
    for i in range(40):
        fake_x.add_tweet(["photo"] if i % 2 else ["video"])
    summary = collect("x_art", x_settings(max_images=12), store, token="test-bearer")
    assert summary["images"] == 12
    calls = searches(http_server)
    assert [c.query.get("next_token") for c in calls] == [None, "page-12"]
    assert all(c.query["max_results"] == "12" for c in calls)


def test_since_id_cursor_across_two_runs(fake_x, x_settings, http_server, store):
    for _ in range(3):
        fake_x.add_tweet(["photo"])
    settings = x_settings()
    assert collect("x_art", settings, store, token="test-bearer")["images"] == 3
    newest = fake_x.tweets[0]["id"]
    assert store.read_json(cursor_key("x_art"))["state"] == {"since_id": newest}

    for _ in range(2):
        fake_x.add_tweet(["photo"])
    second = collect("x_art", settings, store, token="test-bearer")
    assert second["images"] == 2
    assert searches(http_server)[-1].query["since_id"] == newest
    assert {r["post_id"] for r in all_rows(store)} == {t["id"] for t in fake_x.tweets}
    assert collect("x_art", settings, store, token="test-bearer")["batch_id"] is None


@pytest.mark.parametrize("store_env", ["local"], indirect=True)  # waits; one backend is enough
def test_rate_limit_is_waited_out(fake_x, x_settings, http_server, store):
    fake_x.add_tweet(["photo"])
    reset = int(time.time()) + 1
    fake_x.failures.append(
        x_error(
            429,
            {
                "title": "Too Many Requests",
                "detail": "Too Many Requests",
                "type": "about:blank",
                "status": 429,
            },
            {"x-rate-limit-limit": "60", "x-rate-limit-remaining": "0", "x-rate-limit-reset": str(reset)},
        )
    )
    assert collect("x_art", x_settings(), store, token="test-bearer")["images"] == 1
    first, second = searches(http_server)
    assert second.at - first.at >= 0.45 and time.time() >= reset - 0.5


def test_rate_limit_beyond_the_allowed_wait_fails_clearly(fake_x, x_settings, store):
    fake_x.add_tweet(["photo"])
    fake_x.failures.append(
        x_error(429, {"title": "Too Many Requests"}, {"x-rate-limit-reset": str(int(time.time()) + 900)})
    )
    with pytest.raises(
        CollectError, match=r"X rate limit reached .* resets in 90\ds .*max_rate_limit_wait_s=30"
    ):
        collect("x_art", x_settings(max_wait=30), store, token="test-bearer")
    assert list_batches(store) == [] and not store.exists(cursor_key("x_art"))


@pytest.mark.parametrize(
    "body",
    [
        {
            "errors": [
                {
                    "message": "You currently have access to a subset of Twitter API v2 endpoints and limited v1.1 "
                    "endpoints (e.g. media post, oauth) only. If you need access to this endpoint, you may "
                    "need a different access level.",
                    "code": 453,
                }
            ]
        },
        {
            "client_id": "123",
            "detail": "When authenticating requests to the Twitter API v2 endpoints, you must use keys "
            "and tokens from a Twitter developer App that is attached to a Project.",
            "title": "Client Forbidden",
            "required_enrollment": "Appropriate Level of API Access",
            "reason": "client-not-enrolled",
            "type": "https://api.twitter.com/2/problems/client-forbidden",
        },
    ],
)
def test_free_tier_error_says_a_paid_tier_is_needed(fake_x, x_settings, store, body):
    fake_x.failures.append(x_error(403, body))
    with pytest.raises(CollectError, match="needs a paid X API access tier"):
        collect("x_art", x_settings(), store, token="test-bearer")


def test_server_errors_are_retried(fake_x, x_settings, http_server, store):
    fake_x.add_tweet(["photo"])
    fake_x.failures.append(x_error(503, {"title": "Service Unavailable"}))
    assert collect("x_art", x_settings(), store, token="test-bearer")["images"] == 1
    assert len(searches(http_server)) == 2


def test_bad_token_and_missing_token(fake_x, x_settings, store, monkeypatch):
    monkeypatch.delenv("X_BEARER_TOKEN", raising=False)
    with pytest.raises(
        CollectError, match="needs a token: set the Airflow connection 'vigil_x' .* X_BEARER_TOKEN"
    ):
        collect("x_art", x_settings(), store)
    with pytest.raises(CollectError, match=r"401 Unauthorized.*vigil_x"):
        collect("x_art", x_settings(), store, token="wrong")
    # The environment variable is the fallback when no token is passed in.
    fake_x.add_tweet(["photo"])
    monkeypatch.setenv("X_BEARER_TOKEN", "test-bearer")
    assert collect("x_art", x_settings(), store)["images"] == 1


def test_bad_media_is_refused_with_a_reason(fake_x, x_settings, http_server, store):
    html = fake_x.add_tweet(["photo"])
    gone = fake_x.add_tweet(["photo"])
    fake_x.add_tweet(["photo"])
    http_server.route(
        f"/media/{html['attachments']['media_keys'][0]}.jpg",
        (200, {"Content-Type": "image/jpeg"}, b"<!DOCTYPE html><html>login wall</html>"),
    )
    http_server.routes.pop(f"/media/{gone['attachments']['media_keys'][0]}.jpg")

    summary = collect("x_art", x_settings(), store, token="test-bearer")

    assert summary["images"] == 1
    assert summary["refused"] == {"not an image: HTML document": 1, "download failed: http_status": 1}


@pytest.mark.parametrize("store_env", ["local"], indirect=True)
def test_dag_uses_the_airflow_connection_token_and_never_logs_it(
    airflow_db, store_env, fake_x, http_server, tmp_path, monkeypatch, capfd
):
    from airflow.dag_processing.dagbag import BundleDagBag

    include = tmp_path / "include"
    shutil.copytree(DEFAULT_INCLUDE_DIR, include)
    doc = yaml.safe_load((include / "sources.yaml").read_text())
    x_source = next(s for s in doc["sources"] if s["kind"] == "x")
    x_source.update(enabled=True, options={"api_base_url": http_server.url})
    (include / "sources.yaml").write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("VIGIL_INCLUDE_DIR", str(include))
    monkeypatch.setenv("VIGIL_DOWNLOAD__ALLOW_PRIVATE_NETWORKS", "true")
    monkeypatch.delenv("X_BEARER_TOKEN", raising=False)
    monkeypatch.setenv(
        "AIRFLOW_CONN_VIGIL_X", json.dumps({"conn_type": "generic", "password": "test-bearer"})
    )
    fake_x.add_tweet(["photo"], alt="from the DAG")
    dags = Path(__file__).resolve().parents[2] / "dags"

    run = (
        BundleDagBag(dag_folder=str(dags), bundle_path=dags)
        .get_dag("collect_x_ai_art")
        .test(logical_date=None)
    )

    assert run.state == "success"
    assert searches(http_server)[0].headers["authorization"] == "Bearer test-bearer"
    output = capfd.readouterr()
    logged = output.out + output.err
    assert "stored 1 new images" in logged  # the task log was captured...
    assert "test-bearer" not in logged  # ...and the token is not in it
