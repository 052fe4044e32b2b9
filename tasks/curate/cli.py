"""``vigil curate``: run curation from a shell, exactly as the ``curate`` DAG task does."""

from __future__ import annotations

import argparse
import sys

from tasks.console import print_json
from tasks.curate import CurationBusy, CurationError, curate, failed_batches_message
from tasks.data.snapshots import SnapshotConflict
from tasks.logs import setup_logging


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "curate",
        help="validate and curate new raw batches into a new dataset snapshot",
        description="Validate and curate every new raw batch into one new dataset snapshot. Exits with 1 "
        "when a batch failed (too many rejected images; the batches that passed are published), 2 on a bad "
        "request, 3 when another curation of the same store did not finish within curation.lock_wait_s.",
    )
    parser.add_argument(
        "--retry",
        action="append",
        default=[],
        metavar="BATCH_ID",
        help="re-queue a batch recorded as failed (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=_curate)


def _curate(args: argparse.Namespace) -> int:

    setup_logging()
    try:
        summary = curate(retry=args.retry)
    except CurationBusy as exc:
        print(f"vigil curate: error: {exc}", file=sys.stderr)
        return 3
    except (CurationError, SnapshotConflict) as exc:
        print(f"vigil curate: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print_json(summary)
    elif summary["version"]:
        print(
            f"published snapshot {summary['version']} (parent {summary['parent'] or '-'}): "
            f"{summary['new_images']} new images, {summary['images']} in total"
        )
    else:
        print(
            f"no new snapshot (latest: {summary['latest'] or 'none'}); "
            f"batches curated: {len(summary['batches'])}"
        )
    if not args.json:
        for uri in summary["reports"]:
            print(f"report: {uri}")
    message = failed_batches_message(summary)
    if message:
        print(message, file=sys.stderr)
        return 1
    return 0
