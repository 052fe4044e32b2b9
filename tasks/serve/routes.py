"""The routes of the detection API (one ``APIRouter``); the work is done by :class:`~tasks.serve.service.Service`.

Every body is read and parsed here, defensively (:func:`parse_json`): a malformed body of any kind is a
4xx JSON answer, never a 500.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from tasks.html import render
from tasks.serve.auth import Client
from tasks.serve.errors import ApiError, clip, responses
from tasks.serve.schemas import (
    BatchPredictions,
    Feedback,
    FeedbackAnswer,
    Prediction,
    ReloadAnswer,
    ReloadInput,
    UrlInput,
    json_body,
    upload_body,
)
from tasks.serve.service import Service, is_missing
from tasks.settings import describe_validation_error

TRUE = {"1", "true", "yes", "on"}
MAX_JSON_DEPTH = 32  # nesting of a JSON body; ours are flat objects
MAX_NUMBER_DIGITS = 64  # digits of one JSON number
router = APIRouter()
# The HTML pages (upload page, Swagger UI, ReDoc) may load nothing from elsewhere: also no logo of ReDoc's.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'"
)


def get_service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


def client_of(service: Service, request: Request) -> Client:
    """Who sent ``request``: its token, else its address (401 for an unknown token)."""
    address = request.client.host if request.client else None
    return service.tokens.identify(request.headers.get("authorization"), address)


# -- pages and probes -----------------------------------------------------------------------
@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page() -> HTMLResponse:
    return HTMLResponse(render("serve/page.html"), headers={"Content-Security-Policy": PAGE_POLICY})


@router.get("/healthz", tags=["probes"], summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz", tags=["probes"], summary="A model is loaded (503 until then)", responses=responses(503)
)
async def readyz(service: ServiceDep) -> dict[str, Any]:
    return {"status": "ready", "model": service.describe()}


@router.get("/metrics", tags=["probes"], summary="Prometheus metrics")
async def metrics(service: ServiceDep) -> Response:
    body, content_type = service.metrics.render()
    return Response(body, media_type=content_type)


# -- detection ------------------------------------------------------------------------------
SourceParam = Annotated[
    str,
    Query(
        pattern=r"^[a-z0-9][a-z0-9_.-]{0,39}$",
        description="Where the image comes from (the monitor reports per source), e.g. 'x', 'upload-page'.",
    ),
]
DETECT_ERRORS = responses(400, 401, 408, 413, 415, 422, 429, 503)


@router.post(
    "/v1/detect",
    response_model=Prediction,
    response_model_exclude_unset=True,
    tags=["detection"],
    openapi_extra=upload_body(False),
    responses=DETECT_ERRORS,
    summary='One image: multipart `file`, or JSON {"url": ...}',
)
async def detect(
    service: ServiceDep, request: Request, explain: bool = False, source: SourceParam = "api"
) -> dict[str, Any]:
    started = time.perf_counter()
    client = client_of(service, request)
    service.tokens.require(client, "detect", "detection")
    service.detect_limit.take(client.key)
    cascade = service.cascade()
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await _form(request, max_files=1)
        items = _files(form, expect_many=False)
        explain = explain or str(form.get("explain", "")).lower() in TRUE
        kind = "upload"
    elif content_type.startswith("application/json"):
        body = parse_json(UrlInput, await request.body())
        data = await service.fetch_url(body.url)
        items, kind, explain = [(clip(body.url), lambda: data)], "url", explain or body.explain
    else:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type {clip(content_type) or '(none)'!r}: send multipart/form-data with a 'file', "
            "or application/json with a 'url'",
        )
    answers = await service.predict(cascade, items, kind, explain, started, source=source, client=client.key)
    return answers[0]


@router.post(
    "/v1/detect/batch",
    response_model=BatchPredictions,
    response_model_exclude_unset=True,
    tags=["detection"],
    openapi_extra=upload_body(True),
    responses=DETECT_ERRORS,
    summary="Several images: multipart `file` fields",
)
async def detect_batch(
    service: ServiceDep, request: Request, explain: bool = False, source: SourceParam = "api"
) -> dict[str, Any]:
    started = time.perf_counter()
    client = client_of(service, request)
    service.tokens.require(client, "detect", "detection")
    service.detect_limit.take(client.key)
    cascade = service.cascade()
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(
            415, "unsupported_media_type", "send multipart/form-data with one 'file' field per image"
        )
    limit = service.settings.serving.max_batch_images
    form = await _form(request, max_files=limit)
    items = _files(form, expect_many=True)
    if len(items) > limit:
        raise ApiError(
            413,
            "batch_too_large",
            f"{len(items)} images is more than serving.max_batch_images={limit}",
        )
    service.detect_limit.charge(client.key, len(items) - 1)  # a batch spends one token per image
    explain = explain or str(form.get("explain", "")).lower() in TRUE
    answers = await service.predict(
        cascade, items, "batch", explain, started, source=source, client=client.key
    )
    return {"predictions": answers, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


@router.post(
    "/v1/feedback",
    response_model=FeedbackAnswer,
    tags=["detection"],
    openapi_extra=json_body(Feedback),
    responses=responses(401, 404, 408, 413, 422, 429),
    summary="Claim the correct label of an earlier prediction (trusted with a 'relabel' token)",
)
async def feedback(service: ServiceDep, request: Request) -> dict[str, Any]:
    client = client_of(service, request)
    service.tokens.require(client, "feedback", "feedback")
    service.feedback_limit.take(client.key)
    body = parse_json(Feedback, await request.body())
    return await service.feedback(client, body.prediction_id, body.label)


# -- admin ------------------------------------------------------------------------------------
@router.post(
    "/admin/reload",
    response_model=ReloadAnswer,
    tags=["admin"],
    summary="Load a registered version and swap it in (bearer token with the 'reload' scope)",
    openapi_extra=json_body(ReloadInput, required=False),
    responses=responses(400, 401, 403, 408, 409, 413, 422, 500),
)
async def reload(service: ServiceDep, request: Request) -> dict[str, Any]:
    if not service.tokens.has_scope("reload"):
        raise ApiError(
            403,
            "admin_disabled",
            "admin disabled: no token has the 'reload' scope (set VIGIL_ADMIN_TOKEN or serving.tokens)",
        )
    service.tokens.require(client_of(service, request), "reload", "POST /admin/reload")
    raw = await request.body()
    requested = parse_json(ReloadInput, raw).model if raw.strip() else None
    source = service.registry_source(requested)
    previous = service.second if service.is_second_stage(source) else service.detector
    try:
        detector = await service.load(source)
    except Exception as exc:  # noqa: BLE001 - the old model keeps serving; the caller gets the reason
        still = (
            f"; still serving {previous.name} version {previous.version}"
            if previous
            else "; no model is loaded"
        )
        raise ApiError(
            409 if is_missing(exc) else 500,
            "reload_failed",
            f"could not load {source}: {type(exc).__name__}: {clip(exc, 200)}{still}",
        ) from None
    return {
        "status": "reloaded",
        "model": detector.describe(),
        "previous": previous.describe() if previous else None,
    }


# -- bodies -------------------------------------------------------------------------------------
class _NumberTooLong(ValueError):
    pass


def _number(parse):
    def bounded(text: str):
        if len(text) > MAX_NUMBER_DIGITS:
            raise _NumberTooLong(f"a number of {len(text):,} characters (at most {MAX_NUMBER_DIGITS})")
        return parse(text)

    return bounded


def _reject_constant(name: str):
    raise _NumberTooLong(f"{name} is not a JSON number")


def _depth(text: str) -> int:
    """The deepest nesting of arrays and objects in ``text`` (brackets inside strings do not count)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_JSON_DEPTH:
                    return deepest
        elif char in "]}":
            depth -= 1
    return deepest


