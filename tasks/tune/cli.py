"""``vigil tune``: the same function the deploy DAG's tune task runs."""

from __future__ import annotations

import argparse
import contextlib
import sys

from tasks.console import print_json
from tasks.logs import setup_logging
from tasks.settings import Settings
from tasks.tune import tune_cascade, tune_inference


def register(sub) -> None:
    tune = sub.add_parser(
        "tune",
        help="benchmark inference settings of a registered detector version and "
        "record the chosen ones (its 'inference' tag, applied when it is loaded)",
    )
    tune.add_argument(
        "--model",
        help="models:/<name>@<alias> or models:/<name>/<version> "
        "(default: the serving alias of the configured model)",
    )
    tune.add_argument(
        "--snapshot", help="snapshot whose val split is measured (default: the model's training snapshot)"
    )
    tune.add_argument("--config", help="tuning config file (default: include/tuning.yaml)")
    tune.add_argument(
        "--cascade",
        action="store_true",
        help="instead: choose the cascade band (probe scores sent to the VLM) on validation data and "
        "record it on the VLM champion (its 'cascade_band' tag, applied by serving)",
    )
    tune.add_argument(
        "--json", action="store_true", help="print the summary as JSON instead of a Markdown table"
    )
    tune.set_defaults(func=_tune)


def _tune(args: argparse.Namespace) -> int:

    setup_logging()
    settings = Settings()
    if args.cascade:
        with contextlib.redirect_stdout(sys.stderr):
            choice = tune_cascade(settings, snapshot=args.snapshot, config=args.config)
        if args.json:
            print_json(choice)
        else:
            print(
                f"cascade band {choice['band']}: {choice['share']:.0%} of {choice['images']} validation images "
                f"to the VLM, cascade AUC {choice['auc']:.3f} (probe {choice['first_auc']:.3f}, VLM "
                f"{choice['second_auc']:.3f}); recorded on {choice['second']['name']} version "
                f"{choice['second']['version']}"
            )
        return 0
    model = args.model or f"models:/{settings.model_name}@{settings.serving.model_alias}"
    with contextlib.redirect_stdout(sys.stderr):  # MLflow prints run links; stdout is for the result only
        result = tune_inference(model, settings, snapshot=args.snapshot, config=args.config)
    if args.json:
        print_json(result.summary())
    else:
        print(result.markdown())
    return 0
