"""Vigil's pages in the Airflow UI: Data quality, Models, Monitoring and Review (see docs/ui.md).

Wiring only: the pages are rendered by :mod:`tasks.ui`. Every Airflow component imports plugins, so
this module imports nothing heavy: the FastAPI app (and Airflow's security module, MLflow, Jinja2)
is built at the first request to ``/vigil``.

- ``/vigil/data-quality``: every curated batch; ``/vigil/data-quality/<batch_id>`` one batch, with its
  quarantined images (``.../<batch_id>/quarantine/<sha256>.png``: thumbnails);
  ``/vigil/data-quality/<batch_id>/data_docs/<path>`` its Great Expectations Data Docs from the object
  store (also ``.../docs/<path>``), ``/vigil/data-quality/data_docs/index.html`` the index of all of them,
  ``/vigil/data-quality/data_docs/static/<name>`` their shipped CSS/JS/fonts (the one part without login).
- ``/vigil/models``: registered versions, aliases, tags, inference settings, gate reports per slice;
  ``/vigil/models/<version>/gate/report.html|md|json``: the stored gate report.
- ``/vigil/runs/<dag_id>/<run_id>``: the page of one DAG run (the "Vigil" tab of every run): its batch,
  snapshot, model version, MLflow run, gate report or deployment steps, read from that run's results.

The pages need the Airflow UI's login (the ``_token`` cookie or a bearer token); without it a browser
is sent to the login page and an API client gets 401.

Monitoring and Review (:func:`add_monitoring_and_review`):

- ``/vigil/monitoring``: the prediction log's windows over time (drift, estimated and measured accuracy,
  feedback volume, alerts); ``/vigil/monitoring/windows/<window_id>/report.html|report.json|summary.json``:
  a window's Evidently report.
- ``/vigil/review``: the review queue (thumbnails at ``/vigil/review/<item>/image.png``); a form posts a
  decision to ``/vigil/review/<item>/decision``. JSON API: ``GET /vigil/api/review/queue``,
  ``POST /vigil/api/review/<item>/decision`` (``{"label": "real"|"fake"|"skip"}``),
  ``GET /vigil/api/review/decisions``. Deciding needs the right to trigger ``train_detector``.
"""

# No `from __future__ import annotations`: FastAPI must see the route parameters' real types, and
# `Request` is imported inside create_app.
from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/vigil"
MLFLOW_UI_VARIABLE = "vigil_mlflow_ui_url"  # tasks/airflow_objects.py: browser-facing MLflow URL


