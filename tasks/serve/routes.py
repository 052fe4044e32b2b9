"""The routes of the detection API (one ``APIRouter``); the work is done by :class:`~tasks.serve.service.Service`."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from tasks.html import render
from tasks.serve.errors import ApiError
from tasks.serve.records import write_feedback
from tasks.serve.schemas import BatchPredictions, Feedback, Prediction, ReloadInput, UrlInput, upload_body
from tasks.serve.service import Service
from tasks.settings import describe_validation_error
from tasks.storage import sha256_hex

TRUE = {"1", "true", "yes", "on"}
router = APIRouter()


def get_service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


# -- pages and probes -----------------------------------------------------------------------
@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page() -> HTMLResponse:
    return HTMLResponse(render("serve/page.html"))


@router.get("/healthz", tags=["probes"], summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", tags=["probes"], summary="A model is loaded (503 until then)")
async def readyz(service: ServiceDep) -> dict[str, Any]:
    return {"status": "ready", "model": service.require_detector().describe()}


@router.get("/metrics", tags=["probes"], summary="Prometheus metrics")
async def metrics(service: ServiceDep) -> Response:
    body, content_type = service.metrics.render()
    return Response(body, media_type=content_type)


# -- detection ------------------------------------------------------------------------------
@router.post(
    "/v1/detect",
    response_model=Prediction,
    response_model_exclude_unset=True,
    tags=["detection"],
    openapi_extra=upload_body(False),
    summary='One image: multipart `file`, or JSON {"url": ...}',
)
async def detect(service: ServiceDep, request: Request, explain: bool = False) -> dict[str, Any]:
    started = time.perf_counter()
    detector = service.require_detector()
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await _form(request, max_files=1)
        ((name, data),) = await _files(form, expect_many=False)
        explain = explain or str(form.get("explain", "")).lower() in TRUE
        kind = "upload"
    elif content_type.startswith("application/json"):
        body = _parse(UrlInput, await request.body())
        data = await asyncio.to_thread(service.fetch_url, body.url)
        name, kind, explain = body.url, "url", explain or body.explain
    else:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type {content_type or '(none)'!r}: send "
            "multipart/form-data with a 'file', or application/json "
            "with a 'url'",
        )
    answers = await service.predict(detector, [(name, data)], kind, explain, started)
    return answers[0]


@router.post(
    "/v1/detect/batch",
    response_model=BatchPredictions,
    response_model_exclude_unset=True,
    tags=["detection"],
    openapi_extra=upload_body(True),
    summary="Several images: multipart `file` fields",
)
async def detect_batch(service: ServiceDep, request: Request, explain: bool = False) -> dict[str, Any]:
    started = time.perf_counter()
    detector = service.require_detector()
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(
            415, "unsupported_media_type", "send multipart/form-data with one 'file' field per image"
        )
    form = await _form(request, max_files=service.settings.serving.max_batch_images)
    items = await _files(form, expect_many=True)
    if len(items) > service.settings.serving.max_batch_images:
        raise ApiError(
            413,
            "batch_too_large",
            f"{len(items)} images is more than service.settings.serving.max_batch_images={service.settings.serving.max_batch_images}",
        )
    explain = explain or str(form.get("explain", "")).lower() in TRUE
    answers = await service.predict(detector, items, "batch", explain, started)
    return {"predictions": answers, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


@router.post("/v1/feedback", tags=["detection"], summary="The correct label of an earlier prediction")
async def feedback(service: ServiceDep, body: Feedback) -> dict[str, Any]:
    cached = await asyncio.to_thread(service.uploads.get, body.prediction_id)
    if cached is None:
        raise ApiError(
            404,
            "unknown_prediction",
            f"prediction {body.prediction_id} is unknown or its image is "
            f"no longer kept (the last {service.settings.serving.upload_cache_items} "
            "images are kept for feedback)",
        )
    data, ext = cached
    record = {
        "prediction_id": body.prediction_id,
        "label": body.label,
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "image_sha256": sha256_hex(data),
        **service.recent.get(body.prediction_id, {}),
    }
    key = await asyncio.to_thread(
        write_feedback, service.inbox, service.store, body.prediction_id, body.label, data, ext, record
    )
    return {
        "status": "stored",
        "prediction_id": body.prediction_id,
        "label": body.label,
        "inbox_uri": service.inbox.uri(key),
    }


# -- admin ------------------------------------------------------------------------------------
@router.post(
    "/admin/reload",
    tags=["admin"],
    summary="Load a model and swap it in (bearer token)",
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": ReloadInput.model_json_schema()}},
        }
    },
)
async def reload(service: ServiceDep, request: Request) -> dict[str, Any]:
    service.check_admin(request.headers.get("authorization"))
    raw = await request.body()
    source = (_parse(ReloadInput, raw).model if raw.strip() else None) or service.default_source
    previous = service.detector
    try:
        detector = await service.load(source)
    except Exception as exc:  # noqa: BLE001 - the old model keeps serving; the caller gets the reason
        status = 409 if isinstance(exc, LookupError | FileNotFoundError) else 500
        still = (
            f"; still serving {previous.name} version {previous.version}"
            if previous
            else "; no model is loaded"
        )
        raise ApiError(
            status, "reload_failed", f"could not load {source}: {type(exc).__name__}: {exc}{still}"
        ) from None
    return {
        "status": "reloaded",
        "model": detector.describe(),
        "previous": previous.describe() if previous else None,
    }


def _parse(model: type[BaseModel], raw: bytes) -> Any:
    """A JSON body into ``model``; 422 naming the field, or the position of a syntax error."""
    try:
        data = json.loads(raw or b"null")
    except json.JSONDecodeError as exc:
        raise ApiError(
            422,
            "invalid_json",
            f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
        ) from None
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
        code = "batch_too_large" if "files" in str(exc.detail).lower() else "invalid_multipart"
        raise ApiError(
            413 if code == "batch_too_large" else 400,
            code,
            f"{exc.detail} (serving.max_batch_images={max_files})"
            if code == "batch_too_large"
            else f"malformed multipart body: {exc.detail}",
        ) from None


async def _files(form, expect_many: bool) -> list[tuple[str, bytes]]:
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
    return [(upload.filename or "upload", await upload.read()) for upload in uploads]
