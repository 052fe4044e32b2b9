"""``mastodon`` sources: public hashtag timelines (or the public timeline) of one instance, images only.

For each hashtag in ``query.hashtags``, ``GET {instance}/api/v1/timelines/tag/{hashtag}``; without
hashtags, ``GET {instance}/api/v1/timelines/public``; always with ``only_media=true`` and the
``scope`` option (all, local or remote statuses). Pages go from newest to older by ``max_id`` (the
``Link: rel="next"`` header) and stop at the previous run's newest status (``since_id``, one cursor
per timeline). ``max_images`` is shared equally between the timelines. Only ``image`` attachments
are kept, with their ``description`` as alt text. Every request goes through :func:`tasks.net.fetch`
(address checks, size cap, retries; 429 waits until ``X-RateLimit-Reset``).

Most instances serve public timelines without a token; for those that do not, an access token is
read from the Airflow connection ``vigil_mastodon`` (password) or ``MASTODON_ACCESS_TOKEN``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, quote, urlsplit

from pydantic import Field, field_validator

from tasks import net
from tasks.collect.base import Candidate, CollectError, Collector, Credential, Options

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

PAGE_SIZE = 40  # Mastodon's maximum for timelines
_NEXT_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


class MastodonOptions(Options):
    instance: str = Field(description="Instance root URL, e.g. https://mastodon.social.")
    scope: Literal["all", "local", "remote"] = Field(
        "all",
        description="all statuses the instance knows, only its own (local), or only federated (remote).",
    )

    @field_validator("instance")
    @classmethod
    def _http(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"must be an http(s) URL such as https://mastodon.social, got {url!r}")
        return url.rstrip("/")


def next_max_id(link_header: str | None) -> str | None:
    """The ``max_id`` of the ``rel="next"`` (older) page in a Link header, if any."""
    match = _NEXT_LINK.search(link_header or "")
    if not match:
        return None
    values = parse_qs(urlsplit(match.group(1)).query).get("max_id")
    return values[0] if values else None


class MastodonCollector(Collector):
    kind = "mastodon"
    options_model = MastodonOptions
    query_fields = frozenset({"hashtags"})
    credential = Credential(conn_id="vigil_mastodon", env="MASTODON_ACCESS_TOKEN", required=False)

    def items(self) -> Iterator[Candidate]:
        timelines = [f"tag:{h}" for h in self.source.query.hashtags] or ["public"]
        share = math.ceil(self.limit / len(timelines))
        with net.new_session(self.settings.download) as session:
            for timeline in timelines:
                count = 0
                for candidate in self._timeline(timeline, session):
                    yield candidate
                    count += 1
                    if count >= share:
                        break

    def _timeline(self, timeline: str, session: requests.Session) -> Iterator[Candidate]:
        cursors: dict[str, str] = self.state.setdefault("since_id", {})
        path = (
            "/api/v1/timelines/public"
            if timeline == "public"
            else f"/api/v1/timelines/tag/{quote(timeline.removeprefix('tag:'), safe='')}"
        )
        params: dict[str, str] = {"only_media": "true", "limit": str(PAGE_SIZE)}
        if self.options.scope != "all":
            params[self.options.scope] = "true"
        if cursors.get(timeline):
            params["since_id"] = cursors[timeline]
        page_number = 0
        while True:
            statuses, link = self._get(path, params, session)
            page_number += 1
            log.info(
                "Mastodon %s %s page %d: %d statuses",
                self.options.instance,
                timeline,
                page_number,
                len(statuses),
            )
            if not statuses:
                return
            if page_number == 1:
                cursors[timeline] = max((s["id"] for s in statuses), key=_id_order)
            for status in statuses:
                yield from self._images(status)
            older = next_max_id(link) or min((s["id"] for s in statuses), key=_id_order)
            if older == params.get("max_id"):
                return
            params["max_id"] = older

    def _images(self, status: dict[str, Any]) -> Iterator[Candidate]:
        post = status.get("reblog") or status
        account = post.get("account") or {}
        author = account.get("url") or account.get("acct")
        for media in post.get("media_attachments") or []:
            if media.get("type") != "image" or not media.get("url"):
                self.skip(f"not an image ({media.get('type')})")
                continue
            yield Candidate(
                post_id=str(post["id"]),
                media_url=media["url"],
                post_url=post.get("url") or post.get("uri"),
                author=f"mastodon:{author}" if author else None,
                created_at=post.get("created_at"),
                alt_text=media.get("description"),
            )

    def _get(
        self, path: str, params: dict[str, str], session: requests.Session
    ) -> tuple[list[dict], str | None]:
        url = self.options.instance + path + "?" + "&".join(f"{k}={quote(v)}" for k, v in params.items())
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            got = net.fetch(
                url, self.settings.download, session=session, accept="application/json", headers=headers
            )
        except net.FetchError as exc:
            hint = (
                f" (this instance may require an access token: set {self.credential.describe()})"
                if exc.status in (401, 403)
                else ""
            )
            raise CollectError(
                f"Mastodon timeline of source {self.source.name!r} failed: {exc}{hint}"
            ) from None
        try:
            statuses = json.loads(got.data)
        except ValueError:
            raise CollectError(
                f"{url}: the answer is not JSON (is {self.options.instance} a Mastodon instance?)"
            ) from None
        if not isinstance(statuses, list):
            raise CollectError(f"{url}: expected a list of statuses, got {type(statuses).__name__}")
        return statuses, got.headers.get("Link")


def _id_order(status_id: str) -> tuple[int, str]:
    """Mastodon ids are numeric strings: compare them as numbers."""
    return (len(status_id), status_id)
