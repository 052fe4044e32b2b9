"""Vigil's pages in the Airflow UI: Data quality and Models (see docs/ui.md).

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

    return app


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
    ]
