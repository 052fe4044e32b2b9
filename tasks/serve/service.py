"""The detection service: the model slot, input decoding, prediction and what serving records.

The loaded :class:`~tasks.model.detector.Detector` lives in one attribute of :class:`Service`. A
request reads it once and uses that object to the end, so ``POST /admin/reload`` can load the new
model in a worker thread and swap the attribute atomically: in-flight requests finish on the old
model, new ones get the new model, none fails. The server starts without a model (the embedded
stack starts serving before the first training): ``/readyz`` and ``/v1/detect`` answer 503 until a
load succeeds.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.images import ImageRejected, decode_image
from tasks.net import FetchError, fetch
from tasks.serve.batching import MicroBatcher
from tasks.serve.errors import ApiError
from tasks.serve.metrics import Metrics
from tasks.serve.records import PredictionLog, UploadCache
from tasks.settings import Settings
from tasks.storage import ObjectStore, sha256_hex

if TYPE_CHECKING:
    from PIL import Image

    from tasks.model.detector import Detector

log = logging.getLogger("vigil.serve")

# decode_image's rejection codes: the format is wrong (415), or the image is (422).
UNSUPPORTED_TYPE = {"not_an_image", "format_not_allowed"}


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


async def initial_load(service: Service) -> None:
    try:
        await service.load(service.model_source)
    except Exception as exc:  # noqa: BLE001 - serve without a model; /admin/reload loads one later
        log.warning(
            "no model loaded from %s: %s; /readyz answers 503 until POST /admin/reload succeeds",
            service.model_source,
            exc,
        )
