"""ASGI middleware of the detection API: request bodies kept within bounds, and metrics with an access log.

:class:`BodyGuard` enforces, while the body streams to the route (never buffering it whole):

* the size limit of the route (``Content-Length`` first, then the bytes counted) -> 413;
* the time a client has to send its body (``serving.body_timeout_s``) -> 408, so a client that
  trickles its body cannot hold a connection and its memory forever;
* the bytes in flight, all requests together (``serving.max_bytes_in_flight``: the declared length is
  reserved before a byte is read, counted bytes for a chunked body) -> 503 with Retry-After;
* the batch calls in progress (``serving.max_concurrent_batches``) -> 503 with Retry-After.

The errors are raised from ``receive``, so the route that is reading answers them as usual JSON, with
``Connection: close`` (the rest of the body is never read).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from starlette.requests import ClientDisconnect

from tasks.serve.errors import ApiError, busy, clip
from tasks.serve.metrics import Metrics

access_log = logging.getLogger("vigil.serve.access")

CLOSE = {"Connection": "close"}
RETRY_BUSY_S = 2.0  # what a 503 busy asks the client to wait
CLIENT_CLOSED = "499"  # the status label of a request whose client went away first (nginx's convention)


class BodyGuard:
    """ASGI middleware: size, time, memory and concurrency limits on request bodies (see the module doc)."""

    def __init__(
        self,
        app,
        *,
        limits: dict[str, int],
        default: int,
        json_limit: int,
        per_image: int,
        timeout_s: float,
        max_in_flight: int,
        batch_path: str,
        max_batches: int,
        metrics: Metrics,
    ) -> None:
        self.app, self.limits, self.default, self.json_limit = app, limits, default, json_limit
        self.per_image, self.timeout_s, self.max_in_flight = per_image, timeout_s, max_in_flight
        self.batch_path, self.max_batches = batch_path, max_batches
        self.metrics = metrics
        self._in_flight = 0  # body bytes reserved by requests in progress
        self._batches = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @in_flight.setter
    def in_flight(self, value: int) -> None:
        self._in_flight = value
        self.metrics.bytes_in_flight.set(value)

    @property
    def batches(self) -> int:
        return self._batches

    @batches.setter
    def batches(self, value: int) -> None:
        self._batches = value
        self.metrics.batches_in_progress.set(value)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        path = scope["path"].rstrip("/") or "/"
        headers = dict(scope["headers"])
        is_json = headers.get(b"content-type", b"").split(b";")[0].strip().endswith(b"json")
        limit = self.json_limit if is_json else self.limits.get(path, self.default)
        declared = headers.get(b"content-length", b"")
        reserved = int(declared) if declared.isdigit() else 0
        if reserved > limit:
            return await self._answer(
                scope, send, self._too_large(path, limit, f"{reserved:,} bytes declared")
            )
        batch = path == self.batch_path
        if batch and self.batches >= self.max_batches:
            return await self._answer(
                scope,
                send,
                busy(
                    "busy",
                    f"{self.batches} batch calls are in progress "
                    f"(serving.max_concurrent_batches={self.max_batches})",
                    RETRY_BUSY_S,
                ),
            )
        if self.in_flight + reserved > self.max_in_flight:
            return await self._answer(scope, send, self._busy_bytes(reserved))
        self.in_flight += reserved
        self.batches += batch
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        received, done = 0, False

        async def guarded_receive() -> dict[str, Any]:
            nonlocal received, reserved, done
            if done:  # the body is in: later receives only wait for a disconnect
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise ApiError(
                    408,
                    "body_timeout",
                    f"the request body was not received within serving.body_timeout_s={self.timeout_s:g}s "
                    f"({received:,} bytes arrived)",
                    headers=CLOSE,
                ) from None
            if message["type"] != "http.request":
                return message  # http.disconnect: Starlette raises ClientDisconnect
            received += len(message.get("body", b""))
            done = not message.get("more_body", False)
            if received > limit:
                raise self._too_large(path, limit, f"more than {limit:,} bytes sent")
            if received > reserved:  # a chunked body: reserve as it arrives
                if self.in_flight + received - reserved > self.max_in_flight:
                    raise self._busy_bytes(received)
                self.in_flight += received - reserved
                reserved = received
            return message

        try:
            await self.app(scope, guarded_receive, send)
        finally:
            self.in_flight -= reserved
            self.batches -= batch

    def _too_large(self, path: str, limit: int, what: str) -> ApiError:
        return ApiError(
            413,
            "upload_too_large",
            f"request body too large for {path}: {what}, the limit is {limit:,} bytes "
            f"(serving.max_upload_bytes={self.per_image:,} per image, {self.json_limit:,} for JSON)",
            headers=CLOSE,
        )

    def _busy_bytes(self, size: int) -> ApiError:
        return busy(
            "busy",
            f"{self.in_flight:,} request bytes are being processed; {size:,} more would pass "
            f"serving.max_bytes_in_flight={self.max_in_flight:,}",
            RETRY_BUSY_S,
        )

    async def _answer(self, scope, send, error: ApiError) -> None:
        error.headers.update(CLOSE)
        await error.response()(scope, _no_body, send)


async def _no_body() -> dict[str, Any]:
    return {"type": "http.disconnect"}


class RequestMetrics:
    """ASGI middleware: count requests by route template and status, observe their latency, and write the
    access log (the path without its query string: a token passed as ``?token=`` stays out of the log).

    A client that goes away before its answer is counted under the status ``499``, not as a 500.
    """

    def __init__(self, app, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), None

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except ClientDisconnect:
            status = status or CLIENT_CLOSED  # nothing to answer: the client is gone
        except BaseException:
            status = status or 500
            raise
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            status = status or 500
            self.metrics.requests.labels(method=scope["method"], route=route, status=str(status)).inc()
            self.metrics.latency.labels(route=route).observe(elapsed)
            client = scope.get("client")
            access_log.info(
                '%s "%s %s" %s %.1fms',
                client[0] if client else "-",
                scope["method"],
                clip(scope["path"], 300),
                status,
                elapsed * 1000,
            )
