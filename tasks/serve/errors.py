"""Errors of the detection API: one JSON shape, ``{"error": code, "message": ...}``, for every failure.

Codes are stable (clients branch on them; docs/serving.md lists them). The handlers installed by
:func:`install` turn FastAPI's own errors (validation, 404, 405) into the same shape, and
:func:`responses` declares that shape in the OpenAPI schema (instead of FastAPI's ``HTTPValidationError``).
A message never carries more than :data:`MAX_MESSAGE` characters: input echoed in it is cut.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

MAX_MESSAGE = 400  # characters of a message; an echoed URL or value is cut to fit
MAX_ECHO = 120  # characters of one echoed input value


def clip(text: object, limit: int = MAX_ECHO) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit:,} more characters)"


class ApiError(Exception):
    """An answer with a 4xx/5xx status and the JSON envelope ``{"error": code, "message": ...}``."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        message = clip(message, MAX_MESSAGE)
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra
        self.headers = dict(headers or {})
        if status == 401:
            self.headers.setdefault("WWW-Authenticate", "Bearer")

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"error": self.code, "message": self.message, **self.extra}, self.status, headers=self.headers
        )


def busy(code: str, message: str, retry_after_s: float, status: int = 503) -> ApiError:
    """A 503 (or 429) that tells the client when to try again."""
    seconds = max(1, int(retry_after_s + 0.999))
    return ApiError(status, code, f"{message}; retry in {seconds}s", headers={"Retry-After": str(seconds)})


class ErrorBody(BaseModel):
    """What every error answers (the OpenAPI schema of all 4xx/5xx responses)."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="Stable code, e.g. upload_too_large, invalid_json, rate_limited.")
    message: str = Field(description="What was wrong and what would be accepted.")
    field: str | None = Field(None, description="The offending request field, for request-shape errors.")


ERROR_TEXT = {
    400: "Bad request (e.g. a URL that cannot be fetched, a model URI that is not a registry URI)",
    401: "No or wrong bearer token",
    403: "The token lacks the scope this needs",
    404: "Unknown resource",
    408: "The request body was not received in time",
    409: "The model to load does not exist",
    413: "Too large",
    415: "Not an accepted image type or body type",
    422: "Malformed body or invalid field",
    429: "Rate limited (Retry-After)",
    500: "The model failed to load",
    503: "No model loaded, or busy (Retry-After)",
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error responses of a route for the OpenAPI schema, all with :class:`ErrorBody`."""
    return {status: {"model": ErrorBody, "description": ERROR_TEXT[status]} for status in statuses}


def install(app: FastAPI) -> None:
    """Every error the app can raise answers in the one JSON shape."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        field = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body", "query"))
        message = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'] if p not in ('body', 'query')) or 'body'}: {e['msg']}"
            for e in errors
        )
        return ApiError(422, "invalid_request", message, field=field or None).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return ApiError(
            exc.status_code, code, f"{request.method} {clip(request.url.path)}: {exc.detail}"
        ).response()
