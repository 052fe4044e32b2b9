"""Vigil's pages in the Airflow UI: data quality per curated batch and the model registry with gate reports.

Plain functions that read the object store and the MLflow registry and return HTML (no Airflow
import): ``plugins/vigil_ui.py`` only wires them to routes behind Airflow's login. See docs/ui.md.
"""

from __future__ import annotations

from urllib.parse import urlencode

from tasks.html import render, stylesheet

# No script, no external resource: the pages are plain HTML with one inline stylesheet.
PAGE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'self'; "
    "form-action 'self'"
)
# Stored report sites (Data Docs, gate report.html) run sandboxed in an origin of their own: their
# scripts (Data Docs' tables) may run but cannot read Airflow's cookie or call its API as the user.
STORED_CSP = "sandbox allow-scripts allow-popups"

# DAG ids whose runs link to a page (the ``dag_run`` external view), by prefix for collect_<source>.
MODEL_DAGS = frozenset({"train_detector", "promote", "deploy"})
QUALITY_DAGS = frozenset({"curate"})
COLLECT_PREFIX = "collect_"


def page_for_dag_run(dag_id: str) -> str:
    """The page (relative to the plugin's root) that tells the story of a run of ``dag_id``."""
    if dag_id in MODEL_DAGS:
        return "models"
    if dag_id.startswith(COLLECT_PREFIX) and len(dag_id) > len(COLLECT_PREFIX):
        return "data-quality?" + urlencode({"source": dag_id[len(COLLECT_PREFIX) :]})
    return "data-quality"


def render_page(template: str, *, base: str, title: str, nav: str = "", **context) -> str:
    """One page of the plugin: ``base`` is the URL prefix it is mounted at (links are built from it)."""
    return render(
        f"ui/{template}", base=base, title=title, nav=nav, css=stylesheet("ui", "vigil.css"), **context
    )


def error_page(base: str, title: str, message: str) -> str:
    return render_page("error.html", base=base, title=title, message=message)
