"""The detection API: FastAPI app factory, routes, limits and the model slot.

The loaded :class:`~tasks.model.detector.Detector` lives in one attribute of :class:`Service`. A
request reads it once and uses that object to the end, so ``POST /admin/reload`` can load the new
model in a worker thread and swap the attribute atomically: in-flight requests finish on the old
model, new ones get the new model, none fails. The server starts without a model (the embedded
stack starts serving before the first training): ``/readyz`` and ``/v1/detect`` answer 503 until a
load succeeds.

Every error is JSON ``{"error": code, "message": ...}`` with a stable code; see docs/serving.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from tasks.images import ImageRejected, decode_image
from tasks.serve.batching import MicroBatcher
from tasks.serve.metrics import Metrics
from tasks.serve.page import PAGE
from tasks.serve.records import PredictionLog, UploadCache, write_feedback
from tasks.settings import Settings, describe_validation_error
from tasks.storage import ObjectStore, sha256_hex

if TYPE_CHECKING:
    from PIL import Image

    from tasks.model.detector import Detector

log = logging.getLogger("vigil.serve")

ENVELOPE_BYTES = 64 * 1024  # multipart boundaries, headers and form fields around the image bytes
# decode_image's rejection codes: the format is wrong (415), or the image is (422).
UNSUPPORTED_TYPE = {"not_an_image", "format_not_allowed"}
TRUE = {"1", "true", "yes", "on"}


class ApiError(Exception):
    """An answer with a 4xx/5xx status and the JSON envelope ``{"error": code, "message": ...}``."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(
            {"error": self.code, "message": self.message, **self.extra}, self.status, headers=headers
        )


# -- request and response models (also the OpenAPI schema) -------------------------------------------


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UrlInput(Strict):
    url: str = Field(
        description="http(s) URL of the image; private, loopback and link-local hosts are refused."
    )
    explain: bool = Field(False, description="Also generate the model's reason.")


class Feedback(Strict):
    prediction_id: str = Field(pattern=r"^[0-9a-f]{32}$", description="From a /v1/detect answer.")
    label: Literal["synthetic", "authentic"] = Field(description="The correct label of that image.")


class ReloadInput(Strict):
    model: str | None = Field(
        None,
        description="models:/name/7, models:/name@alias or a folder; "
        "default models:/{model_name}@{serving.model_alias}.",
    )


class ModelRef(BaseModel):
    name: str
    version: str | None


class Prediction(BaseModel):
    prediction_id: str
    label: Literal["synthetic", "authentic"]
    p_fake: float
    threshold: float
    model: ModelRef
    latency_ms: float
    explanation: str | None = None


class Rejected(BaseModel):
    """A file of a batch that could not be scored; the batch's other files still are."""

    file: str
    status: int
    error: str
    message: str


class BatchPredictions(BaseModel):
    predictions: list[Prediction | Rejected] = Field(description="One entry per file, in the order sent.")
    latency_ms: float


def _upload_body(many: bool) -> dict[str, Any]:
    file_schema = {"type": "string", "format": "binary"}
    upload = {
        "type": "object",
        "required": ["file"],
        "properties": {
            "file": {"type": "array", "items": file_schema} if many else file_schema,
            "explain": {"type": "boolean"},
        },
    }
    content: dict[str, Any] = {"multipart/form-data": {"schema": upload}}
    if not many:
        content["application/json"] = {"schema": UrlInput.model_json_schema()}
    return {"requestBody": {"required": True, "content": content}}


# -- the service ------------------------------------------------------------------------------------


