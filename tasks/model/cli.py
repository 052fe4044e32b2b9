"""``vigil train`` and ``vigil evaluate``: the same functions the DAG and the trainer container run."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path


def register(sub) -> None:
    from tasks.train.launch import add_arguments

    train = sub.add_parser(
        "train", help="train a detector on a dataset snapshot and register it as challenger"
    )
    add_arguments(train)
    train.set_defaults(func=_train)

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


def _train(args: argparse.Namespace) -> int:
    from tasks.train.launch import run

    return run(args)


def evaluate(
    model: str,
    data: str,
    split: str | None = "test",
    out: str | None = None,
    *,
    robustness: bool = True,
    log_to_mlflow: bool = False,
    settings=None,
) -> tuple[dict, Path]:
    """Evaluate ``model`` on ``data``; writes the report files and returns (report, folder)."""
    from tasks.evaluate import evaluate_detector
    from tasks.evaluate.report import log_report, write_report
    from tasks.model.detector import Detector
    from tasks.model.frames import load_frame
    from tasks.settings import Settings
    from tasks.storage import ObjectStore

    settings = settings or Settings()
    is_folder = Path(data).exists()
    store = None if is_folder else ObjectStore.from_settings(settings)
    frame = load_frame(data, split, store, Path(settings.home) / "cache" / "images")
    detector = Detector.load(model, settings=settings)
    report = evaluate_detector(detector, frame, with_robustness=robustness)
    dest = (
        Path(out)
        if out
        else Path(settings.home) / "evaluations" / datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    )
    write_report(report, dest)
    if log_to_mlflow:
        import mlflow

        from tasks.model.registry import use_mlflow

        use_mlflow(settings)
        mlflow.set_experiment("vigil-evaluation")
        with mlflow.start_run(run_name=f"evaluate-{detector.name}-{detector.version or 'local'}"):
            mlflow.log_params({"model": model, "data": data, "split": split or ""})
            log_report(report, dest, "evaluation", "eval")
    return report, dest


def _evaluate(args: argparse.Namespace) -> int:
    from tasks.evaluate.report import markdown
    from tasks.train.launch import setup_logging

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