def create_app():
    """The FastAPI app behind ``/vigil``, every route behind Airflow's login."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi import Depends, FastAPI, HTTPException, Query, Request
    from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

    from tasks import ui
    from tasks.settings import Settings
    from tasks.storage import ObjectStore
    from tasks.ui import PAGE_CSP, STORED_CSP, models, quality, runs
    from tasks.ui.files import ReportFile, ReportPathError

    app = FastAPI(
        title="Vigil pages", dependencies=[Depends(get_user)], docs_url=None, redoc_url=None, openapi_url=None
    )

    def base(request: Request) -> str:
        return request.scope.get("root_path", "").rstrip("/")

    def page(html: str, status_code: int = 200) -> HTMLResponse:
        return HTMLResponse(
            html,
            status_code,
            headers={
                "Content-Security-Policy": PAGE_CSP,
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-store",
            },
        )

    def stored(file: ReportFile) -> Response:
        return Response(
            file.data,
            media_type=file.media_type,
            headers={
                "Content-Security-Policy": STORED_CSP,
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-store",
            },
        )

    def store() -> ObjectStore:
        return ObjectStore.from_settings(Settings())

    @app.exception_handler(HTTPException)
    async def login_or_status(request: Request, exc: HTTPException):
        """Not logged in (or an expired token): browsers go to the login page, API clients get the status."""
        wants_html = "text/html" in request.headers.get("accept", "")
        if exc.status_code in (401, 403) and request.method == "GET" and wants_html:
            return RedirectResponse(
                get_auth_manager().get_url_login(next_url=str(request.url)), status_code=303
            )
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(ReportPathError)
    async def bad_path(request: Request, exc: ReportPathError):
        return page(ui.error_page(base(request), "Bad request", str(exc)), 400)

    @app.exception_handler(FileNotFoundError)
    async def not_found(request: Request, exc: FileNotFoundError):
        return page(ui.error_page(base(request), "Not found", str(exc)), 404)

    # Data Docs' shipped assets (Bootstrap, jQuery, fonts): public files, served without login because
    # the sandboxed Data Docs pages load them without cookies (a mount skips the app's dependencies).
    app.mount("/data-quality/data_docs/static", data_docs_static_app(), name="data-docs-static")

    @app.get("/")
    def index(request: Request):
        return RedirectResponse(f"{base(request)}/data-quality", status_code=303)

    @app.get("/data-quality")
    def data_quality(request: Request, source: str | None = None):
        return page(quality.data_quality_page(store(), base(request), source or None))

    @app.get("/data-quality/data_docs/{path:path}")
    def data_docs_index(path: str):
        """The cumulative Data Docs index of every batch (``reports/data_docs/``)."""
        return stored(quality.data_docs_index_file(store(), path))

    @app.get("/data-quality/{batch_id}")
    def batch(
        request: Request, batch_id: str, code: str | None = None, page_number: int = Query(1, alias="page")
    ):
        return page(quality.batch_page(store(), base(request), batch_id, code or None, page_number))

    # /data_docs/ mirrors the store's reports/<batch_id>/data_docs/ (the pages' relative links to the
    # shared static files rely on it); /docs/ is the older spelling.
    @app.get("/data-quality/{batch_id}/data_docs/{path:path}")
    @app.get("/data-quality/{batch_id}/docs/{path:path}")
    def data_docs(batch_id: str, path: str):
        return stored(quality.data_docs_file(store(), batch_id, path))

    @app.get("/data-quality/{batch_id}/quarantine/{name}")
    def quarantined_image(batch_id: str, name: str):
        """A thumbnail of a quarantined image (a PNG made by the server, never the raw bytes)."""
        thumb = quality.quarantine_thumbnail(store(), Settings().images, batch_id, name)
        return Response(
            thumb.data,
            media_type=thumb.media_type,
            headers={
                "Content-Security-Policy": "default-src 'none'; sandbox",
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "private, max-age=86400",
            },
        )

    @app.get("/models")
    def models_view(request: Request):
        settings = Settings()
        return page(
            models.models_page(
                settings, ObjectStore.from_settings(settings), base(request), mlflow_ui_url(settings)
            )
        )

    @app.get("/models/{version}/gate/{name}")
    def gate_file(version: str, name: str):
        return stored(models.gate_file(store(), Settings().model_name, version, name))

    @app.get("/runs/{dag_id}/{run_id:path}")
    def dag_run(request: Request, dag_id: str, run_id: str):
        settings = Settings()
        facts = run_facts(dag_id, run_id)
        html = runs.run_page(
            settings,
            ObjectStore.from_settings(settings),
            base(request),
            mlflow_ui_url(settings),
            dag_id,
            run_id,
            facts,
        )
        return page(html, 200 if facts is not None else 404)

    add_monitoring_and_review(app, page=page, stored=stored, store=store, base=base)
    return app


# -- Monitoring and Review (tasks/ui/monitoring.py, tasks/ui/review.py) ------------------------------
REVIEW_RIGHT_DAG = "train_detector"  # who may trigger training may label its data
MAX_DECISION_BODY = 4096  # bytes of a decision request (form or JSON)


def add_monitoring_and_review(app, *, page, stored, store, base) -> None:
    """The Monitoring page, the Review page and the review JSON API, behind the app's login."""
    import json
    from typing import Annotated, Any
    from urllib.parse import parse_qs, urlparse

    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi import Depends, Request
    from fastapi.responses import JSONResponse, RedirectResponse, Response

    from tasks.review import queue
    from tasks.settings import Settings
    from tasks.storage import ObjectStore
    from tasks.ui import monitoring, review

    CurrentUser = Annotated[Any, Depends(get_user)]  # the logged-in Airflow user (a BaseUser)

    def may_review(user) -> bool:
        return get_auth_manager().is_authorized_dag(
            method="POST",
            access_entity=DagAccessEntity.RUN,
            details=DagDetails(id=REVIEW_RIGHT_DAG),
            user=user,
        )

    def problem(status: int, code: str, message: str) -> JSONResponse:
        return JSONResponse({"error": code, "message": message}, status_code=status)

    def inbox() -> ObjectStore:
        settings = Settings()
        return ObjectStore(settings.inbox, endpoint_url=settings.s3_endpoint_url)

    def same_origin(request: Request) -> bool:
        """A form post from a page of this server (not a cross-site form riding on the login cookie)."""
        source = request.headers.get("origin") or request.headers.get("referer") or ""
        return bool(source) and urlparse(source).netloc == request.headers.get("host", "")

    async def body(request: Request) -> bytes | None:
        declared = request.headers.get("content-length")
        if declared and (not declared.isdigit() or int(declared) > MAX_DECISION_BODY):
            return None
        data = b""
        async for chunk in request.stream():
            data += chunk
            if len(data) > MAX_DECISION_BODY:
                return None
        return data

    @app.get("/monitoring")
    def monitoring_view(request: Request):
        return page(monitoring.monitoring_page(store(), base(request)))

    @app.get("/monitoring/windows/{window_id}/{name}")
    def window_file(window_id: str, name: str):
        return stored(monitoring.window_file(store(), window_id, name))

    @app.get("/review")
    def review_view(request: Request, user: CurrentUser, decided: str | None = None):
        return page(
            review.review_page(
                store(), base(request), can_decide=may_review(user), user=user.get_name(), decided=decided
            )
        )

    @app.get("/review/{item_id}/image.png")
    def review_image(item_id: str):
        """A thumbnail of a waiting item (a PNG made by the server, never the stored bytes)."""
        return Response(
            review.item_thumbnail(store(), Settings().images, item_id),
            media_type="image/png",
            headers={
                "Content-Security-Policy": "default-src 'none'; sandbox",
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "private, max-age=3600",
            },
        )

    @app.post("/review/{item_id}/decision")
    async def review_form(request: Request, item_id: str, user: CurrentUser):
        """The page's buttons: decide, then back to the queue with the decision shown."""
        name, allowed = user.get_name(), may_review(user)

        def refused(status: int, message: str):
            html = review.review_page(store(), base(request), can_decide=allowed, user=name, error=message)
            return page(html, status)

        if not same_origin(request):
            return refused(403, "A decision must be sent from the Review page of this server.")
        if not allowed:
            return refused(
                403, f"{name} may not decide: reviewing needs the right to trigger {REVIEW_RIGHT_DAG}."
            )
        raw = await body(request)
        if raw is None:
            return refused(413, "The form is too large.")
        label = (parse_qs(raw.decode("utf-8", "replace")).get("label") or [""])[0]
        try:
            queue.decide(store(), inbox(), item_id, label, name)
        except queue.ReviewError as exc:
            return refused(exc.status, str(exc))
        return RedirectResponse(f"{base(request)}/review?decided={item_id}#notice", status_code=303)

    @app.get("/api/review/queue")
    def review_queue_api():
        return review.queue_json(store())

    @app.get("/api/review/decisions")
    def review_decisions_api(days: int = 7):
        return review.decisions_json(store(), days)

    @app.post("/api/review/{item_id}/decision")
    async def review_decision_api(request: Request, item_id: str, user: CurrentUser):
        """``{"label": "real" | "fake" | "skip"}``; answers the decision record (409: decided already)."""
        if not may_review(user):
            return problem(
                403,
                "forbidden",
                f"{user.get_name()} may not decide: reviewing needs the right to trigger {REVIEW_RIGHT_DAG}",
            )
        if not request.headers.get("content-type", "").startswith("application/json"):
            return problem(
                415, "unsupported_media_type", 'send application/json: {"label": "real" | "fake" | "skip"}'
            )
        raw = await body(request)
        if raw is None:
            return problem(413, "too_large", f"a decision is at most {MAX_DECISION_BODY} bytes")
        try:
            payload = json.loads(raw or b"null")
        except ValueError as exc:
            return problem(422, "invalid_json", f"not valid JSON: {exc}")
        if not isinstance(payload, dict) or not isinstance(payload.get("label"), str):
            return problem(422, "invalid_decision", 'send {"label": "real" | "fake" | "skip"}')
        try:
            record = queue.decide(store(), inbox(), item_id, payload["label"], user.get_name())
        except queue.AlreadyDecided as exc:
            return JSONResponse(
                {"error": "already_decided", "message": str(exc), "decision": exc.record}, status_code=409
            )
        except queue.ReviewError as exc:
            return problem(exc.status, type(exc).__name__, str(exc))
        return {k: v for k, v in record.items() if k != "image"}