class Service:
    """Everything the routes share: settings, the model slot, batcher, log, cache, metrics."""

    def __init__(self, settings: Settings, model_source: str | Path | Detector | None) -> None:
        serving = settings.serving
        self.settings = settings
        self.default_source = f"models:/{settings.model_name}@{serving.model_alias}"
        self.model_source = model_source if model_source is not None else self.default_source
        self.detector: Detector | None = None
        self.load_error: str | None = None
        self.loading: str | None = None  # the source being loaded right now
        self.metrics = Metrics()
        self.batcher = MicroBatcher(
            serving.micro_batch_size,
            serving.micro_batch_wait_ms,
            enabled=serving.micro_batching,
            on_batch=self.metrics.batch_size.observe,
        )
        self.store = ObjectStore.from_settings(settings)
        self.inbox = ObjectStore(settings.inbox, endpoint_url=settings.s3_endpoint_url)
        self.log = PredictionLog(
            self.store,
            flush_rows=serving.log_flush_rows,
            flush_s=serving.log_flush_s,
            keep_images=serving.log_image_bytes,
        )
        self.uploads = UploadCache(
            Path(settings.home) / "serving" / "uploads",
            max_items=serving.upload_cache_items,
            max_bytes=serving.upload_cache_bytes,
        )
        self.recent: OrderedDict[str, dict[str, Any]] = OrderedDict()  # prediction id -> what was answered
        self.reload_lock = asyncio.Lock()
        self.image_policy = settings.images.model_copy(
            update={"max_file_bytes": min(settings.images.max_file_bytes, serving.max_upload_bytes)}
        )
        self.fetch_limits = settings.download.model_copy(
            update={
                "max_bytes": serving.max_upload_bytes,
                "timeout_s": serving.url_timeout_s,
                "retries": 0,
                "politeness_delay_s": 0.0,
                "allow_private_networks": serving.allow_private_urls,
            }
        )

    # -- the model slot -------------------------------------------------------------------------
    def require_detector(self) -> Detector:
        detector = self.detector
        if detector is None:
            why = (
                f" (loading {self.loading})"
                if self.loading
                else f" (last load failed: {self.load_error})"
                if self.load_error
                else ""
            )
            raise ApiError(
                503,
                "no_model",
                f"no model loaded yet{why}; it is loaded from {self.model_source} "
                "at start or by POST /admin/reload",
            )
        return detector

    async def load(self, source: str | Path | Detector) -> Detector:
        """Load ``source`` off the event loop and swap it in; the old model serves until then."""
        from tasks.model.detector import Detector

        async with self.reload_lock:  # one load at a time; a second reload waits for the first
            self.loading = str(source)
            try:
                detector = (
                    source
                    if isinstance(source, Detector)
                    else await asyncio.to_thread(Detector.load, source, settings=self.settings)
                )
            except Exception as exc:
                self.metrics.reloads.labels(outcome="failure").inc()
                self.load_error = f"{type(exc).__name__}: {exc}"
                raise
            finally:
                self.loading = None
            self.detector, self.load_error = detector, None
            self.metrics.set_model(detector.name, detector.version)
            self.metrics.reloads.labels(outcome="success").inc()
            log.info("serving %r", detector)
            return detector

    # -- inputs ---------------------------------------------------------------------------------
    def fetch_url(self, url: str) -> bytes:
        from tasks.net import FetchError, fetch

        try:
            return fetch(url, self.fetch_limits).data
        except FetchError as exc:
            raise ApiError(413 if exc.reason == "too_large" else 400, f"url_{exc.reason}", str(exc)) from None

    def decode(self, data: bytes, where: str) -> Image.Image:
        """Decode and validate one upload; an :class:`ApiError` (4xx) says what is wrong with it."""
        limit = self.settings.serving.max_upload_bytes
        if len(data) > limit:
            raise ApiError(
                413,
                "upload_too_large",
                f"{where}{len(data):,} bytes is more than serving.max_upload_bytes={limit:,}",
            )
        try:
            return decode_image(data, self.image_policy).image
        except ImageRejected as exc:
            status = 415 if exc.code in UNSUPPORTED_TYPE else 413 if exc.code == "too_large_file" else 422
            accepted = (
                f"; accepted formats: {', '.join(self.image_policy.allowed_formats)}" if status == 415 else ""
            )
            raise ApiError(status, exc.code, f"{where}{exc.message}{accepted}") from None

    def decode_all(self, items: list[tuple[str, bytes]]) -> list[Image.Image | ApiError]:
        """Each upload decoded, or the error that rejects it: one bad file does not sink the others."""
        outcomes: list[Image.Image | ApiError] = []
        for index, (name, data) in enumerate(items):
            where = f"{name}: " if len(items) == 1 else f"file {index + 1} ({name}): "
            try:
                outcomes.append(self.decode(data, where))
            except ApiError as exc:
                outcomes.append(exc)
        if all(isinstance(outcome, ApiError) for outcome in outcomes):
            raise outcomes[0]  # nothing to score: the call fails with the first file's reason
        return outcomes

    # -- predicting -----------------------------------------------------------------------------
    async def predict(
        self, detector: Detector, items: list[tuple[str, bytes]], kind: str, explain: bool, started: float
    ) -> list[dict[str, Any]]:
        """One answer per item, in order: a prediction, or (batch only) the reason the file was rejected."""
        outcomes = await asyncio.to_thread(self.decode_all, items)
        good = [i for i, outcome in enumerate(outcomes) if not isinstance(outcome, ApiError)]
        images = [outcomes[i] for i in good]
        scores = await self.batcher.score(detector, images)
        explanations = await asyncio.to_thread(detector.explain, images, scores) if explain else None
        latency_ms = round((time.perf_counter() - started) * 1000, 2)
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        ids = [uuid.uuid4().hex for _ in good]
        await asyncio.to_thread(self.cache_uploads, ids, [items[i][1] for i in good])
        answers: list[dict[str, Any]] = [
            {"file": name, "status": outcome.status, "error": outcome.code, "message": outcome.message}
            if isinstance(outcome, ApiError)
            else {}
            for (name, _), outcome in zip(items, outcomes, strict=True)
        ]
        for position, (index, p_fake) in enumerate(zip(good, scores, strict=True)):
            data = items[index][1]
            label = "synthetic" if p_fake >= detector.threshold else "authentic"
            answer = {
                "prediction_id": ids[position],
                "label": label,
                "p_fake": round(p_fake, 6),
                "threshold": round(detector.threshold, 6),
                "model": {"name": detector.name, "version": detector.version},
                "latency_ms": latency_ms,
            }
            if explanations is not None:
                answer["explanation"] = explanations[position]
            answers[index] = answer
            self.log.add(
                {
                    "prediction_id": ids[position],
                    "time": now,
                    "image_sha256": sha256_hex(data),
                    "p_fake": p_fake,
                    "label": label,
                    "threshold": detector.threshold,
                    "model_name": detector.name,
                    "model_version": detector.version,
                    "latency_ms": latency_ms,
                    "input_kind": kind,
                    "explained": explain,
                    "image_key": None,
                },
                data,
            )
            self.remember(
                ids[position],
                {
                    "p_fake": p_fake,
                    "predicted": label,
                    "model_name": detector.name,
                    "model_version": detector.version,
                    "predicted_at": now,
                },
            )
            self.metrics.p_fake.observe(p_fake)
            self.metrics.predictions.labels(label=label).inc()
        return answers

    def cache_uploads(self, ids: list[str], datas: list[bytes]) -> None:
        for prediction_id, data in zip(ids, datas, strict=True):
            self.uploads.put(prediction_id, data)

    def remember(self, prediction_id: str, summary: dict[str, Any]) -> None:
        self.recent[prediction_id] = summary
        while len(self.recent) > max(self.settings.serving.upload_cache_items, 1):
            self.recent.popitem(last=False)

    async def flush_log_periodically(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.settings.serving.log_flush_s))
            if self.log.due():
                try:
                    await asyncio.to_thread(self.log.flush)
                except Exception:
                    log.exception("writing the prediction log to %s failed; will retry", self.store.url)

    # -- admin ----------------------------------------------------------------------------------
    def check_admin(self, authorization: str | None) -> None:
        token = self.settings.admin_token
        if token is None or not token.get_secret_value():
            raise ApiError(
                403, "admin_disabled", "admin disabled: no admin token is configured (set VIGIL_ADMIN_TOKEN)"
            )
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise ApiError(401, "unauthorized", "an 'Authorization: Bearer <admin token>' header is required")
        if not hmac.compare_digest(given.strip().encode(), token.get_secret_value().encode()):
            raise ApiError(401, "unauthorized", "the bearer token is not the admin token")


