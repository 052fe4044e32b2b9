"""Report files of an evaluation: report.json, report.md, roc.png, reliability.png, confusion.png."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPORT_FILES = ("report.json", "report.md", "roc.png", "reliability.png", "confusion.png")
MAIN_METRICS = (
    "n",
    "n_real",
    "n_fake",
    "roc_auc",
    "average_precision",
    "accuracy",
    "balanced_accuracy",
    "f1",
    "recall",
    "tnr",
    "ece",
)


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    model, data, overall = report["model"], report["data"], report["overall"]
    version = f" version {model['version']}" if model.get("version") else ""
    lines = [
        f"# Evaluation of {model['name']}{version} on {data['name']}",
        "",
        f"Threshold {overall['threshold']:.4f} (P(fake) at or above it means synthetic); "
        f"{data['n']} images ({', '.join(f'{v} {k}' for k, v in sorted(data['counts'].items()))}).",
        "",
        "## Overall",
        "",
        "| metric | value |",
        "| --- | --- |",
    ]
    lines += [f"| {key} | {_cell(overall[key])} |" for key in MAIN_METRICS]
    c = overall["confusion"]
    lines += [
        "",
        "Confusion matrix (rows: true, columns: predicted):",
        "",
        "| | real | fake |",
        "| --- | --- | --- |",
        f"| **real** | {c['tn']} | {c['fp']} |",
        f"| **fake** | {c['fn']} | {c['tp']} |",
    ]
    for column, groups in report["slices"].items():
        if not groups:
            continue
        lines += ["", f"## By {column.replace('_', ' ')}", ""]
        if column == "generator":
            lines += ["Each generator slice holds every real image plus that generator's fakes.", ""]
        lines += [
            "| " + " | ".join([column, *MAIN_METRICS]) + " |",
            "| " + " | ".join(["---"] * (len(MAIN_METRICS) + 1)) + " |",
        ]
        lines += [
            "| " + " | ".join([name, *(_cell(m[k]) for k in MAIN_METRICS)]) + " |"
            for name, m in groups.items()
        ]
    control = (report.get("controls") or {}).get("trivial_statistics")
    robust = report.get("robustness") or {}
    if control or robust:
        lines += [
            "",
            "## Clean, re-encoded and the shortcut control",
            "",
            "The model's ROC AUC on the clean images, after JPEG q75 and after 0.5x resizing, next to a "
            "logistic regression on 12 trivial image statistics trained on the training split (a data set "
            "it solves can be solved without generation traces).",
            "",
            "| | clean | JPEG q75 | 0.5x resize |",
            "| --- | --- | --- | --- |",
            f"| model | {_cell(overall['roc_auc'])} | {_cell((robust.get('jpeg_q75') or {}).get('roc_auc'))} | "
            f"{_cell((robust.get('resize_0.5x') or {}).get('roc_auc'))} |",
        ]
        if control:
            lines.append(
                f"| trivial statistics | {_cell(control.get('roc_auc'))} | "
                f"{_cell(control.get('roc_auc_jpeg_q75'))} | – |"
            )
            if control.get("warning"):
                lines += ["", f"**Warning:** {control['warning']}."]
    if report.get("robustness"):
        lines += [
            "",
            "## Robustness",
            "",
            "Deltas are perturbed minus clean (negative = worse); flip rate is the "
            "share of verdicts that changed.",
            "",
            "| perturbation | roc_auc | delta_roc_auc | accuracy | delta_accuracy | flip_rate |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {name} | {_cell(r['roc_auc'])} | {_cell(r['delta_roc_auc'])} | {_cell(r['accuracy'])} | "
            f"{_cell(r['delta_accuracy'])} | {_cell(r['flip_rate'])} |"
            for name, r in report["robustness"].items()
        ]
    return "\n".join(lines) + "\n"


def plot_roc(report: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    roc = report["curves"]["roc"]
    if roc:
        ax.plot(roc["fpr"], roc["tpr"], label=f"AUC {_cell(report['overall']['roc_auc'])}")
    else:
        ax.text(0.5, 0.5, "ROC undefined (one class)", ha="center")
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
    ax.set(
        xlabel="false positive rate (real flagged)",
        ylabel="true positive rate (fakes caught)",
        title="ROC curve",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    if roc:
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_reliability(report: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    bins = report["curves"]["reliability"]
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8, label="perfect calibration")
    if bins:
        ax.bar(
            [b["bin_low"] for b in bins],
            [b["fake_share"] for b in bins],
            width=0.1,
            align="edge",
            alpha=0.6,
            edgecolor="black",
            label="observed fake share",
        )
        ax.plot([b["mean_score"] for b in bins], [b["fake_share"] for b in bins], "o", color="C1")
    ax.set(
        xlabel="P(fake)",
        ylabel="share of fakes",
        xlim=(0, 1),
        ylim=(0, 1),
        title=f"Reliability (ECE {_cell(report['overall']['ece'])})",
    )
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_confusion(report: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    c = report["overall"]["confusion"]
    matrix = np.array([[c["tn"], c["fp"]], [c["fn"], c["tp"]]])
    fig, ax = plt.subplots(figsize=(3.8, 3.4), dpi=100)
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(
            j, i, str(value), ha="center", va="center", color="black" if value < matrix.max() / 2 else "white"
        )
    ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["real", "fake"],
        yticklabels=["real", "fake"],
        xlabel="predicted",
        ylabel="true",
        title=f"threshold {report['overall']['threshold']:.3f}",
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(report: dict[str, Any], dest: Path) -> dict[str, Path]:
    """Write the five report files into ``dest``; returns them by name."""
    import matplotlib

    matplotlib.use("Agg")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    files = {name: dest / name for name in REPORT_FILES}
    files["report.json"].write_text(json.dumps(report, indent=2, sort_keys=True, default=str))
    files["report.md"].write_text(markdown(report))
    plot_roc(report, files["roc.png"])
    plot_reliability(report, files["reliability.png"])
    plot_confusion(report, files["confusion.png"])
    return files


def flat_metrics(report: dict[str, Any], prefix: str) -> dict[str, float]:
    """Overall metrics and robustness deltas as MLflow metrics (``<prefix>_roc_auc``...); undefined ones left out."""
    out = {
        f"{prefix}_{k}": float(v)
        for k, v in report["overall"].items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    control = (report.get("controls") or {}).get("trivial_statistics") or {}
    for key in ("roc_auc", "roc_auc_jpeg_q75"):
        if control.get(key) is not None:
            out[f"{prefix}_trivial_control_{key}"] = float(control[key])
    for name, entry in report.get("robustness", {}).items():
        for key, value in entry.items():
            if value is not None:
                out[f"{prefix}_{name.replace('.', '_')}_{key}"] = float(value)
    return out


def log_report(report: dict[str, Any], dest: Path, artifact_path: str, prefix: str) -> None:
    """Log the report files and flat metrics to the active MLflow run."""
    import mlflow

    write_report(report, dest)
    mlflow.log_artifacts(str(dest), artifact_path=artifact_path)
    mlflow.log_metrics(flat_metrics(report, prefix))
