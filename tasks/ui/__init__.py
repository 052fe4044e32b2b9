"""Vigil's pages in the Airflow UI: data quality per curated batch and the model registry with gate reports.

Plain functions that read the object store and the MLflow registry and return HTML (no Airflow
import): ``plugins/vigil_ui.py`` only wires them to routes behind Airflow's login. See docs/ui.md.
"""

from __future__ import annotations

from urllib.parse import urlencode

from tasks.ui.render import render

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


def error_page(base: str, title: str, message: str) -> str:
    return render("error.html", base=base, title=title, message=message)
