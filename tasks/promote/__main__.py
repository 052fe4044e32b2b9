"""``python -m tasks.promote [--model NAME] [--version N]``: the gate's evaluation as a container entry point.

Evaluates the challenger and the champion, stores and logs the gate report, moves no alias, and
prints the report's summary as its last stdout line (JSON): the ``promote`` DAG runs this in the
trainer image (GPU) when training runs in containers, and decides and moves the aliases itself.
"""

from __future__ import annotations

import argparse
import json

from tasks.logs import setup_logging
from tasks.promote.gate import evaluate, summary
from tasks.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.promote", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="", help="registered model (default: the serving model)")
    parser.add_argument("--version", default="", help="model version (default: the challenger alias)")
    args = parser.parse_args(argv)
    setup_logging()
    report = evaluate(Settings(), args.version or None, model_name=args.model or None)
    print(json.dumps(summary(report)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
