"""``vigil evaluate``: evaluate a detector on a snapshot split or an ImageFolder folder, from a shell."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

from tasks.data.frames import load_frame
from tasks.evaluate import evaluate_detector
from tasks.evaluate.report import log_report, markdown, write_report
from tasks.logs import setup_logging
from tasks.model.detector import Detector
from tasks.registry import use_mlflow
from tasks.settings import Settings
from tasks.storage import ObjectStore


def register(sub) -> None:
    ev = sub.add_parser("evaluate", help="evaluate a detector on a snapshot split or an ImageFolder folder")
    ev.add_argument(
        "--model",
        required=True,
        help="models:/<name>@<alias>, models:/<name>/<version>, runs:/<id>/model or a detector folder",
    )
    ev.add_argument(
        "--data", required=True, help="snapshot version (v0003, latest) or folder ({0_real,1_fake} layout)"
    )
    ev.add_argument(
        "--split", default="test", help="split of a snapshot or of a folder with split folders (default test)"
    )
    ev.add_argument(
        "--out", help="folder for report.json/.md and the plots (default: <home>/evaluations/<time>)"
    )
    ev.add_argument("--json", action="store_true", help="print the report as JSON instead of Markdown")
    ev.add_argument("--no-robustness", action="store_true", help="skip the JPEG and resize re-scoring")
    ev.add_argument(
        "--mlflow", action="store_true", help="also log the report to a run of experiment vigil-evaluation"
    )
    ev.set_defaults(func=_evaluate)


def evaluate(
    model: str,
    data: str,
    split: str | None = "test",
    out: str | None = None,
    *,
    robustness: bool = True,
    log_to_mlflow: bool = False,
    settings: Settings | None = None,
) -> tuple[dict, Path]:
    """Evaluate ``model`` on ``data``; writes the report files and returns (report, folder)."""
    settings = settings or Settings()
    is_folder = Path(data).exists()
    store = None if is_folder else ObjectStore.from_settings(settings)
    cache = Path(settings.home) / "cache" / "images"
    frame = load_frame(data, split, store, cache)
    train = _training_split(data, split, store, cache)
    detector = Detector.load(model, settings=settings)
    report = evaluate_detector(detector, frame, with_robustness=robustness, train=train)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    dest = Path(out) if out else Path(settings.home) / "evaluations" / stamp
    write_report(report, dest)
    if log_to_mlflow:
        import mlflow

        use_mlflow(settings)
        mlflow.set_experiment("vigil-evaluation")
        with mlflow.start_run(run_name=f"evaluate-{detector.name}-{detector.version or 'local'}"):
            mlflow.log_params({"model": model, "data": data, "split": split or ""})
            log_report(report, dest, "evaluation", "eval")
    return report, dest


def _training_split(data: str, split: str | None, store, cache: Path):
    """The training split next to the evaluated one (the shortcut control is trained on it), if there is one."""
    if split in (None, "train"):
        return None
    try:
        return load_frame(data, "train", store, cache)
    except (FileNotFoundError, ValueError, LookupError):
        return None


def _evaluate(args: argparse.Namespace) -> int:

    setup_logging()
    report, dest = evaluate(
        args.model,
        args.data,
        args.split,
        args.out,
        robustness=not args.no_robustness,
        log_to_mlflow=args.mlflow,
    )
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True, default=str))
    else:
        print(markdown(report))
        print(f"report files: {dest}")
    return 0
