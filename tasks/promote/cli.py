"""``vigil promote``: gate a challenger against the champion and move the aliases, as the ``promote`` DAG does."""

from __future__ import annotations

import argparse
import getpass

from tasks.console import print_json
from tasks.promote.gate import apply, evaluate, markdown, override_request
from tasks.settings import Settings


def _promote(args: argparse.Namespace) -> int:

    settings = Settings()
    form = {"version": args.version, "override": args.override is not None, "override_reason": args.override}
    override = override_request(settings, form, getpass.getuser())  # before the evaluation
    report = evaluate(settings, args.version, model_name=args.model)
    outcome = None if args.dry_run else apply(settings, report, override=override)
    if args.json:
        print_json({"report": report, "applied": outcome})
    else:
        print(markdown(report))
        print(f"report: {report['report_url']}")
        if outcome is None:
            print("dry run: aliases unchanged")
    return 0 if report["decision"] == "promoted" or (outcome or {}).get("promoted") else 3


def register(sub) -> None:
    promote = sub.add_parser("promote", help="gate a challenger against the champion and move the aliases")
    promote.add_argument(
        "--model", help="registered model to gate: the probe's or the VLM's (default: the serving model)"
    )
    promote.add_argument("--version", help="model version to gate (default: the challenger alias)")
    promote.add_argument("--dry-run", action="store_true", help="evaluate and report, but move no alias")
    promote.add_argument(
        "--override",
        metavar="REASON",
        help="promote --version even if the gate rejects it; the reason and your user are recorded",
    )
    promote.add_argument("--json", action="store_true")
    promote.set_defaults(func=_promote)
