"""``python -m tasks.tune --model models:/NAME/N``: inference tuning as a container entry point.

The ``deploy`` DAG runs it in the serving image when serving runs in containers, so the settings are
measured on the serving stack; the summary is the last stdout line (JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from tasks.logs import setup_logging
from tasks.settings import Settings
from tasks.tune import tune_inference


def main(argv: list[str] | None = None) -> int:

    parser = argparse.ArgumentParser(prog="python -m tasks.tune", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="models:/<name>/<version>")
    args = parser.parse_args(argv)
    setup_logging()
    with contextlib.redirect_stdout(sys.stderr):  # MLflow prints run links; stdout is for the result only
        result = tune_inference(args.model, Settings())
    print(json.dumps(result.summary()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
