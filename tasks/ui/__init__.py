"""Vigil's pages in the Airflow UI: data quality per curated batch, the model registry with gate reports,
and the page of one DAG run (what that run collected, curated, trained, gated or deployed).

Plain functions that read the object store and the MLflow registry and return HTML (no Airflow
import): ``plugins/vigil_ui.py`` only wires them to routes behind Airflow's login. See docs/ui.md.
"""

from __future__ import annotations

from tasks.html import render, stylesheet

# No script, no external resource: the pages are plain HTML with one inline stylesheet.
PAGE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'self'; "
    "form-action 'self'"
)
# Stored report sites (Data Docs, gate report.html) run sandboxed in an origin of their own: their
# scripts (Data Docs' tables) may run but cannot read Airflow's cookie or call its API as the user.
STORED_CSP = "sandbox allow-scripts allow-popups"

# What a DAG run's page (the "Vigil" tab of every run) tells, by DAG id (collect_<source> by prefix).
RUN_KINDS = {"curate": "curate", "train_detector": "train", "promote": "promote", "deploy": "deploy"}
COLLECT_PREFIX = "collect_"


def run_kind(dag_id: str) -> str | None:
    """collect / curate / train / promote / deploy for Vigil's DAGs; None for any other DAG."""
    if dag_id.startswith(COLLECT_PREFIX) and len(dag_id) > len(COLLECT_PREFIX):
        return "collect"
    return RUN_KINDS.get(dag_id)


def render_page(template: str, *, base: str, title: str, nav: str = "", **context) -> str:
    """One page of the plugin: ``base`` is the URL prefix it is mounted at (links are built from it)."""
    return render(
        f"ui/{template}", base=base, title=title, nav=nav, css=stylesheet("ui", "vigil.css"), **context
    )


def error_page(base: str, title: str, message: str) -> str:
    return render_page("error.html", base=base, title=title, message=message)