# -- body size limit, enforced while reading ----------------------------------------------------------


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


# -- the app ------------------------------------------------------------------------------------------


def create_app(
    settings: Settings | None = None, model_source: str | Path | Detector | None = None
) -> FastAPI:
    """The detection API. ``model_source``: a models:/ URI, a folder or a loaded Detector; default the alias."""
    settings = settings or Settings()
    service = Service(settings, model_source)
    serving = settings.serving

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.batcher.start()
        flusher = asyncio.create_task(service.flush_log_periodically(), name="prediction-log")
        loader = asyncio.create_task(_initial_load(service), name="initial-load")
        try:
            yield
        finally:
            for task in (loader, flusher):
                task.cancel()
            await asyncio.gather(loader, flusher, return_exceptions=True)
            await service.batcher.stop()
            await asyncio.to_thread(service.log.flush)

    app = FastAPI(
        title="Vigil detection API",
        version="1",
        lifespan=lifespan,
        description="Is this image manipulated or synthesized? Verdict, P(fake) and the model's reason.",
    )
    app.state.service = service

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        message = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in exc.errors()
        )
        return ApiError(422, "invalid_request", message, field=field or None).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return ApiError(
            exc.status_code, code, f"{request.method} {request.url.path}: {exc.detail}"
        ).response()

    # -- pages and probes -----------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE)

    @app.get("/healthz", tags=["probes"], summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["probes"], summary="A model is loaded (503 until then)")
    async def readyz() -> dict[str, Any]:
        return {"status": "ready", "model": service.require_detector().describe()}

    @app.get("/metrics", tags=["probes"], summary="Prometheus metrics")
    async def metrics() -> Response:
        body, content_type = service.metrics.render()
        return Response(body, media_type=content_type)

    # -- detection ------------------------------------------------------------------------------
    @app.post(
        "/v1/detect",
        response_model=Prediction,
        response_model_exclude_unset=True,
        tags=["detection"],
        openapi_extra=_upload_body(False),
        summary='One image: multipart `file`, or JSON {"url": ...}',
    )
    async def detect(request: Request, explain: bool = False) -> dict[str, Any]:
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

    @app.post(
        "/v1/detect/batch",
        response_model=BatchPredictions,
        response_model_exclude_unset=True,
        tags=["detection"],
        openapi_extra=_upload_body(True),
        summary="Several images: multipart `file` fields",
    )
    async def detect_batch(request: Request, explain: bool = False) -> dict[str, Any]:
        started = time.perf_counter()
        detector = service.require_detector()
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise ApiError(
                415, "unsupported_media_type", "send multipart/form-data with one 'file' field per image"
            )
        form = await _form(request, max_files=serving.max_batch_images)
        items = await _files(form, expect_many=True)
        if len(items) > serving.max_batch_images:
            raise ApiError(
                413,
                "batch_too_large",
                f"{len(items)} images is more than serving.max_batch_images={serving.max_batch_images}",
            )
        explain = explain or str(form.get("explain", "")).lower() in TRUE
        answers = await service.predict(detector, items, "batch", explain, started)
        return {"predictions": answers, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}

    @app.post("/v1/feedback", tags=["detection"], summary="The correct label of an earlier prediction")
    async def feedback(body: Feedback) -> dict[str, Any]:
        cached = await asyncio.to_thread(service.uploads.get, body.prediction_id)
        if cached is None:
            raise ApiError(
                404,
                "unknown_prediction",
                f"prediction {body.prediction_id} is unknown or its image is "
                f"no longer kept (the last {serving.upload_cache_items} "
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
    @app.post(
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
    async def reload(request: Request) -> dict[str, Any]:
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

    app.add_middleware(
        BodyLimit,
        default=ENVELOPE_BYTES,
        per_image=serving.max_upload_bytes,
        limits={
            "/v1/detect": serving.max_upload_bytes + ENVELOPE_BYTES,
            "/v1/detect/batch": serving.max_upload_bytes * serving.max_batch_images + ENVELOPE_BYTES,
        },
    )
    app.add_middleware(RequestMetrics, metrics=service.metrics)
    return app


async def _initial_load(service: Service) -> None:
    try:
        await service.load(service.model_source)
    except Exception as exc:  # noqa: BLE001 - serve without a model; /admin/reload loads one later
        log.warning(
            "no model loaded from %s: %s; /readyz answers 503 until POST /admin/reload succeeds",
            service.model_source,
            exc,
        )


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