def data_docs_static_app():
    """A login-free app serving only the files shipped in ``tasks/curate/static/`` (by plain name)."""
    from fastapi import FastAPI
    from fastapi.responses import Response

    from tasks.ui import quality
    from tasks.ui.files import ReportPathError

    static = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @static.get("/{name}")
    def asset(name: str):
        try:
            file = quality.static_file(name)
        except (ReportPathError, FileNotFoundError):
            return Response("not found", status_code=404, media_type="text/plain")
        return Response(
            file.data,
            media_type=file.media_type,
            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=86400"},
        )

    return static


MAX_XCOM_CHARS = 200_000  # a result larger than this is left out of the run page


def run_facts(dag_id: str, run_id: str):
    """One DAG run from Airflow's database: state, conf, task states and the tasks' XCom results
    (a :class:`tasks.ui.runs.RunFacts`), or None when there is no such run."""
    import json

    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from tasks.ui.runs import RunFacts

    def iso(value) -> str | None:
        return value.isoformat(timespec="seconds") if value else None

    with create_session() as session:
        run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        if run is None:
            return None
        tasks = {
            task_id: {"state": str(state) if state else None, "try_number": try_number}
            for task_id, state, try_number in session.execute(
                select(TaskInstance.task_id, TaskInstance.state, TaskInstance.try_number)
                .where(
                    TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id, TaskInstance.map_index < 0
                )
                .order_by(TaskInstance.start_date.is_(None), TaskInstance.start_date, TaskInstance.task_id)
            )
        }
        xcom: dict[str, dict] = {}
        for row in session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag_id, XComModel.run_id == run_id, XComModel.map_index < 0
            )
        ):
            value = XComModel.deserialize_value(row)
            if len(json.dumps(value, default=str)) <= MAX_XCOM_CHARS:
                xcom.setdefault(row.task_id, {})[row.key] = value
        return RunFacts(
            dag_id=dag_id,
            run_id=run_id,
            state=str(run.state),
            run_type=str(run.run_type),
            triggered_by=run.triggering_user_name,
            queued_at=iso(run.queued_at),
            start_date=iso(run.start_date),
            end_date=iso(run.end_date),
            conf=dict(run.conf or {}),
            tasks=tasks,
            xcom=xcom,
        )


