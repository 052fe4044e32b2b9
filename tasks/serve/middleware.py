"""ASGI middleware of the detection API: the body size limit (enforced while reading) and request metrics."""

from __future__ import annotations

import time
from typing import Any

from tasks.serve.errors import ApiError
from tasks.serve.metrics import Metrics


class BodyLimit:
    """ASGI middleware: refuse a POST body larger than its route allows, without reading the rest.

    Starlette would otherwise spool a whole multipart upload to disk before any route could look at
    its size. Within the limit, the body is buffered and replayed to the app.
    """

    def __init__(self, app, limits: dict[str, int], default: int, per_image: int) -> None:
        self.app, self.limits, self.default, self.per_image = app, limits, default, per_image

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        limit = self.limits.get(scope["path"].rstrip("/"), self.default)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            return await self._refuse(scope, send, limit, f"{int(declared):,} bytes declared")
        chunks, total, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            total += len(chunks[-1])
            if total > limit:
                return await self._refuse(scope, send, limit, f"more than {limit:,} bytes sent")
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    async def _refuse(self, scope, send, limit: int, what: str) -> None:
        message = (
            f"request body too large for {scope['path']}: {what}, the limit is {limit:,} bytes "
            f"(serving.max_upload_bytes={self.per_image:,} per image)"
        )
        response = ApiError(413, "upload_too_large", message)
        await response.response()(scope, _no_body, send)


async def _no_body() -> dict[str, Any]:
    return {"type": "http.disconnect"}


class RequestMetrics:
    """ASGI middleware: count requests by route template and status, observe their latency."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(method=scope["method"], route=route, status=str(status)).inc()
            self.metrics.latency.labels(route=route).observe(time.perf_counter() - started)
