"""``vigil collect SOURCE`` and ``vigil sources``: the collection DAG's work, from a shell."""

from __future__ import annotations

import argparse

from tasks.collect.base import CollectError
from tasks.collect.run import collect
from tasks.collect.sources import load_sources
from tasks.console import print_json
from tasks.logs import setup_logging


def register(subparsers: argparse._SubParsersAction) -> None:
    collect = subparsers.add_parser("collect", help="collect new images of one source into a raw batch")
    collect.add_argument("source", help="source name from include/sources.yaml (see `vigil sources`)")
    collect.add_argument(
        "--max-images", type=int, metavar="N", help="most new images this run (default: the source's)"
    )
    collect.add_argument("--json", action="store_true", help="print the run summary as JSON")
    collect.set_defaults(func=_collect)

    sources = subparsers.add_parser("sources", help="list the sources of include/sources.yaml")
    sources.add_argument("--json", action="store_true")
    sources.set_defaults(func=_sources)


def _collect(args: argparse.Namespace) -> int:

    if args.max_images is not None and args.max_images < 1:
        raise ValueError(f"--max-images must be at least 1, got {args.max_images}")
    setup_logging()
    try:
        summary = collect(args.source, max_images=args.max_images)
    except CollectError as exc:
        raise ValueError(str(exc)) from None
    if args.json:
        print_json(summary)  # the plain-words summary is already in the log (stderr)
    return 0


def _sources(args: argparse.Namespace) -> int:

    rows = [
        {
            "name": s.name,
            "kind": s.kind,
            "enabled": s.enabled,
            "schedule": s.schedule,
            "max_images": s.max_images,
            "label_prior": s.label_prior,
            "dag_id": f"collect_{s.name}",
        }
        for s in load_sources().sources
    ]
    if args.json:
        print_json(rows)
        return 0
    print(f"{'name':<24} {'kind':<9} {'enabled':<8} {'schedule':<16} {'max':>6}  label_prior")
    for r in rows:
        print(
            f"{r['name']:<24} {r['kind']:<9} {'yes' if r['enabled'] else 'no':<8} {r['schedule'] or 'manual':<16} "
            f"{r['max_images']:>6}  {r['label_prior']}"
        )
    return 0
