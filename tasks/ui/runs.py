"""The page of one DAG run, the "Vigil" tab of every run: what *that* run did, from its own results.

``plugins/vigil_ui.py`` reads the run from Airflow (state, conf, task states and the tasks' XCom
results) into a :class:`RunFacts`; this module adds what the stores know about it and renders:

* ``collect_<source>``: the raw batch it stored, and whether it is curated yet;
* ``curate``: the batches it curated (links to their data-quality pages) and the snapshot it published;
* ``train_detector``: the snapshot, the registered version, its metrics, links to the MLflow run and
  version (the MLflow run links back: tag ``vigil.airflow_run_url``), or why it did not train;
* ``promote``: the version gated and the gate report (decision, checks, per-slice bars), the outcome
  (promoted, rejected, promoted by override) and how to override a rejection;
* ``deploy``: the version and every step with its result or error, and the rollback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from tasks.ui import render_page, run_kind
from tasks.ui.files import ReportPathError, check_id
from tasks.ui.models import GATE_PREFIX, gate_view, page_registry

if TYPE_CHECKING:
    from tasks.settings import Settings
    from tasks.storage import ObjectStore

DEPLOY_STEPS = ("tuning_wanted", "tune", "smoke_test_sandbox", "roll_out", "post_deploy_check", "rollback")


@dataclass(frozen=True)
class RunFacts:
    """One DAG run as Airflow knows it (filled by the plugin from Airflow's database)."""

    dag_id: str
    run_id: str
    state: str
    run_type: str
    triggered_by: str | None = None
    queued_at: str | None = None
    start_date: str | None = None
    end_date: str | None = None
    conf: dict[str, Any] = field(default_factory=dict)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # task_id -> {"state", "try_number"}
    xcom: dict[str, dict[str, Any]] = field(default_factory=dict)  # task_id -> {key: value}

    def result(self, task_id: str, key: str = "return_value") -> Any:
        return self.xcom.get(task_id, {}).get(key)

    def state_of(self, task_id: str) -> str | None:
        return (self.tasks.get(task_id) or {}).get("state")


def _as_dict(value: Any) -> dict[str, Any] | None:
    """A task's JSON result: a dict, or a container's output whose last line is the JSON."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.strip():
        try:
            parsed = json.loads(value.strip().splitlines()[-1])
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None
    return None


def _mlflow_run_url(settings: Settings, mlflow_ui_url: str, run_id: str | None) -> str | None:
    if not run_id:
        return None
    experiment = page_registry(settings).run_experiment(run_id)
    if experiment is None:
        return None
    return f"{mlflow_ui_url.rstrip('/')}/#/experiments/{quote(experiment)}/runs/{quote(run_id)}"


def _version_url(settings: Settings, mlflow_ui_url: str, version: str | None) -> str | None:
    if not version:
        return None
    return f"{mlflow_ui_url.rstrip('/')}/#/models/{quote(settings.model_name)}/versions/{quote(str(version))}"


def _collect(facts: RunFacts, store: ObjectStore, **_) -> dict[str, Any]:
    summary = _as_dict(facts.result("collect")) or {}
    batch_id = summary.get("batch_id")
    curated = bool(batch_id) and store.exists(f"reports/{batch_id}/summary.json")
    return {"summary": summary, "batch_id": batch_id, "curated": curated}


def _curate(facts: RunFacts, **_) -> dict[str, Any]:
    return {"summary": _as_dict(facts.result("curate_batches")) or {}}


def _train(facts: RunFacts, settings: Settings, mlflow_ui_url: str, **_) -> dict[str, Any]:
    result = _as_dict(facts.result("train")) or {}
    try:
        run_url = _mlflow_run_url(settings, mlflow_ui_url, result.get("run_id"))
    except Exception:  # noqa: BLE001 - MLflow down: the page still shows what Airflow knows
        run_url = None
    return {
        "result": result,
        "skipped": facts.state_of("enough_new_images") == "skipped" or facts.state_of("train") == "skipped",
        "run_url": run_url,
        "version_url": _version_url(settings, mlflow_ui_url, result.get("version")),
    }


def _promote(
    facts: RunFacts, settings: Settings, store: ObjectStore, mlflow_ui_url: str, **_
) -> dict[str, Any]:
    version = facts.result("resolve_version")
    summary = _as_dict(facts.result("read_report")) or {}
    version = str(version or (summary.get("challenger") or {}).get("version") or "") or None
    gate, other_run = None, None
    if version:
        try:
            key = f"{GATE_PREFIX}/{check_id(settings.model_name, 'model name')}/v{check_id(version, 'version')}/report.json"
            report = store.read_json(key) if store.exists(key) else None
        except (ReportPathError, ValueError):
            report = None
        if report is not None:
            gate = gate_view(version, report)
            ran = (report.get("airflow_run") or {}).get("run_id")
            other_run = ran if ran and ran != facts.run_id else None
    outcome = _as_dict(facts.result("promote_champion")) or {}
    if facts.state_of("promote_champion") == "success":
        state = "overridden" if outcome.get("overridden") else "promoted"
    elif facts.state_of("reject") in ("success", "failed"):
        state = "rejected"
    elif facts.state_of("approve") in ("deferred", "running", "queued", "scheduled"):
        state = "awaiting approval"
    else:
        state = summary.get("decision") or facts.state
    challenger = (gate or {}).get("report", {}).get("challenger") or summary.get("challenger") or {}
    try:
        run_url = _mlflow_run_url(settings, mlflow_ui_url, challenger.get("run_id"))
    except Exception:  # noqa: BLE001 - MLflow down: the page still shows what Airflow knows
        run_url = None
    return {
        "version": version,
        "summary": summary,
        "gate": gate,
        "other_run": other_run,
        "outcome": state,
        "run_url": run_url,
        "version_url": _version_url(settings, mlflow_ui_url, version),
    }


def _deploy(facts: RunFacts, **_) -> dict[str, Any]:
    steps = []
    for step in DEPLOY_STEPS:
        if step not in facts.tasks:
            continue
        result = _as_dict(facts.result(step))
        shown = {k: v for k, v in (result or {}).items() if not isinstance(v, (dict, list))} if result else {}
        steps.append(
            {
                "task": step,
                "state": facts.state_of(step),
                "result": shown,
                "error": facts.result(step, "error"),
            }
        )
    return {"version": facts.result("resolve_version"), "steps": steps}


SECTIONS = {"collect": _collect, "curate": _curate, "train": _train, "promote": _promote, "deploy": _deploy}


def run_page(
    settings: Settings,
    store: ObjectStore,
    base: str,
    mlflow_ui_url: str,
    dag_id: str,
    run_id: str,
    facts: RunFacts | None,
) -> str:
    """The page of run ``run_id`` of ``dag_id`` (``facts`` None: Airflow has no such run)."""
    kind = run_kind(dag_id)
    section: dict[str, Any] = {}
    error = None
    if facts is not None and kind:
        try:
            section = SECTIONS[kind](facts, settings=settings, store=store, mlflow_ui_url=mlflow_ui_url)
        except Exception as exc:  # noqa: BLE001 - the page says what could not be read
            error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"
    airflow = base[: -len("/vigil")] if base.endswith("/vigil") else ""
    return render_page(
        "run.html",
        base=base,
        title=f"{dag_id} · {run_id}",
        kind=kind,
        dag_id=dag_id,
        run_id=run_id,
        facts=facts,
        section=section,
        error=error,
        model_name=settings.model_name,
        airflow_run_url=f"{airflow}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}",
        page_url=f"{base}/runs/{quote(dag_id, safe='')}/{quote(run_id, safe='')}",
        conf={
            k: v for k, v in ((facts.conf if facts else None) or {}).items() if v not in (None, "", [], {})
        },
    )
