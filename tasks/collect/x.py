"""``x`` sources: X (Twitter) API v2 recent search through tweepy, photos only.

The query is ``(<terms and #hashtags, OR-ed>) (from:<accounts, OR-ed>) has:images -is:retweet``.
Each run asks for tweets newer than the last run's newest (``since_id`` cursor), newest first,
paging with ``next_token`` until ``max_images`` photos were handed out. Rate limits (HTTP 429)
are waited out until the window resets (``x-rate-limit-reset``), up to ``max_rate_limit_wait_s``.

Reading tweets needs a paid X API access tier: free-tier tokens get HTTP 403 with X error 453
(or ``client-not-enrolled``), which is reported as such. The bearer token comes from the Airflow
connection ``vigil_x`` (password) or the environment variable ``X_BEARER_TOKEN``.

tweepy's API host is fixed inside ``Client.request``; ``api_base_url`` is applied by a transport
adapter on the client's requests session (which also adds the timeouts tweepy leaves out), so the
tests can point the real tweepy client at a loopback fixture.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from pydantic import Field, field_validator
from requests.adapters import HTTPAdapter

from tasks.collect.base import Candidate, CollectConfigError, CollectError, Collector, Credential, Options
from tasks.net import server_wait_seconds

log = logging.getLogger(__name__)

X_API = "https://api.twitter.com"
MEDIA_FIELDS = ["url", "type", "width", "height", "alt_text"]


class XOptions(Options):
    api_base_url: str = Field(X_API, description="API root; only tests change it.")
    max_rate_limit_wait_s: float = Field(
        900, ge=0, description="Longest wait for a rate-limit window to reset (X windows are 15 minutes)."
    )

    @field_validator("api_base_url")
    @classmethod
    def _http(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"must be an http(s) URL, got {url!r}")
        return url.rstrip("/")


class _ApiBase(HTTPAdapter):
    """Sends tweepy's requests for https://api.twitter.com to ``base`` instead, with timeouts."""

    def __init__(self, base: str, timeout_s: float) -> None:
        super().__init__(max_retries=0)
        self.base, self.timeout_s = base, timeout_s

    def send(self, request, **kwargs):  # type: ignore[no-untyped-def]
        request.url = self.base + request.url[len(X_API) :]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = (self.timeout_s, self.timeout_s)
        return super().send(request, **kwargs)


def build_query(terms: list[str], hashtags: list[str], accounts: list[str]) -> str:
    """The X search query for a source's ``query`` section."""
    words = [f'"{t}"' if " " in t else t for t in terms] + [f"#{h}" for h in hashtags]
    parts = []
    if words:
        parts.append(words[0] if len(words) == 1 else "(" + " OR ".join(words) + ")")
    if accounts:
        froms = [f"from:{a}" for a in accounts]
        parts.append(froms[0] if len(froms) == 1 else "(" + " OR ".join(froms) + ")")
    return " ".join([*parts, "has:images", "-is:retweet"])


