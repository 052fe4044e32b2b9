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

from tasks.batches import list_batches, read_batch

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

            def do_GET(self) -> None:  # noqa: N802
                parts = urlsplit(self.path)
                req = Request("GET", parts.path, {k: v[-1] for k, v in parse_qs(parts.query).items()},
                              {k.lower(): v for k, v in self.headers.items()})
                server.requests.append(req)
                route = server.routes.get(parts.path)
                status, headers, body = (route(req) if callable(route) else route) if route else (404, {}, b"no route")
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


def image_bytes(color: tuple[int, int, int] = (200, 30, 30), fmt: str = "PNG", size: int = 48, **save) -> bytes:
    """A small real image with some texture (so it is not near-constant)."""
    img = Image.new("RGB", (size, size), color)
    for i in range(size):
        img.putpixel((i, i), (255 - color[0], 255 - color[1], 255 - color[2]))
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save)
    return buf.getvalue()


def rows_by_post(store) -> dict[str, dict]:
    rows = {}
    for key in list_batches(store):
        table = read_batch(store, key).table
        for row in table.astype(object).where(table.notna(), None).to_dict("records"):  # missing -> None
            rows[row["post_id"]] = row
    return rows
