"""The detection service: the model slot, input decoding, prediction and what serving records.

The loaded detectors live in two attributes of :class:`Service`: ``detector`` (the first stage, the
fast probe family, ``model_name``) and ``second`` (the VLM, ``vlm_model_name``, loaded with
``serving.cascade``). A request reads both once and uses them to the end (:class:`~tasks.model.cascade.Cascade`),
so ``POST /admin/reload`` can load a new model in a worker thread and swap one attribute atomically:
in-flight requests finish on the old model, new ones get the new one, none fails. The server starts
without a model (the embedded stack starts serving before the first training): ``/readyz`` and
``/v1/detect`` answer 503 until the first stage is loaded.

Every answer carries the verdict (``synthetic``, ``authentic`` or ``uncertain`` within
``serving.abstain_margin`` of the deciding stage's threshold), which stage decided, and the provenance
the upload's own metadata claims (C2PA, IPTC DigitalSourceType, generator text chunks) as a field of
its own — never mixed into P(fake). Each prediction is logged with the first stage's embedding for the
monitor; the bytes of predictions near the threshold and of a random audit sample are kept for the
review queue.

URL input is fetched in its own small thread pool (``serving.url_fetch_concurrency``), with a total
deadline, so slow remote hosts can neither take the threads that decode and score uploads nor hold a
request longer than ``serving.url_timeout_s``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.collect.provenance import Provenance
from tasks.collect.provenance import detect as detect_provenance
from tasks.images import ImageRejected, decode_image
from tasks.model.cascade import Cascade
from tasks.net import FetchError, fetch
from tasks.registry import Registry, Tags
from tasks.serve.auth import Client, RateLimiter, Tokens
from tasks.serve.batching import MicroBatcher
from tasks.serve.errors import ApiError, busy, clip
from tasks.serve.metrics import Metrics
from tasks.serve.records import PredictionLog, UploadCache, accept_claim, record_claim
from tasks.settings import Settings
from tasks.storage import ObjectStore, sha256_hex

if TYPE_CHECKING:
    from collections.abc import Callable

    from PIL import Image

    from tasks.model.detector import Detector

    Upload = tuple[str, Callable[[], bytes]]  # (name, read its bytes): read one at a time, in a worker


@dataclass(frozen=True)
class Prepared:
    """An upload ready to score: its image, its hash, and its bytes only when the log keeps them."""

    image: Image.Image
    sha256: str
    data: bytes | None
    provenance: Provenance | None = None


log = logging.getLogger("vigil.serve")

# decode_image's rejection codes: the format is wrong (415), or the image is (422).
UNSUPPORTED_TYPE = {"not_an_image", "format_not_allowed"}
# Fetch failures a client must not tell apart: which internal addresses exist, which ports are open.
UNREACHABLE = {"blocked_address", "dns_failure", "connection_failed"}
REGISTRY_URI = re.compile(
    r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[A-Za-z0-9_-]{1,64})|/(?P<version>\d{1,9}))$"
)


class Service:
    """Everything the routes share: settings, the model slot, batcher, log, cache, metrics."""

    def __init__(self, settings: Settings, model_source: str | Path | Detector | None) -> None:
        serving = settings.serving
        self.settings = settings
        self.default_source = f"models:/{settings.model_name}@{serving.model_alias}"
        self.model_source = model_source if model_source is not None else self.default_source
        self.detector: Detector | None = None  # the first stage
        self.second: Detector | None = None  # the VLM (cascade)
        self.second_band: tuple[float, float] | None = None  # its tuned band (cascade_band tag), if any
        self.second_source = (
            f"models:/{settings.vlm_model_name}@{serving.model_alias}" if serving.cascade else None
        )
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
        self.feedback_lock = asyncio.Lock()  # one claim at a time: a replay sees the first one's record
        self.tokens = Tokens(settings)
        self.detect_limit = RateLimiter("detect", serving.rate_limits.detect)
        self.feedback_limit = RateLimiter("feedback", serving.rate_limits.feedback)
        self.url_pool = ThreadPoolExecutor(serving.url_fetch_concurrency, thread_name_prefix="url-fetch")
        self.url_slots = asyncio.Semaphore(serving.url_fetch_concurrency)
        self.image_policy = settings.images.model_copy(
            update={"max_file_bytes": min(settings.images.max_file_bytes, serving.max_upload_bytes)}
        )
        self.fetch_limits = settings.download.model_copy(
            update={
                "max_bytes": serving.max_upload_bytes,
                "timeout_s": min(serving.url_timeout_s, settings.download.timeout_s),
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

    def cascade(self) -> Cascade:
        """The detectors of this request (read once: a reload swaps them for later requests only)."""
        first = self.require_detector()
        return Cascade(first, self.second, self.band())

    def band(self) -> tuple[float, float] | None:
        """The cascade band: the VLM version's tuned one (``vigil tune --cascade``), else the setting."""
        tuned = self.second_band
        return self.settings.serving.cascade_band if tuned is None else (tuned or None)

    def describe(self) -> dict[str, Any]:
        first = self.require_detector()
        return {**first.describe(), "cascade": self.cascade().describe() if self.second else None}

    def registry_source(self, requested: str | None) -> str:
        """The model a reload loads: a registry URI of this server's first- or second-stage model; 400 else."""
        if requested is None:
            return self.default_source
        names = {self.settings.model_name, *([self.settings.vlm_model_name] if self.second_source else [])}
        match = REGISTRY_URI.match(requested)
        if match is None or match["name"] not in names:
            shown = " or ".join(f"models:/{n}/<version>, models:/{n}@<alias>" for n in sorted(names))
            raise ApiError(
                400,
                "invalid_model_uri",
                f"cannot reload {clip(requested)!r}: reload loads registered versions only, {shown}",
                field="model",
            )
        return requested

    def is_second_stage(self, source: str | Path | Detector) -> bool:
        match = REGISTRY_URI.match(str(source))
        return bool(self.second_source and match and match["name"] == self.settings.vlm_model_name)

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
            if self.is_second_stage(source):
                self.second_band = await asyncio.to_thread(tuned_band, self.settings, detector)
                self.second = detector
            else:
                self.detector, self.load_error = detector, None
            self.metrics.set_model(detector.name, detector.version)
            self.metrics.reloads.labels(outcome="success").inc()
            log.info("serving %r", detector)
            return detector

    # -- inputs ---------------------------------------------------------------------------------
    async def fetch_url(self, url: str) -> bytes:
        """The body at ``url``, fetched in the URL pool within ``serving.url_timeout_s`` in all."""
        serving = self.settings.serving
        try:
            await asyncio.wait_for(self.url_slots.acquire(), serving.url_timeout_s)
        except TimeoutError:
            raise busy(
                "busy",
                f"{serving.url_fetch_concurrency} URL fetches are in progress "
                "(serving.url_fetch_concurrency)",
                serving.url_timeout_s,
            ) from None
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.url_pool, self._fetch, url)
        finally:
            self.url_slots.release()

    def _fetch(self, url: str) -> bytes:
        shown = clip(url)
        try:
            return fetch(url, self.fetch_limits, deadline_s=self.settings.serving.url_timeout_s).data
        except FetchError as exc:
            if exc.reason in UNREACHABLE:
                log.info("URL input refused or unreachable: %s", exc)  # the detail stays in our log
                raise ApiError(
                    400,
                    "url_unreachable",
                    f"could not fetch {shown}: the host is unreachable or not allowed "
                    "(private, loopback and link-local addresses are never fetched)",
                ) from None
            if exc.reason == "timeout":
                raise ApiError(
                    400,
                    "url_timeout",
                    f"could not fetch {shown} within serving.url_timeout_s="
                    f"{self.settings.serving.url_timeout_s:g}s",
                ) from None
            status = 413 if exc.reason == "too_large" else 400
            detail = str(exc).replace(url, shown)
            raise ApiError(status, f"url_{exc.reason}", detail) from None

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

    def prepare(self, items: list[Upload], ids: list[str]) -> list[Prepared | ApiError]:
        """Each upload read, decoded, hashed and cached one after the other (only one upload's bytes are
        in memory at a time), or the error that rejects it: one bad file does not sink the others."""
        outcomes: list[Prepared | ApiError] = []
        for index, (name, read) in enumerate(items):
            where = f"{name}: " if len(items) == 1 else f"file {index + 1} ({name}): "
            data = read()
            try:
                image = self.decode(data, where)
            except ApiError as exc:
                outcomes.append(exc)
                continue
            self.uploads.put(ids[index], data)
            outcomes.append(Prepared(image, sha256_hex(data), data, detect_provenance(data)))
        if all(isinstance(outcome, ApiError) for outcome in outcomes):
            raise outcomes[0]  # nothing to score: the call fails with the first file's reason
        return outcomes

    # -- predicting -----------------------------------------------------------------------------
    def verdict(self, p_fake: float, threshold: float) -> str:
        if abs(p_fake - threshold) < self.settings.serving.abstain_margin:
            return "uncertain"
        return "synthetic" if p_fake >= threshold else "authentic"

    def explanation(self, reason: str, label: str, p_fake: float, threshold: float) -> str:
        """The deciding model's reason; within the abstain band it says first that the answer is uncertain
        (the model's own reason argues for the side it leans to)."""
        if label != "uncertain":
            return reason
        side = "synthetic" if p_fake >= threshold else "authentic"
        return (
            f"Uncertain: P(fake) {p_fake:.2f} is within {self.settings.serving.abstain_margin} of the "
            f"threshold {threshold:.2f}; the model leans {side}. {reason}"
        )

    def review_candidate(self, p_fake: float, threshold: float, prediction_id: str) -> str | None:
        """Why serving keeps this image's bytes for the review queue: near the threshold, or the audit sample."""
        serving = self.settings.serving
        if abs(p_fake - threshold) < serving.review_margin:
            return "near_threshold"
        if int(prediction_id[:8], 16) / 0xFFFFFFFF < serving.audit_rate:  # ids are random: a fair sample
            return "audit"
        return None

    async def predict(
        self,
        cascade: Cascade,
        items: list[Upload],
        kind: str,
        explain: bool,
        started: float,
        *,
        source: str = "api",
        client: str = "",
    ) -> list[dict[str, Any]]:
        """One answer per item, in order: a prediction, or (batch only) the reason the file was rejected."""
        ids = [uuid.uuid4().hex for _ in items]
        outcomes = await asyncio.to_thread(self.prepare, items, ids)
        good = [i for i, outcome in enumerate(outcomes) if not isinstance(outcome, ApiError)]
        images = [outcomes[i].image for i in good]  # type: ignore[union-attr]
        first = await self.batcher.score(cascade.first, images)
        p_first = np.array([p for p, _ in first])
        decided, thresholds, stages = (
            p_first.copy(),
            np.full(len(good), cascade.first.threshold),
            ["probe"] * len(good),
        )
        # explain=true goes to the VLM when one is deployed: it is the stage that writes reasons.
        to_second = np.ones(len(p_first), bool) if explain and cascade.second else cascade.routed(p_first)
        routed = np.flatnonzero(to_second)
        if len(routed):
            second = await self.batcher.score(cascade.second, [images[i] for i in routed])
            for i, (p, _) in zip(routed, second, strict=True):
                decided[i], thresholds[i], stages[i] = p, cascade.second.threshold, "second"
        explanations = (
            await asyncio.to_thread(cascade.explainer().explain, images, decided) if explain else None
        )
        latency_ms = round((time.perf_counter() - started) * 1000, 2)
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        answers: list[dict[str, Any]] = [
            {"file": name, "status": outcome.status, "error": outcome.code, "message": outcome.message}
            if isinstance(outcome, ApiError)
            else {}
            for (name, _), outcome in zip(items, outcomes, strict=True)
        ]
        for position, index in enumerate(good):
            prepared = outcomes[index]
            assert isinstance(prepared, Prepared)
            prediction_id = ids[index]
            p_fake, threshold, stage = float(decided[position]), float(thresholds[position]), stages[position]
            deciding = cascade.second if stage == "second" else cascade.first
            stage = deciding.card.family  # which detector decided: "probe" or "vlm"
            label = self.verdict(p_fake, threshold)
            answer = {
                "prediction_id": prediction_id,
                "label": label,
                "p_fake": round(p_fake, 6),
                "threshold": round(threshold, 6),
                "stage": stage,
                "model": {"name": deciding.name, "version": deciding.version},
                "provenance": _provenance(prepared.provenance),
                "latency_ms": latency_ms,
            }
            if explanations is not None:
                answer["explanation"] = self.explanation(explanations[position], label, p_fake, threshold)
            answers[index] = answer
            candidate = self.review_candidate(p_fake, threshold, prediction_id)
            self.log.add(
                {
                    "prediction_id": prediction_id,
                    "time": now,
                    "image_sha256": prepared.sha256,
                    "p_fake": p_fake,
                    "label": label,
                    "threshold": threshold,
                    "model_name": deciding.name,
                    "model_version": deciding.version,
                    "latency_ms": latency_ms,
                    "input_kind": kind,
                    "explained": explain,
                    "image_key": None,
                    "source": source,
                    "client": client,
                    "embedding": first[position][1].astype(np.float32).tolist(),
                    "stage": stage,
                    "first_p_fake": float(p_first[position]),
                    "first_model_name": cascade.first.name,
                    "first_model_version": cascade.first.version,
                    "review_candidate": candidate,
                },
                prepared.data,
                keep=candidate is not None,
            )
            self.remember(
                prediction_id,
                {
                    "p_fake": p_fake,
                    "predicted": label,
                    "model_name": deciding.name,
                    "model_version": deciding.version,
                    "predicted_at": now,
                },
            )
            self.metrics.p_fake.observe(p_fake)
            self.metrics.predictions.labels(label=label).inc()
        return answers

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

    # -- feedback -----------------------------------------------------------------------------
    async def feedback(self, client: Client, prediction_id: str, label: str) -> dict[str, Any]:
        """Record the claim that ``prediction_id``'s image is ``label``; a ``relabel`` client's claim is
        accepted at once (a trusted label), anyone else's awaits review and changes no label."""
        cached = await asyncio.to_thread(self.uploads.get, prediction_id)
        if cached is None:
            raise ApiError(
                404,
                "unknown_prediction",
                f"prediction {prediction_id} is unknown or its image is no longer kept "
                f"(the last {self.settings.serving.upload_cache_items} images are kept for feedback)",
            )
        data, ext = cached
        summary = self.recent.get(prediction_id, {})
        claim = {
            "prediction_id": prediction_id,
            "claimed_label": label,
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "client": client.key,
            "model_name": summary.get("model_name"),
            "model_version": summary.get("model_version"),
            "p_fake": summary.get("p_fake"),
            "predicted": summary.get("predicted"),
            "predicted_at": summary.get("predicted_at"),
            "image_sha256": sha256_hex(data),
        }
        trusted = client.can("relabel")

        def write() -> bool:
            _, new = record_claim(self.store, claim, data, ext)
            if trusted:
                _, written = accept_claim(self.inbox, self.store, prediction_id, label, client.key)
                new = new or written
            return new

        async with self.feedback_lock:
            new = await asyncio.to_thread(write)
        if trusted:
            status, message = "label_stored", "trusted label: the next collection and curation apply it"
        else:
            status = "claim_recorded"
            message = (
                "recorded as a claim: it changes no label until it is reviewed "
                "(a token with the 'relabel' scope sends trusted labels)"
            )
        return {
            "status": status,
            "prediction_id": prediction_id,
            "label": label,
            "trusted": trusted,
            "duplicate": not new,
            "message": message,
        }


