"""The ``vigil`` command: every subcommand runs the same function its DAG task runs.

So that a step can be run and debugged from a shell, without a scheduler. Each package contributes
its subcommands through ``register(subparsers)`` in its ``cli`` module; those modules import only
cheap things at module level, so ``vigil --help`` stays fast (a test checks it).
"""

from __future__ import annotations

import argparse
import sys

from tasks.collect import cli as collect_cli
from tasks.curate import cli as curate_cli
from tasks.data import cli as data_cli
from tasks.demo import cli as demo_cli
from tasks.deploy import cli as deploy_cli
from tasks.errors import PermanentError
from tasks.evaluate import cli as evaluate_cli
from tasks.monitor import cli as monitor_cli
from tasks.promote import cli as promote_cli
from tasks.serve import cli as serve_cli
from tasks.stack import cli as stack_cli
from tasks.train import cli as train_cli
from tasks.tune import cli as tune_cli

# In the order of the loop (``vigil --help`` lists them so).
COMMANDS = (
    collect_cli,
    curate_cli,
    data_cli,
    train_cli,
    evaluate_cli,
    promote_cli,
    tune_cli,
    deploy_cli,
    serve_cli,
    monitor_cli,
    stack_cli,
    demo_cli,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vigil", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (PermanentError, LookupError, ValueError, FileNotFoundError) as exc:
        print(f"vigil {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
