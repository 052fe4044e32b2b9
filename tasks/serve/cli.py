"""``vigil serve``: run the detection API (the same entry point as ``python -m tasks.serve``);
``vigil serve-token``: mint an API token (printed once) and the entry that configures it."""

from __future__ import annotations

import argparse
import json

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
    token = subparsers.add_parser(
        "serve-token",
        help="mint a detection API token: prints the token once and its serving.tokens entry (hash only)",
    )
    token.add_argument("name", help="who holds it (shown in logs, rate limits and claims)")
    token.add_argument(
        "--scopes",
        required=True,
        help="comma-separated: detect, feedback, relabel, reload, review (e.g. relabel)",
    )
    token.set_defaults(func=mint)


def mint(args: argparse.Namespace) -> int:
    from tasks.serve.auth import new_token

    token, entry = new_token(args.name, [s.strip() for s in args.scopes.split(",") if s.strip()])
    print(f"token (give it to {entry.name}; it is not stored anywhere): {token}")
    print("entry for serving.tokens / VIGIL_SERVING__TOKENS / the tokens file:")
    print(json.dumps({**entry.model_dump(), "scopes": sorted(entry.scopes)}))
    return 0


MMAP_THRESHOLD = 1 << 20  # allocations from 1 MiB up get their own mapping, returned to the OS when freed
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def return_large_buffers_to_the_os() -> None:
    """Pin glibc's mmap threshold. By default it rises to the size of the largest buffer freed (up to
    32 MiB), after which image-sized buffers come from per-thread heaps that keep their memory: each
    upload thread would hold on to the largest uploads it ever saw. Elsewhere than glibc: nothing."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        ctypes.CDLL(name).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    except (OSError, AttributeError):
        return


def run(args: argparse.Namespace) -> int:

    import uvicorn

    setup_logging()
    return_large_buffers_to_the_os()
    settings = Settings()
    app = create_app(settings, model_source=args.model)
    uvicorn.run(
        app,
        host=args.host or settings.serving.host,
        port=args.port or settings.serving.port,
        log_level="info",
        access_log=False,  # tasks.serve.middleware writes the access log, without query strings
        timeout_graceful_shutdown=10,
    )
    return 0