def mlflow_ui_url(settings) -> str:
    """The browser-facing MLflow URL: the Airflow variable, else the tracking URI the code uses."""
    from airflow.models.variable import Variable

    try:
        return Variable.get(MLFLOW_UI_VARIABLE, default_var=None) or settings.mlflow_tracking_uri
    except Exception:  # noqa: BLE001 - a missing or unreadable variable must not break the page
        return settings.mlflow_tracking_uri


class LazyApp:
    """An ASGI app that builds :func:`create_app` at its first request (keeps plugin import cheap)."""

    def __init__(self) -> None:
        self._app = None

    async def __call__(self, scope, receive, send) -> None:
        if self._app is None:
            self._app = create_app()
        await self._app(scope, receive, send)


class VigilUIPlugin(AirflowPlugin):
    name = "vigil_ui"
    # AirflowPlugin declares its parts as (mutable) class attributes.
    fastapi_apps = [{"app": LazyApp(), "url_prefix": URL_PREFIX, "name": "Vigil pages"}]  # noqa: RUF012
    external_views = [  # noqa: RUF012
        {
            "name": "Data quality",
            "href": f"{URL_PREFIX}/data-quality",
            "destination": "nav",
            "category": "browse",
            "url_route": "vigil-data-quality",
        },
        {
            "name": "Models",
            "href": f"{URL_PREFIX}/models",
            "destination": "nav",
            "category": "browse",
            "url_route": "vigil-models",
        },
        # A tab on every DAG run: the page of that run (its batch, snapshot, version, gate report...).
        {
            "name": "Vigil",
            "href": f"{URL_PREFIX}/runs/{{DAG_ID}}/{{RUN_ID}}",
            "destination": "dag_run",
            "url_route": "vigil-run",
        },
        {
            "name": "Monitoring",
            "href": f"{URL_PREFIX}/monitoring",
            "destination": "nav",
            "category": "browse",
            "url_route": "vigil-monitoring",
        },
        {
            "name": "Review",
            "href": f"{URL_PREFIX}/review",
            "destination": "nav",
            "category": "browse",
            "url_route": "vigil-review",
        },
    ]