class XCollector(Collector):
    kind = "x"
    options_model = XOptions
    query_fields = frozenset({"terms", "hashtags", "accounts"})
    credential = Credential(conn_id="vigil_x", env="X_BEARER_TOKEN", required=True)

    def items(self) -> Iterator[Candidate]:
        import tweepy

        query = self.source.query
        if not (query.terms or query.hashtags or query.accounts):
            raise CollectConfigError(
                f"source {self.source.name!r}: an x source needs query terms, hashtags or accounts"
            )
        logging.getLogger("tweepy").setLevel(logging.INFO)  # its DEBUG log prints the Authorization header
        client = tweepy.Client(bearer_token=self.token, return_type=dict, wait_on_rate_limit=False)
        client.session.mount(X_API, _ApiBase(self.options.api_base_url, self.settings.download.timeout_s))
        params: dict[str, Any] = {
            "query": build_query(query.terms, query.hashtags, query.accounts),
            "expansions": ["attachments.media_keys", "author_id"],
            "media_fields": MEDIA_FIELDS,
            "tweet_fields": ["created_at", "author_id", "attachments"],
            "user_fields": ["username"],
            "max_results": min(100, max(10, self.limit)),
        }
        if self.state.get("since_id"):
            params["since_id"] = self.state["since_id"]
        with client.session:
            yield from self._pages(client, params)

    def _pages(self, client, params: dict[str, Any]) -> Iterator[Candidate]:  # type: ignore[no-untyped-def]
        page_number = 0
        while True:
            page = self._search(client, params)
            page_number += 1
            meta = page.get("meta", {})
            if page_number == 1 and meta.get("newest_id"):
                self.state["since_id"] = meta["newest_id"]  # the next run starts after this run's newest
            tweets = page.get("data", [])
            log.info("X page %d: %d tweets (query %s)", page_number, len(tweets), params["query"])
            includes = page.get("includes", {})
            media = {m["media_key"]: m for m in includes.get("media", [])}
            users = {u["id"]: u.get("username") for u in includes.get("users", [])}
            for tweet in tweets:
                yield from self._photos(tweet, media, users)
            if not meta.get("next_token"):
                return
            params["next_token"] = meta["next_token"]

    def _photos(
        self, tweet: dict, media: dict[str, dict], users: dict[str, str | None]
    ) -> Iterator[Candidate]:
        username = users.get(tweet.get("author_id", ""))
        post_url = (
            f"https://x.com/{username}/status/{tweet['id']}"
            if username
            else f"https://x.com/i/web/status/{tweet['id']}"
        )
        for key in tweet.get("attachments", {}).get("media_keys", []):
            item = media.get(key)
            if item is None:
                self.skip("media missing from the response")
            elif item.get("type") != "photo" or not item.get("url"):
                self.skip(f"not a photo ({item.get('type')})")
            else:
                yield Candidate(
                    post_id=tweet["id"],
                    media_url=item["url"],
                    post_url=post_url,
                    author=f"x:{tweet['author_id']}" if tweet.get("author_id") else None,
                    created_at=tweet.get("created_at"),
                    alt_text=item.get("alt_text"),
                )

    def _search(self, client, params: dict[str, Any]) -> dict:  # type: ignore[no-untyped-def]
        """One search call; waits out rate limits, retries server errors, explains the rest."""
        import requests
        import tweepy

        download = self.settings.download
        for attempt in range(download.retries + 1):
            last = attempt == download.retries
            try:
                return client.search_recent_tweets(**params)
            except tweepy.TooManyRequests as exc:
                wait = server_wait_seconds(exc.response.headers)
                wait = download.backoff_s * 2**attempt if wait is None else wait + 0.5
                if last or wait > self.options.max_rate_limit_wait_s:
                    raise CollectError(
                        f"X rate limit reached for source {self.source.name!r}; the window resets in {wait:.0f}s "
                        f"(options.max_rate_limit_wait_s={self.options.max_rate_limit_wait_s:g}); "
                        "the next run continues where this one stopped"
                    ) from None
                log.warning("X rate limit reached; waiting %.1fs for the window to reset", wait)
                time.sleep(wait)
            except tweepy.TwitterServerError as exc:
                if last:
                    raise CollectError(
                        f"X API server error after {attempt + 1} attempts: {_one_line(exc)}"
                    ) from None
                self._backoff(attempt, _one_line(exc))
            except requests.RequestException as exc:
                if last:
                    raise CollectError(f"X API unreachable after {attempt + 1} attempts: {exc}") from None
                self._backoff(attempt, str(exc))
            except tweepy.Forbidden as exc:
                raise CollectConfigError(self._forbidden_message(exc)) from None
            except tweepy.Unauthorized:
                raise CollectConfigError(
                    f"X rejected the bearer token (401 Unauthorized) for source {self.source.name!r}: "
                    f"check {self.credential.describe()}"
                ) from None
            except tweepy.HTTPException as exc:
                raise CollectConfigError(
                    f"X refused the search {params['query']!r}: {_one_line(exc)}"
                ) from None
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int, what: str) -> None:
        wait = self.settings.download.backoff_s * 2**attempt
        log.warning("X API: %s; retrying in %.1fs", what, wait)
        time.sleep(wait)

    def _forbidden_message(self, exc) -> str:  # type: ignore[no-untyped-def]
        try:
            body = exc.response.json()
        except ValueError:
            body = {}
        if 453 in exc.api_codes or body.get("reason") == "client-not-enrolled":
            return (
                f"X refused the recent search for source {self.source.name!r} (HTTP 403, "
                f"{'error 453' if 453 in exc.api_codes else 'client-not-enrolled'}): this token's access tier "
                "does not include reading tweets. Recent search needs a paid X API access tier (Basic or higher) "
                "and an app attached to a project; see https://developer.x.com/en/portal/products"
            )
        return f"X refused the search for source {self.source.name!r} (403 Forbidden): {_one_line(exc)}"


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
