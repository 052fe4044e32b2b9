"""``vigil deploy``: tune, smoke-test in a sandbox, roll out and check a champion; roll back on failure."""

from __future__ import annotations

import argparse

from tasks.console import print_json
from tasks.deploy.run import champion_version, deploy_model, run_deploy
from tasks.logs import setup_logging
from tasks.settings import Settings


def register(sub) -> None:
    deploy = sub.add_parser(
        "deploy",
        help="tune, smoke-test in a sandbox, roll out and check a champion; roll back on any failure",
    )
    deploy.add_argument(
        "--model", help="registered model: the serving model (default) or the VLM, the cascade's second stage"
    )
    deploy.add_argument("--version", help="model version (default: the champion alias)")
    deploy.add_argument("--no-tune", action="store_true", help="keep the stored inference settings")
    deploy.set_defaults(func=_deploy)


def _deploy(args: argparse.Namespace) -> int:
    setup_logging()
    settings = Settings()
    name = deploy_model(settings, args.model)
    version = champion_version(settings, args.version, model_name=name)
    print_json(run_deploy(settings, version, tune=not args.no_tune, model_name=name))
    return 0
