"""``vigil serve``: run the detection API (the same entry point as ``python -m tasks.serve``)."""

from __future__ import annotations

import argparse

from tasks.logs import setup_logging
from tasks.serve.app import create_app
from tasks.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="interface to listen on (default: serving.host)")
    parser.add_argument("--port", type=int, help="port (default: serving.port)")
    parser.add_argument(
        "--model",
        help="models:/name/7, models:/name@alias or a detector folder "
        "(default: models:/{model_name}@{serving.model_alias})",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("serve", help="run the detection API (upload page, /v1/detect, /metrics)")
    add_arguments(serve)
    serve.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:

    import uvicorn

    setup_logging()
    settings = Settings()
    app = create_app(settings, model_source=args.model)
    uvicorn.run(
        app,
        host=args.host or settings.serving.host,
        port=args.port or settings.serving.port,
        log_level="info",
        timeout_graceful_shutdown=10,
    )
    return 0