def parse_json(model: type[BaseModel], raw: bytes) -> Any:
    """A JSON body into ``model``; 422 ``invalid_json`` for anything that is not small, flat, valid
    UTF-8 JSON (the position of a syntax error, not the input, is echoed), ``invalid_request`` naming
    the field for a wrong shape."""

    def invalid(why: str) -> ApiError:
        return ApiError(422, "invalid_json", f"the body is not valid JSON: {why}")

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise invalid(f"it is not UTF-8 (byte {exc.start})") from None
    if _depth(text) > MAX_JSON_DEPTH:
        raise invalid(f"nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        data = json.loads(
            text or "null",
            parse_int=_number(int),
            parse_float=_number(float),
            parse_constant=_reject_constant,
        )
    except json.JSONDecodeError as exc:
        raise invalid(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (_NumberTooLong, RecursionError) as exc:
        raise invalid(str(exc) or "nested too deeply") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ApiError(
            422,
            "invalid_request",
            describe_validation_error(exc, data),
            field=".".join(str(p) for p in first["loc"]) or None,
        ) from None


async def _form(request: Request, max_files: int):
    try:
        return await request.form(max_files=max_files, max_fields=10)
    except StarletteHTTPException as exc:  # too many files or fields, malformed multipart
        if "files" in str(exc.detail).lower():
            raise ApiError(
                413, "batch_too_large", f"{exc.detail} (serving.max_batch_images={max_files})"
            ) from None
        raise ApiError(400, "invalid_multipart", f"malformed multipart body: {clip(exc.detail)}") from None


def _files(form, expect_many: bool) -> list[tuple[str, Callable[[], bytes]]]:
    """(name, read) of each uploaded file: the parser spooled them to disk; they are read one at a time."""
    uploads = [value for key, value in form.multi_items() if key == "file"]
    if not uploads:
        raise ApiError(
            422, "invalid_request", "no image: send it as the multipart field 'file'", field="file"
        )
    if any(not isinstance(upload, UploadFile) for upload in uploads):
        raise ApiError(
            422, "invalid_request", "the field 'file' must be a file upload, not text", field="file"
        )
    if len(uploads) > 1 and not expect_many:
        raise ApiError(
            422,
            "invalid_request",
            "one 'file' per /v1/detect call; use /v1/detect/batch for more",
            field="file",
        )
    return [(clip(upload.filename or "upload"), upload.file.read) for upload in uploads]
