"""The promotion gate: challenger and champion evaluated on the same frozen test sets, then decided.

Test sets (all frozen: a snapshot never changes once published):

* the newest snapshot's test split, overall and per ``source`` and ``generator`` slice. Snapshots are
  cumulative, so these slices include the test images of every earlier source and generator: a
  challenger that forgets an old generator fails its slice (continual learning, no forgetting);
* the *new data*: the test images the champion's training snapshot did not have yet;
* the golden set (``golden_set`` in ``include/gate.yaml``), when configured, as the slice ``golden``.

The decision is :func:`tasks.promote.policy.decide`; this module gathers its inputs, writes the gate
report (JSON + Markdown + HTML with champion and challenger side by side, per-slice bars) to the object
store under ``reports/gate/<model>/v<version>/`` and to the challenger's MLflow run, logs the gate's
metrics against both logged models (``gate/<slice>/<metric>``, so MLflow compares versions on the same
test split), and moves the aliases.

A rejection can be overridden by a person: the ``promote`` form's *Promote even if the gate rejects it*
with a version and a reason (:func:`override_request`). The gate still evaluates and reports; the
version is promoted, and the override (reason, user, Airflow run) is recorded on the version's tags
and in the gate report, whose decision becomes ``overridden``.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.data.frames import load_frame, snapshot_frame
from tasks.data.snapshots import latest_version, manifest_key, read_snapshot
from tasks.errors import PermanentError
from tasks.evaluate import compare, feature_folder
from tasks.html import render
from tasks.promote.policy import FAILED, NOT_APPLICABLE, PASSED, GatePolicy, decide, load_policy
from tasks.registry import CHALLENGER, CHAMPION, Registry, Tags, UnknownVersionError, mlflow_client
from tasks.settings import Settings
from tasks.storage import ObjectStore, sha256_hex
from tasks.train.tracking import airflow_run

if TYPE_CHECKING:
    from tasks.data.frames import Frame
    from tasks.storage import ObjectStore

log = logging.getLogger("vigil.gate")

SLICE_COLUMNS = ("source", "generator")
TABLE_METRICS = ("roc_auc", "balanced_accuracy", "ece")
PROMOTED, REJECTED, OVERRIDDEN = "promoted", "rejected", "overridden"
MAX_OVERRIDE_REASON = 500
MARKS = {PASSED: "✅", FAILED: "❌", NOT_APPLICABLE: "➖ not applicable:"}  # a check in the Markdown report


class OverrideError(PermanentError, ValueError):
    """An override the form asks for that cannot be done: no version, no reason, a user without the right."""


class GateRejected(PermanentError):
    """The gate rejected the version: the ``promote`` run fails, so the rejection shows as such."""


def report_prefix(model_name: str, version: str) -> str:
    return f"reports/gate/{model_name}/v{version}"


def logged_model_id(mv) -> str | None:
    """The MLflow 3 logged model a version was registered from (the REST API does not return
    ``model_id``; the version's source ``models:/<model_id>`` names it)."""
    if getattr(mv, "model_id", None):
        return mv.model_id
    match = re.fullmatch(r"models:/(m-[0-9a-f]+)", mv.source or "")
    return match.group(1) if match else None


def _version_info(mv) -> dict[str, Any] | None:
    if mv is None:
        return None
    return {
        "version": str(mv.version),
        "run_id": mv.run_id,
        "model_id": logged_model_id(mv),
        "snapshot": (mv.tags or {}).get("snapshot"),
    }


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
    settings: Settings,
    version: str | None = None,
    policy: GatePolicy | None = None,
    model_name: str | None = None,
) -> dict[str, Any]:
    """Evaluate challenger (``version`` or the ``challenger`` alias) and champion of ``model_name``
    (default: the serving model); decide; store the report; record the challenger's monitoring reference.

    Aliases are not moved here (see :func:`apply`), so a human can approve in between.
    """
    from tasks.model.card import InferenceSettings
    from tasks.model.detector import Detector, shared_features

    policy = policy or load_policy(settings)
    registry = Registry(settings, name=gated_model(settings, model_name))
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
    # The subset frames repeat the newest test images; training's test report computed the challenger's.
    with shared_features(detectors.values(), feature_folder(settings)):
        for subset, robust, control in (
            ({newest_set: frames[newest_set]}, True, train),
            (others, False, None),
        ):
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
        "decision": PROMOTED if decision.passed else REJECTED,
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
        "airflow_run": airflow_run(settings),
    }
    report["report_url"] = _store_report(store, settings, report)
    _log_to_mlflow(settings, report)
    _log_gate_metrics(settings, store, report)
    _log_decision(report)
    _record_reference(settings, registry.name, str(challenger_mv.version))
    return report


def gated_model(settings: Settings, requested: str | None) -> str:
    """One of the two registered models (each detector family has its own champion); 4xx-style error else."""
    names = (settings.model_name, settings.vlm_model_name)
    if requested and requested not in names:
        raise UnknownVersionError(f"no registered model {requested!r}: the gate knows {', '.join(names)}")
    return requested or settings.model_name


