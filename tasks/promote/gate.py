"""The promotion gate: challenger and champion evaluated on the same frozen test sets, then decided.

Test sets (all frozen: a snapshot never changes once published):

* the newest snapshot's test split, overall and per ``source`` and ``generator`` slice. Snapshots are
  cumulative, so these slices include the test images of every earlier source and generator: a
  challenger that forgets an old generator fails its slice (continual learning, no forgetting);
* the *new data*: the test images the champion's training snapshot did not have yet;
* the golden set (``golden_set`` in ``include/gate.yaml``), when configured, as the slice ``golden``.

The decision is :func:`tasks.promote.policy.decide`; this module gathers its inputs, writes the gate
report (JSON + Markdown + HTML with champion and challenger side by side) to the object store under
``reports/gate/<model>/v<version>/`` and to the challenger's MLflow run, and moves the aliases.
"""

from __future__ import annotations

import json
import logging
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.data.frames import load_frame, snapshot_frame
from tasks.data.snapshots import latest_version, read_snapshot
from tasks.evaluate import compare
from tasks.html import render
from tasks.promote.policy import GatePolicy, decide, load_policy
from tasks.registry import CHALLENGER, CHAMPION, Registry, Tags, mlflow_client
from tasks.settings import Settings
from tasks.storage import ObjectStore

if TYPE_CHECKING:
    from tasks.data.frames import Frame
    from tasks.storage import ObjectStore

log = logging.getLogger("vigil.gate")

SLICE_COLUMNS = ("source", "generator")
TABLE_METRICS = ("roc_auc", "balanced_accuracy", "ece")


def report_prefix(model_name: str, version: str) -> str:
    return f"reports/gate/{model_name}/v{version}"


def _version_info(mv) -> dict[str, Any] | None:
    if mv is None:
        return None
    return {"version": str(mv.version), "run_id": mv.run_id, "snapshot": (mv.tags or {}).get("snapshot")}


def _test_frames(
    store: ObjectStore, settings: Settings, policy: GatePolicy, champion_snapshot: str | None
) -> tuple[str, dict[str, Frame], str | None]:
    """(newest snapshot, {test set name: frame}, name of the new-data set or None)."""

    newest = latest_version(store)
    if newest is None:
        raise LookupError("no dataset snapshot published yet: the gate has nothing to test on")
    cache = Path(settings.home) / "cache" / "objects"
    test = snapshot_frame(store, newest, ("test",), cache)
    if len(test) == 0:
        raise LookupError(f"snapshot {newest} has no labeled test images")
    frames = {f"{newest}/test": test}
    new_name = None
    if champion_snapshot and champion_snapshot != newest:
        try:
            seen = set(read_snapshot(store, champion_snapshot).table["image_id"])
        except FileNotFoundError:
            seen = set()
        fresh = ~test.table["image_id"].isin(seen)
        if fresh.any():
            new_name = f"{newest}/test (new since {champion_snapshot})"
            frames[new_name] = test.where(fresh, new_name)
    if policy.golden_set:
        frames["golden"] = load_frame(policy.golden_set, None, store, cache)
    return newest, frames, new_name


def _flat(reports: dict[str, dict], newest_set: str, new_set: str | None) -> dict[str, Any]:
    """One detector's reports in the policy's shape: overall, named slices, new data, robustness drops."""
    main = reports[newest_set]
    slices = {
        f"{column}={value}": metrics
        for column in SLICE_COLUMNS
        for value, metrics in main["slices"].get(column, {}).items()
    }
    if "golden" in reports:
        slices["golden"] = reports["golden"]["overall"]
    robustness = {}
    for name, result in main.get("robustness", {}).items():
        delta = result.get("delta_roc_auc")
        robustness[name] = {"drop": None if delta is None else -delta}
    return {
        "overall": main["overall"],
        "slices": slices,
        "new_data": reports[new_set]["overall"] if new_set else None,
        "robustness": robustness,
    }


