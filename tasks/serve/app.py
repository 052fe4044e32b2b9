"""The detection API: ``create_app`` assembles the service, the routes, the error handlers and the
middleware (see :mod:`tasks.serve.service` for the model slot, :mod:`tasks.serve.routes` for the routes)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI

from tasks.serve import errors
from tasks.serve.middleware import BodyLimit, RequestMetrics
from tasks.serve.routes import router
from tasks.serve.service import Service, initial_load
from tasks.settings import Settings

if TYPE_CHECKING:
    from tasks.model.detector import Detector

ENVELOPE_BYTES = 64 * 1024  # multipart boundaries, headers and form fields around the image bytes


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
        loader = asyncio.create_task(initial_load(service), name="initial-load")
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
    errors.install(app)
    app.include_router(router)
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
