"""The Models page: registered versions of ``settings.model_name`` with their aliases, tags and tuned
inference settings (from the MLflow registry), and the promotion gate's reports side by side per slice,
with bars (``reports/gate/<model_name>/v<version>/report.json`` in the object store)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from tasks.promote.gate import check_status, slice_chart
from tasks.registry import ALIASES, Registry, Tags
from tasks.ui import render_page
from tasks.ui.files import ReportFile, check_id, read_report_file

if TYPE_CHECKING:
    from tasks.settings import Settings
    from tasks.storage import ObjectStore

GATE_PREFIX = "reports/gate"
GATE_FILES = ("report.html", "report.md", "report.json")
# Tags shown in their own columns or sections; the others are listed under "other tags".
SHOWN_TAGS = (
    "snapshot",
    "profile",
    "method",
    "base_model",
    "threshold",
    "inference",
    "rejected",
    "rejection_reasons",
    "reason",
    "gate_override_reason",
    "gate_override_by",
    "airflow_run_url",
)
METRIC_ORDER = ("roc_auc", "balanced_accuracy", "ece")
LOWER_IS_BETTER = frozenset({"ece", "brier", "log_loss", "loss", "fpr", "fnr", "latency_ms"})
MAX_VERSIONS = 50
MAX_GATE_REPORTS = 10


@dataclass(frozen=True)
class VersionView:
    version: str
    aliases: tuple[str, ...]
    created: str
    run_id: str | None
    run_url: str | None
    version_url: str | None
    tags: dict[str, str]
    inference: dict[str, Any] | None
    inference_error: str | None
    gate: dict[str, Any] | None

    @property
    def rejected(self) -> bool:
        return self.tags.get("rejected") == "true"

    @property
    def overridden(self) -> bool:
        """Promoted although the gate rejected it (a person's override, with a reason)."""
        return Tags.GATE_OVERRIDE_REASON in self.tags

    @property
    def other_tags(self) -> dict[str, str]:
        return {k: v for k, v in sorted(self.tags.items()) if k not in SHOWN_TAGS}


def gate_prefix(model_name: str, version: str) -> str:
    return f"{GATE_PREFIX}/{check_id(model_name, 'model name')}/v{check_id(version, 'version')}"


def gate_file(store: ObjectStore, model_name: str, version: str, name: str) -> ReportFile:
    """report.html / report.md / report.json of one version's gate report, nothing else."""
    if name not in GATE_FILES:
        raise FileNotFoundError(f"no gate file {name!r}: one of {', '.join(GATE_FILES)}")
    return read_report_file(store, gate_prefix(model_name, version), name)


def gate_reports(store: ObjectStore, model_name: str) -> dict[str, dict[str, Any]]:
    """version -> parsed gate report, from one listing of the model's gate folder."""
    prefix = f"{GATE_PREFIX}/{check_id(model_name, 'model name')}/"
    reports = {}
    for key in store.list(prefix):
        rest = key[len(prefix) :].split("/")
        if len(rest) == 2 and rest[0].startswith("v") and rest[1] == "report.json":
            try:
                reports[rest[0][1:]] = store.read_json(key)
            except ValueError as exc:
                reports[rest[0][1:]] = {"decision": "unreadable", "reasons": [f"{key}: {exc}"]}
    return reports


def slice_rows(report: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """The metrics (the gate's headline metrics first, since JSON writers may sort keys, then the others)
    and, per slice, champion | challenger | delta per metric."""
    slices = report.get("slices") or []
    seen = [name for item in slices for part in ("challenger", "champion") for name in (item.get(part) or {})]
    metrics = [m for m in METRIC_ORDER if m in seen] + list(
        dict.fromkeys(m for m in seen if m not in METRIC_ORDER)
    )
    rows = []
    for item in slices:
        challenger, champion = item.get("challenger") or {}, item.get("champion") or {}
        cells = []
        for name in metrics:
            new, old = _float(challenger.get(name)), _float(champion.get(name))
            delta = None if new is None or old is None else new - old
            if delta is None or abs(delta) < 1e-12:
                verdict = ""
            else:
                better = delta < 0 if name in LOWER_IS_BETTER else delta > 0
                verdict = "better" if better else "worse"
            cells.append(
                {"metric": name, "champion": old, "challenger": new, "delta": delta, "verdict": verdict}
            )
        rows.append(
            {"test_set": item.get("test_set"), "slice": item.get("slice"), "n": item.get("n"), "cells": cells}
        )
    return metrics, rows


def gate_view(version: str, report: dict[str, Any]) -> dict[str, Any]:
    """What a page shows of one gate report: the report, the per-slice table and bars, the checks."""
    metrics, rows = slice_rows(report)
    checks = [{**c, "status": check_status(c)} for c in report.get("checks") or []]
    chart = slice_chart(report) if report.get("slices") else None
    return {
        "version": version,
        "report": report,
        "metrics": metrics,
        "rows": rows,
        "checks": checks,
        "chart": chart,
    }


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def page_registry(settings: Settings) -> Registry:
    # The page must answer when MLflow is down: fail after one try instead of minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    return Registry(settings)


def list_versions(settings: Settings, store: ObjectStore, mlflow_ui_url: str) -> list[VersionView]:
    """The newest registered versions, with their aliases, tags, run links and gate reports."""
    registry = page_registry(settings)
    name = settings.model_name
    aliases = registry.aliases()
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    versions = registry.versions(max_results=MAX_VERSIONS)
    gates = gate_reports(store, name)
    ui = mlflow_ui_url.rstrip("/")
    views = []
    experiments: dict[str, str | None] = {}
    for mv in versions:
        version = str(mv.version)
        run_url = None
        if mv.run_id:
            if mv.run_id not in experiments:
                experiments[mv.run_id] = registry.run_experiment(mv.run_id)
            if experiments[mv.run_id] is not None:
                run_url = f"{ui}/#/experiments/{quote(experiments[mv.run_id])}/runs/{quote(mv.run_id)}"
        inference, inference_error = _inference(mv.tags.get(Tags.INFERENCE))
        views.append(
            VersionView(
                version=version,
                aliases=_ordered(by_version.get(version, [])),
                created=_ms_to_iso(mv.creation_timestamp),
                run_id=mv.run_id,
                run_url=run_url,
                version_url=f"{ui}/#/models/{quote(name)}/versions/{quote(version)}",
                tags=dict(mv.tags),
                inference=inference,
                inference_error=inference_error,
                gate=gates.get(version),
            )
        )
    return views


def _ordered(aliases: list[str]) -> tuple[str, ...]:
    return (*(a for a in ALIASES if a in aliases), *sorted(a for a in aliases if a not in ALIASES))


def _inference(raw: str | None) -> tuple[dict[str, Any] | None, str | None]:
    if not raw:
        return None, None
    try:
        value = json.loads(raw)
    except ValueError:
        return None, f"not JSON: {raw[:200]}"
    return (value, None) if isinstance(value, dict) else (None, f"not an object: {raw[:200]}")


def _ms_to_iso(ms: int | None) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds") if ms else ""


def models_page(settings: Settings, store: ObjectStore, base: str, mlflow_ui_url: str) -> str:
    error = None
    try:
        versions = list_versions(settings, store, mlflow_ui_url)
    except Exception as exc:  # noqa: BLE001 - the page says why the registry could not be read
        versions, error = [], f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"
    aliases = {a: v.version for v in versions for a in v.aliases}
    gates = []
    for view in versions:
        if view.gate is not None and len(gates) < MAX_GATE_REPORTS:
            gates.append(gate_view(view.version, view.gate))
    return render_page(
        "models.html",
        base=base,
        nav="models",
        title="Models",
        model_name=settings.model_name,
        versions=versions,
        aliases=aliases,
        alias_names=ALIASES,
        gates=gates,
        error=error,
        tracking_uri=settings.mlflow_tracking_uri,
        mlflow_ui_url=mlflow_ui_url,
    )