def _record_reference(settings: Settings, model_name: str, version: str) -> None:
    """The version's monitoring reference, recorded here where the detector can be loaded (the
    trainer image in compose); the monitor records a missing one on first use."""
    from tasks.monitor.reference import NoReference, record_reference

    try:
        record_reference(settings, model_name, version)
    except NoReference as exc:
        log.warning("no monitoring reference for %s version %s: %s", model_name, version, exc)


def apply(
    settings: Settings,
    report: dict[str, Any],
    approved_by: str | None = None,
    override: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Move the aliases as the report decided: promote (old champion -> ``previous``) or tag ``rejected``.

    ``override`` (from :func:`override_request`) promotes a rejected version anyway and records why and
    by whom on the version and in the stored gate report.
    """
    registry = Registry(settings, name=report["model_name"])
    version = report["challenger"]["version"]
    if report["decision"] == PROMOTED or override:
        if report["decision"] == PROMOTED:
            reason = "gate passed" + (f", approved by {approved_by}" if approved_by else "")
        else:
            reason = f"gate rejected it; promoted by override of {override['by']}: {override['reason']}"
        move = registry.promote(version, reason)
        log.info("version %s is the champion now (previous: %s)", move.champion, move.previous)
        result = {
            "version": version,
            "promoted": True,
            "previous": move.previous,
            "report_url": report["report_url"],
        }
        if report["decision"] != PROMOTED:
            _record_override(settings, report, override)
            result["overridden"] = True
        return result
    registry.reject(version, report["reasons"])
    log.info("version %s tagged rejected", version)
    return {
        "version": version,
        "promoted": False,
        "reasons": report["reasons"],
        "report_url": report["report_url"],
    }


def reject(settings: Settings, report: dict[str, Any]) -> None:
    """Tag the version ``rejected`` and raise :class:`GateRejected`, which says why and how to override."""
    apply(settings, report)
    version = report["challenger"]["version"]
    raise GateRejected(
        f"gate REJECTED {report['model_name']} version {version}: "
        + "; ".join(report["reasons"])
        + f". To promote it anyway: trigger promote with Model version {version}, "
        "'Promote even if the gate rejects it' on and an Override reason."
    )


def override_request(settings: Settings, form: dict[str, Any] | None, user: str | None) -> dict | None:
    """The override the promote form asks for (None if none); :class:`OverrideError` if it cannot be done.

    An override names the version (a person overrides what they looked at, not whatever the
    ``challenger`` alias points to by then), gives a reason, and comes from a user allowed by
    ``promotion.override_users`` (empty: whoever may trigger the DAG).
    """
    form = form or {}
    reason = " ".join(str(form.get("override_reason") or "").split())
    if not form.get("override"):
        if reason:
            log.warning("an override reason was given without 'Promote even if the gate rejects it': ignored")
        return None
    if not form.get("version"):
        raise OverrideError(
            "an override needs the model version it promotes: fill 'Model version' "
            "(the rejected run's Vigil tab and the gate report name it)"
        )
    if not reason:
        raise OverrideError(
            "an override needs a reason: fill 'Override reason' (it is recorded on the model version "
            "and in the gate report)"
        )
    allowed = settings.promotion.override_users
    if allowed and user not in allowed:
        raise OverrideError(
            f"user {user!r} may not override the gate; promotion.override_users allows: {', '.join(allowed)}"
        )
    return {"reason": reason[:MAX_OVERRIDE_REASON], "by": user or "unknown"}


def _record_override(settings: Settings, report: dict[str, Any], override: dict[str, Any]) -> None:
    """The override on the version's tags and in the stored report (decision ``overridden``)."""
    store = ObjectStore.from_settings(settings)
    key = f"{report_prefix(report['model_name'], report['challenger']['version'])}/report.json"
    full = store.read_json(key) if store.exists(key) else dict(report)
    full["override"] = {
        **override,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "airflow_run": airflow_run(settings),
        "gate_reasons": full.get("reasons", []),
    }
    full["decision"] = OVERRIDDEN
    full["report_url"] = _store_report(store, settings, full)
    _log_to_mlflow(settings, full)
    Registry(settings, name=full["model_name"]).tag(
        full["challenger"]["version"],
        {Tags.GATE_OVERRIDE_REASON: override["reason"], Tags.GATE_OVERRIDE_BY: override["by"]},
    )
    log.warning(
        "version %s promoted by override of %s although the gate rejected it (%s): %s",
        full["challenger"]["version"],
        override["by"],
        "; ".join(full.get("reasons", [])),
        override["reason"],
    )


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
        log.info(
            "  [%s] %s", {PASSED: "pass", FAILED: "FAIL"}.get(check_status(check), "n/a"), check["detail"]
        )


def check_status(check: dict[str, Any]) -> str:
    """passed / failed / not applicable (reports written before "not applicable" existed have ``passed``)."""
    return check.get("status") or (PASSED if check.get("passed") else FAILED)


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
        *[f"- {MARKS[check_status(c)]} {c['detail']}" for c in report["checks"]],
        "",
    ]
    if report.get("override"):
        o = report["override"]
        lines += [
            "## Override",
            "",
            f"Promoted by {o['by']} on {o['at']} although the gate rejected it: {o['reason']}",
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
    return render(
        "promote/gate_report.html",
        report=report,
        metrics=TABLE_METRICS,
        rows=rows,
        checks=[{**c, "status": check_status(c)} for c in report["checks"]],
        chart=slice_chart(report),
    )


def slice_chart(report: dict[str, Any]) -> dict[str, Any]:
    """The per-slice picture of a report: champion and challenger bars of the gate's slice metric, and
    the status of the check that judged each slice (the template ``promote/slice_bars.html`` draws it)."""
    metric = ((report.get("policy") or {}).get("slices") or {}).get("metric") or "roc_auc"
    statuses = {c.get("name"): check_status(c) for c in report.get("checks") or []}
    rows = []
    for row in report.get("slices") or []:
        name = row.get("slice")
        check = {"overall": f"floor:{metric}", "new data": "better_on_new_data"}.get(
            name, f"no_forgetting:{name}"
        )
        rows.append(
            {
                "label": name,
                "test_set": row.get("test_set"),
                "n": row.get("n"),
                "champion": _unit((row.get("champion") or {}).get(metric)),
                "challenger": _unit((row.get("challenger") or {}).get(metric)),
                "status": statuses.get(check),
            }
        )
    return {"metric": metric, "rows": rows}


def _unit(value: Any) -> float | None:
    """A metric as a bar length: a number in [0, 1], else None (missing, NaN)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if 0.0 <= number <= 1.0 else None


def _store_report(store: ObjectStore, settings: Settings, report: dict[str, Any]) -> str:
    prefix = report_prefix(report["model_name"], report["challenger"]["version"])
    store.write_bytes(f"{prefix}/report.json", json.dumps(report, indent=2).encode())
    store.write_bytes(f"{prefix}/report.md", markdown(report).encode())
    store.write_bytes(f"{prefix}/report.html", render_html(report).encode())
    return store.uri(f"{prefix}/report.html")


def _metric_key(slice_name: str, metric: str) -> str:
    """``gate/<slice>/<metric>``, the slice in MLflow's metric-name characters (generator=A -> generator_A)."""
    clean = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in slice_name.replace(" ", "_"))
    return f"gate/{clean}/{metric}"