def _rows(
    challenger: dict[str, Any], champion: dict[str, Any] | None, newest_set: str, new_set: str | None
) -> list[dict[str, Any]]:
    """The side-by-side table: one row per test set and slice."""

    def pick(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if metrics is None else {k: metrics.get(k) for k in TABLE_METRICS}

    entries = [(newest_set, "overall", challenger["overall"], champion["overall"] if champion else None)]
    if new_set:
        entries.append(
            (new_set, "new data", challenger["new_data"], champion["new_data"] if champion else None)
        )
    for name, mine in sorted(challenger["slices"].items()):
        theirs = champion["slices"].get(name) if champion else None
        entries.append(("golden" if name == "golden" else newest_set, name, mine, theirs))
    return [
        {
            "test_set": test_set,
            "slice": name,
            "n": mine.get("n", 0),
            "challenger": pick(mine),
            "champion": pick(theirs),
        }
        for test_set, name, mine, theirs in entries
    ]


def evaluate(
    settings: Settings, version: str | None = None, policy: GatePolicy | None = None
) -> dict[str, Any]:
    """Evaluate challenger (``version`` or the ``challenger`` alias) and champion; decide; store the report.

    Aliases are not moved here (see :func:`apply`), so a human can approve in between.
    """
    from tasks.model.card import InferenceSettings
    from tasks.model.detector import Detector

    policy = policy or load_policy(settings)
    registry = Registry(settings)
    challenger_mv = registry.get(version) if version else registry.version(CHALLENGER)
    if challenger_mv is None:
        raise LookupError(f"no version of {registry.name} has the alias {CHALLENGER!r}: nothing to gate")
    champion_mv = registry.version(CHAMPION)
    if champion_mv is not None and champion_mv.version == challenger_mv.version:
        raise ValueError(f"version {challenger_mv.version} is already the champion")

    store = ObjectStore.from_settings(settings)
    champion_snapshot = (champion_mv.tags or {}).get("snapshot") if champion_mv else None
    newest, frames, new_set = _test_frames(store, settings, policy, champion_snapshot)
    # Both under the same default inference settings: the champion's tuned ones (say bf16) would
    # compare the tuning, not the models.
    versions = {"challenger": challenger_mv} | ({"champion": champion_mv} if champion_mv is not None else {})
    detectors = {
        role: Detector.load(f"models:/{registry.name}/{mv.version}", InferenceSettings(), settings=settings)
        for role, mv in versions.items()
    }
    newest_set = f"{newest}/test"
    by_detector: dict[str, dict[str, dict]] = {name: {} for name in detectors}
    others = {k: f for k, f in frames.items() if k != newest_set}
    # The shortcut control (a regression on trivial statistics) is trained on the newest snapshot's train split.
    train = snapshot_frame(store, newest, ("train",), Path(settings.home) / "cache" / "objects")
    for subset, robust, control in (({newest_set: frames[newest_set]}, True, train), (others, False, None)):
        for frame_name, per_detector in compare(
            detectors, subset, with_robustness=robust, train=control
        ).items():
            for name, result in per_detector.items():
                by_detector[name][frame_name] = result

    challenger = _flat(by_detector["challenger"], newest_set, new_set)
    champion = _flat(by_detector["champion"], newest_set, new_set) if champion_mv is not None else None
    decision = decide(policy, challenger, champion)
    report = {
        "model_name": registry.name,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "challenger": _version_info(challenger_mv),
        "champion": _version_info(champion_mv),
        "snapshot": newest,
        "decision": "promoted" if decision.passed else "rejected",
        "reasons": decision.reasons,
        "checks": decision.to_dict()["checks"],
        "slices": _rows(challenger, champion, newest_set, new_set),
        "robustness": {
            "challenger": challenger["robustness"],
            "champion": champion["robustness"] if champion else None,
        },
        "controls": by_detector["challenger"][newest_set].get("controls", {}),
        "policy": policy.model_dump(),
        "human_approval": policy.human_approval,
    }
    report["report_url"] = _store_report(store, settings, report)
    _log_to_mlflow(settings, report)
    _log_decision(report)
    return report


def apply(settings: Settings, report: dict[str, Any], approved_by: str | None = None) -> dict[str, Any]:
    """Move the aliases as the report decided: promote (old champion -> ``previous``) or tag ``rejected``."""

    registry = Registry(settings)
    version = report["challenger"]["version"]
    if report["decision"] == "promoted":
        reason = "gate passed" + (f", approved by {approved_by}" if approved_by else "")
        move = registry.promote(version, reason)
        log.info("version %s is the champion now (previous: %s)", move.champion, move.previous)
        return {
            "version": version,
            "promoted": True,
            "previous": move.previous,
            "report_url": report["report_url"],
        }
    registry.reject(version, report["reasons"])
    log.info("version %s tagged rejected", version)
    return {
        "version": version,
        "promoted": False,
        "reasons": report["reasons"],
        "report_url": report["report_url"],
    }


def _log_decision(report: dict[str, Any]) -> None:
    champion = report["champion"]["version"] if report["champion"] else "none (first model: floors only)"
    log.info(
        "gate for %s version %s vs champion %s: %s",
        report["model_name"],
        report["challenger"]["version"],
        champion,
        report["decision"].upper(),
    )
    for check in report["checks"]:
        log.info("  [%s] %s", "pass" if check["passed"] else "FAIL", check["detail"])


# -- the report -------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    return "–" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _delta(row: dict[str, Any], metric: str) -> float | None:
    mine, theirs = row["challenger"], row["champion"]
    if not mine or not theirs or mine.get(metric) is None or theirs.get(metric) is None:
        return None
    return mine[metric] - theirs[metric]


def markdown(report: dict[str, Any]) -> str:
    champion = report["champion"]
    lines = [
        f"# Gate: {report['model_name']} v{report['challenger']['version']} — {report['decision'].upper()}",
        "",
        f"Champion: {'v' + champion['version'] if champion else 'none (first model: floors only)'}; "
        f"test snapshot {report['snapshot']}; {report['created_at']}",
        "",
    ]
    if report["reasons"]:
        lines += ["## Reasons", "", *[f"- {r}" for r in report["reasons"]], ""]
    lines += [
        "## Slices (champion | challenger)",
        "",
        "| test set | slice | n | "
        + " | ".join(f"{m} champion | {m} challenger" for m in TABLE_METRICS)
        + " |",
        "|---|---|---:|" + "---:|---:|" * len(TABLE_METRICS),
    ]
    for row in report["slices"]:
        cells = []
        for metric in TABLE_METRICS:
            cells += [_fmt((row["champion"] or {}).get(metric)), _fmt((row["challenger"] or {}).get(metric))]
        lines.append(f"| {row['test_set']} | {row['slice']} | {row['n']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Checks",
        "",
        *[f"- {'✅' if c['passed'] else '❌'} {c['detail']}" for c in report["checks"]],
        "",
    ]
    return "\n".join(lines)


def render_html(report: dict[str, Any]) -> str:
    """A self-contained page: decision, reasons, the side-by-side slice table with deltas, the checks."""
    rows = []
    for row in report["slices"]:
        cells = []
        for metric in TABLE_METRICS:
            delta = _delta(row, metric)
            better = None if delta is None else (delta < 0 if metric == "ece" else delta > 0)
            verdict = "" if delta is None or abs(delta) < 1e-9 else ("better" if better else "worse")
            cells.append(
                {
                    "champion": (row["champion"] or {}).get(metric),
                    "challenger": (row["challenger"] or {}).get(metric),
                    "delta": delta,
                    "verdict": verdict,
                }
            )
        rows.append({**row, "cells": cells})
    return render("promote/gate_report.html", report=report, metrics=TABLE_METRICS, rows=rows)


def _store_report(store: ObjectStore, settings: Settings, report: dict[str, Any]) -> str:
    prefix = report_prefix(report["model_name"], report["challenger"]["version"])
    store.write_bytes(f"{prefix}/report.json", json.dumps(report, indent=2).encode())
    store.write_bytes(f"{prefix}/report.md", markdown(report).encode())
    store.write_bytes(f"{prefix}/report.html", render_html(report).encode())
    return store.uri(f"{prefix}/report.html")


def _log_to_mlflow(settings: Settings, report: dict[str, Any]) -> None:
    """The report files as artifacts of the challenger's run (``gate/``) and the decision as version tags."""
    version = report["challenger"]["version"]
    run_id = report["challenger"]["run_id"]
    if run_id:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "gate_report.json").write_text(json.dumps(report, indent=2))
            (folder / "gate_report.md").write_text(markdown(report))
            (folder / "gate_report.html").write_text(render_html(report))
            mlflow_client(settings).log_artifacts(run_id, str(folder), "gate")
    Registry(settings, name=report["model_name"]).tag(
        version, {Tags.GATE_DECISION: report["decision"], Tags.GATE_REPORT: report["report_url"]}
    )


def version_to_gate(requested: str | None, event_extras: list[dict[str, Any]], settings: Settings) -> str:
    """The form's version, else the newest triggering `challenger` event's, else the `challenger` alias."""

    return Registry(settings).pick(requested, event_extras, CHALLENGER)


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """What the DAG passes between tasks (the full report stays in the store and MLflow)."""
    return {
        k: report[k] for k in ("model_name", "challenger", "champion", "decision", "reasons", "report_url")
    }


def read_summary(result: dict[str, Any] | str) -> dict[str, Any]:
    """The summary as a dict, also from ``python -m tasks.promote``'s output (its last line is the JSON)."""
    if isinstance(result, dict):
        return result
    lines = [line for line in str(result).splitlines() if line.strip()]
    if not lines:
        raise RuntimeError("the gate printed no result")
    return json.loads(lines[-1])