async def initial_load(service: Service) -> None:
    try:
        await service.load(service.model_source)
    except Exception as exc:  # noqa: BLE001 - serve without a model; /admin/reload loads one later
        log.warning(
            "no model loaded from %s: %s; /readyz answers 503 until POST /admin/reload succeeds",
            service.model_source,
            exc,
        )
    if service.second_source:
        try:
            await service.load(service.second_source)
        except Exception as exc:  # noqa: BLE001 - the cascade waits for a VLM champion; the probe decides
            log.warning(
                "no second stage from %s: %s; the first stage decides every image", service.second_source, exc
            )


def tuned_band(settings: Settings, detector: Detector) -> tuple[float, float] | tuple[()] | None:
    """The ``cascade_band`` tag of a registered VLM version: ``(low, high)``, ``()`` when tuning chose to
    send nothing, None when it was never tuned (or the detector is not a registry version)."""
    if not detector.name or not detector.version:
        return None
    try:
        raw = Registry(settings, name=detector.name).get(detector.version).tags.get(Tags.CASCADE_BAND)
    except Exception as exc:  # noqa: BLE001 - the registry is down or the version is gone: the setting applies
        log.warning(
            "cascade band of %s v%s not read (%s): serving.cascade_band applies",
            detector.name,
            detector.version,
            exc,
        )
        return None
    if raw is None:
        return None
    band = json.loads(raw)
    return tuple(float(v) for v in band) if band else ()


def _provenance(found: Provenance | None) -> dict[str, Any] | None:
    """What the upload's own metadata claims (never mixed into P(fake))."""
    if found is None:
        return None
    return {"label": found.label, "evidence": found.label_source, "generator": found.generator}


def is_missing(exc: BaseException) -> bool:
    """The model to load does not exist (409), as opposed to existing and failing to load (500)."""
    if isinstance(exc, LookupError | FileNotFoundError):
        return True
    return getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"  # MlflowException
