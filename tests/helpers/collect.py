"""Helpers of the collection tests: a real HTTP server on 127.0.0.1 that plays third-party APIs
(X, Mastodon) and image hosts, and small real images.

Each test registers routes: ``server.route("/path", handler)`` where the handler takes the
recorded request and returns ``(status, headers, body)``. Every request is recorded (path, query,
headers, arrival time) so tests can assert what the collector asked for.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from PIL import Image

from tasks.data.batches import list_batches, read_batch

Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)


class FixtureServer:
    def __init__(self) -> None:
        self.routes: dict[str, Callable[[Request], Reply] | Reply] = {}
        self.requests: list[Request] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                req = Request(
                    "GET",
                    parts.path,
                    {k: v[-1] for k, v in parse_qs(parts.query).items()},
                    {k.lower(): v for k, v in self.headers.items()},
                )
                server.requests.append(req)
                route = server.routes.get(parts.path)
                status, headers, body = (
                    (route(req) if callable(route) else route) if route else (404, {}, b"no route")
                )
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                if "Content-Length" not in headers and "Connection" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                if headers.get("Connection") == "close":
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def route(self, path: str, handler: Callable[[Request], Reply] | Reply) -> None:
        self.routes[path] = handler

    def hits(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def json_reply(obj, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(obj).encode()


def image_bytes(
    color: tuple[int, int, int] = (200, 30, 30), fmt: str = "PNG", size: int = 48, **save
) -> bytes:
    """A small real image with some texture (so it is not near-constant)."""
    img = Image.new("RGB", (size, size), color)
    for i in range(size):
        img.putpixel((i, i), (255 - color[0], 255 - color[1], 255 - color[2]))
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save)
    return buf.getvalue()


def rows_by_post(store) -> dict[str, dict]:
    """Rows of every published batch keyed by post id (one image per post)."""
    return {row["post_id"]: row for row in all_rows(store)}


def all_rows(store) -> list[dict]:
    """Every row of every published batch, missing values as None."""
    rows = []
    for key in list_batches(store):
        table = read_batch(store, key).table
        rows += table.astype(object).where(table.notna(), None).to_dict("records")
    return rows


# -- X API v2 recent search, as documented --------------------------------------------------------


class FakeX:
    """``GET /2/tweets/search/recent`` over ``tweets`` (newest first), with media served at /media/.

    ``failures`` is a queue of replies served before the normal answers (429s, 403s, 5xx).
    """

    def __init__(self, server: FixtureServer, token: str = "test-bearer") -> None:
        self.server, self.token = server, token
        self.tweets: list[dict] = []
        self.media: dict[str, dict] = {}
        self.users = {"u1": "alice", "u2": "bob"}
        self.failures: list[Reply] = []
        self.images: dict[str, bytes] = {}
        server.route("/2/tweets/search/recent", self.search)

    def add_tweet(self, media_types: list[str], author: str = "u1", alt: str | None = None) -> dict:
        tweet_id = str(1_000_000 + len(self.tweets))
        keys = []
        for i, kind in enumerate(media_types):
            key = f"3_{tweet_id}_{i}"
            item = {"media_key": key, "type": kind, "width": 48, "height": 48}
            if kind == "photo":
                path = f"/media/{key}.jpg"
                item["url"] = self.server.url + path
                self.images[key] = image_bytes(((len(self.tweets) * 7) % 255, i * 60, 90), "JPEG")
                self.server.route(path, (200, {"Content-Type": "image/jpeg"}, self.images[key]))
                if alt:
                    item["alt_text"] = alt
            else:
                item["preview_image_url"] = self.server.url + f"/media/{key}_preview.jpg"
            self.media[key] = item
            keys.append(key)
        tweet = {
            "id": tweet_id,
            "text": f"post {tweet_id}",
            "author_id": author,
            "created_at": "2024-05-01T12:00:00.000Z",
            "edit_history_tweet_ids": [tweet_id],
            "attachments": {"media_keys": keys},
        }
        self.tweets.insert(0, tweet)  # newest first
        return tweet

    def search(self, req: Request) -> Reply:
        if self.failures:
            return self.failures.pop(0)
        if req.headers.get("authorization") != f"Bearer {self.token}":
            return json_reply(
                {"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"}, 401
            )
        matching = [t for t in self.tweets if int(t["id"]) > int(req.query.get("since_id", 0))]
        start = int(req.query.get("next_token", "0").removeprefix("page-") or 0)
        size = int(req.query.get("max_results", 10))
        page = matching[start : start + size]
        if not page:
            return json_reply({"meta": {"result_count": 0}})
        keys = {k for t in page for k in t["attachments"]["media_keys"]}
        meta = {"newest_id": page[0]["id"], "oldest_id": page[-1]["id"], "result_count": len(page)}
        if start + size < len(matching):
            meta["next_token"] = f"page-{start + size}"
        users = [
            {"id": uid, "username": name, "name": name.title()}
            for uid, name in self.users.items()
            if any(t["author_id"] == uid for t in page)
        ]
        return json_reply(
            {
                "data": page,
                "includes": {"media": [self.media[k] for k in sorted(keys)], "users": users},
                "meta": meta,
            }
        )


def x_error(status: int, body: dict, headers: dict[str, str] | None = None) -> Reply:
    return json_reply(body, status, headers)


# -- Mastodon timelines, as documented ------------------------------------------------------------------


class FakeMastodon:
    """Tag and public timelines over ``statuses`` (newest first), paged by max_id/since_id with Link."""

    def __init__(self, server: FixtureServer, page_size: int = 5) -> None:
        self.server, self.page_size = server, page_size
        self.statuses: list[dict] = []
        self.failures: list[Reply] = []
        self.next_id = 110_000_000_000_000_000

    def add_status(
        self, media_types: list[str], tag: str = "aiart", local: bool = True, description: str | None = None
    ) -> dict:
        self.next_id += 1
        sid = str(self.next_id)
        attachments = []
        for i, kind in enumerate(media_types):
            path = f"/system/media/{sid}_{i}.png"
            data = image_bytes(((self.next_id * 13) % 255, i * 70, 30))
            if kind == "image":
                self.server.route(path, (200, {"Content-Type": "image/png"}, data))
            attachments.append(
                {
                    "id": f"{sid}{i}",
                    "type": kind,
                    "url": self.server.url + path,
                    "preview_url": self.server.url + path,
                    "description": description,
                }
            )
        domain = "example.social" if local else "elsewhere.social"
        status = {
            "id": sid,
            "created_at": "2024-06-01T08:30:00.000Z",
            "url": f"https://{domain}/@carol/{sid}",
            "uri": f"https://{domain}/users/carol/statuses/{sid}",
            "tags": [{"name": tag}],
            "account": {
                "id": "7",
                "acct": "carol" if local else f"carol@{domain}",
                "url": f"https://{domain}/@carol",
            },
            "media_attachments": attachments,
            "reblog": None,
            "_local": local,
        }
        self.statuses.insert(0, status)
        route = f"/api/v1/timelines/tag/{tag}"
        self.server.route(route, self.timeline)
        self.server.route("/api/v1/timelines/public", self.timeline)
        return status

    def timeline(self, req: Request) -> Reply:
        if self.failures:
            return self.failures.pop(0)
        assert req.query.get("only_media") == "true"
        found = self.statuses
        if req.path.startswith("/api/v1/timelines/tag/"):
            tag = req.path.rsplit("/", 1)[-1]
            found = [s for s in found if s["tags"][0]["name"] == tag]
        if req.query.get("local") == "true":
            found = [s for s in found if s["_local"]]
        if req.query.get("remote") == "true":
            found = [s for s in found if not s["_local"]]
        if "since_id" in req.query:
            found = [s for s in found if int(s["id"]) > int(req.query["since_id"])]
        if "max_id" in req.query:
            found = [s for s in found if int(s["id"]) < int(req.query["max_id"])]
        page = [{k: v for k, v in s.items() if k != "_local"} for s in found[: self.page_size]]
        headers = {}
        if page:
            base = self.server.url + req.path
            headers["Link"] = (
                f'<{base}?max_id={page[-1]["id"]}&only_media=true>; rel="next", '
                f'<{base}?min_id={page[0]["id"]}&only_media=true>; rel="prev"'
            )
        return json_reply(page, headers=headers)
