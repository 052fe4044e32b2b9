"""The detection API: ``create_app`` assembles the service, the routes, the error handlers, the middleware
and the API documentation (see :mod:`tasks.serve.service` for the model slot, :mod:`tasks.serve.routes`
for the routes).

``/docs`` (Swagger UI) and ``/redoc`` load their JavaScript and CSS from this server (the files of the
pinned ``fastapi-offline`` package: Swagger UI, Apache-2.0; ReDoc, MIT), so they work with no network.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from tasks.serve import errors
from tasks.serve.middleware import BodyGuard, RequestMetrics
from tasks.serve.routes import PAGE_POLICY, router
from tasks.serve.service import Service, initial_load
from tasks.settings import Settings

if TYPE_CHECKING:
    from tasks.model.detector import Detector

ENVELOPE_BYTES = 64 * 1024  # multipart boundaries, headers and form fields around the image bytes
JSON_BODY_BYTES = 64 * 1024  # a JSON body (a URL, feedback, a reload): small by nature
DOCS_ASSETS = "/static/docs"


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
            service.url_pool.shutdown(wait=False, cancel_futures=True)
            await asyncio.to_thread(service.log.flush)

    app = FastAPI(
        title="Vigil detection API",
        version="1",
        lifespan=lifespan,
        description="Is this image manipulated or synthesized? Verdict, P(fake) and the model's reason.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    errors.install(app)
    app.include_router(router)
    _offline_docs(app)
    app.add_middleware(
        BodyGuard,
        default=ENVELOPE_BYTES,
        json_limit=JSON_BODY_BYTES,
        per_image=serving.max_upload_bytes,
        limits={
            "/v1/detect": serving.max_upload_bytes + ENVELOPE_BYTES,
            "/v1/detect/batch": serving.max_upload_bytes * serving.max_batch_images + ENVELOPE_BYTES,
        },
        timeout_s=serving.body_timeout_s,
        max_in_flight=serving.max_bytes_in_flight,
        batch_path="/v1/detect/batch",
        max_batches=serving.max_concurrent_batches,
        metrics=service.metrics,
    )
    app.add_middleware(RequestMetrics, metrics=service.metrics)
    return app


def _offline_docs(app: FastAPI) -> None:
    """Swagger UI at /docs and ReDoc at /redoc, with their assets served by this app."""
    app.mount(
        DOCS_ASSETS, StaticFiles(directory=str(files("fastapi_offline") / "static")), name="docs-assets"
    )

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return _local_only(
            get_swagger_ui_html(
                openapi_url=app.openapi_url or "/openapi.json",
                title=f"{app.title} - Swagger UI",
                swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            )
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return _local_only(
            get_redoc_html(
                openapi_url=app.openapi_url or "/openapi.json",
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
                redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
                with_google_fonts=False,
            )
        )


def _local_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = PAGE_POLICY
    return page