def _log_gate_metrics(settings: Settings, store: ObjectStore, report: dict[str, Any]) -> None:
    """Each model's numbers from this gate, logged against its logged model (and into its own training
    run), with the test snapshot as their dataset: MLflow then compares the versions on the same data."""
    import time

    from mlflow.entities import Metric

    client = mlflow_client(settings)
    snapshot = report["snapshot"]
    digest = sha256_hex(store.read_bytes(manifest_key(snapshot)))[:20]
    now = int(time.time() * 1000)
    for role in ("challenger", "champion"):
        info = report.get(role)
        if not info or not info.get("run_id"):
            continue
        metrics = [
            Metric(
                _metric_key(row["slice"], name),
                float(value),
                now,
                0,
                model_id=info.get("model_id"),
                dataset_name=f"snapshot-{snapshot}",
                dataset_digest=digest,
            )
            for row in report["slices"]
            for name, value in (row.get(role) or {}).items()
            if isinstance(value, (int, float)) and value == value  # not NaN
        ]
        if metrics:
            client.log_batch(info["run_id"], metrics=metrics)


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


def version_to_gate(
    settings: Settings,
    form: dict[str, Any] | None,
    event_extras: list[dict[str, Any]],
    user: str | None = None,
) -> str:
    """The form's version, else the newest triggering `challenger` event's, else the `challenger` alias.

    An override in the form is checked here, before the evaluation: one that cannot be done fails now.
    """
    form = form or {}
    override_request(settings, form, user)
    name = model_to_gate(settings, form, event_extras)
    return Registry(settings, name=name).pick(form.get("version"), _extras_of(event_extras, name), CHALLENGER)


def model_to_gate(settings: Settings, form: dict[str, Any] | None, event_extras: list[dict[str, Any]]) -> str:
    """The form's model, else the newest triggering `challenger` event's, else the serving model."""
    named = [extra["model_name"] for extra in event_extras if extra and extra.get("model_name")]
    return gated_model(settings, (form or {}).get("model") or (named[-1] if named else None))


def _extras_of(event_extras: list[dict[str, Any]], model_name: str) -> list[dict[str, Any]]:
    return [e for e in event_extras if e and e.get("model_name", model_name) == model_name]


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
