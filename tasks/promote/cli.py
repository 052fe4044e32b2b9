"""``vigil promote`` (the gate) and ``vigil deploy`` (tune, sandbox, roll out, check; roll back on failure):
the functions the ``promote`` and ``deploy`` DAGs run, without a scheduler."""

from __future__ import annotations

import argparse


def _promote(args: argparse.Namespace) -> int:
    from tasks.cli import print_json
    from tasks.promote.gate import apply, evaluate, markdown
    from tasks.settings import Settings

    settings = Settings()
    report = evaluate(settings, args.version)
    outcome = None if args.dry_run else apply(settings, report)
    if args.json:
        print_json({"report": report, "applied": outcome})
    else:
        print(markdown(report))
        print(f"report: {report['report_url']}")
        if outcome is None:
            print("dry run: aliases unchanged")
    return 0 if report["decision"] == "promoted" else 3


def _deploy(args: argparse.Namespace) -> int:
    from tasks.cli import print_json
    from tasks.deploy import champion_version, run_deploy
    from tasks.settings import Settings

    settings = Settings()
    print_json(run_deploy(settings, champion_version(settings, args.version), tune=not args.no_tune))
    return 0


def register(sub) -> None:
    promote = sub.add_parser("promote", help="gate a challenger against the champion and move the aliases")
    promote.add_argument("--version", help="model version to gate (default: the challenger alias)")
    promote.add_argument("--dry-run", action="store_true", help="evaluate and report, but move no alias")
    promote.add_argument("--json", action="store_true")
    promote.set_defaults(func=_promote)

    deploy = sub.add_parser(
        "deploy",
        help="tune, smoke-test in a sandbox, roll out and check a champion; roll back on any failure",
    )
    deploy.add_argument("--version", help="model version (default: the champion alias)")
    deploy.add_argument("--no-tune", action="store_true", help="keep the stored inference settings")
    deploy.set_defaults(func=_deploy)
