"""``vigil snapshot list|show|export``: the dataset snapshots, from a shell."""

from __future__ import annotations

import argparse
from pathlib import Path

from tasks.console import print_json
from tasks.data import snapshots
from tasks.storage import ObjectStore


def register(sub) -> None:
    snap = sub.add_parser("snapshot", help="list, show or export dataset snapshots")
    snap_sub = snap.add_subparsers(dest="snapshot_command", required=True)
    snap_list = snap_sub.add_parser("list", help="every published snapshot")
    snap_list.add_argument("--json", action="store_true")
    snap_show = snap_sub.add_parser("show", help="one snapshot's counts and batches")
    snap_show.add_argument("version", nargs="?", default="latest")
    snap_export = snap_sub.add_parser("export", help="materialise the ImageFolder view into a folder")
    snap_export.add_argument("version", nargs="?", default="latest")
    snap_export.add_argument("--dest", required=True)
    snap.set_defaults(func=_snapshot)


def _snapshot(args: argparse.Namespace) -> int:
    store = ObjectStore.from_settings()
    if args.snapshot_command == "list":
        return _list(store, args.json)
    snap = snapshots.read_snapshot(store, args.version)
    if args.snapshot_command == "show":
        print_json(
            {
                "version": snap.version,
                "parent": snap.parent,
                "created_at": snap.created_at,
                "manifest": store.uri(snap.key),
                "batches": list(snap.batches),
                "counts": snap.counts,
            }
        )
    else:  # export
        dest = snapshots.export_imagefolder(store, snap, Path(args.dest))
        print(f"exported {len(snap.table)} images of snapshot {snap.version} to {dest}")
    return 0


def _list(store: ObjectStore, as_json: bool) -> int:
    rows = []
    for version in snapshots.list_versions(store):
        snap = snapshots.read_snapshot(store, version)
        rows.append(
            {
                "version": version,
                "parent": snap.parent,
                "created_at": snap.created_at,
                "images": snap.counts.get("images"),
                "batches": len(snap.batches),
            }
        )
    if as_json:
        print_json(rows)
    elif not rows:
        print(f"no snapshots in {store.url}")
    else:
        print(f"{'version':<8} {'parent':<8} {'images':>7} {'batches':>7}  created_at")
        for r in rows:
            print(
                f"{r['version']:<8} {r['parent'] or '-':<8} {r['images']:>7} {r['batches']:>7}  {r['created_at']}"
            )
    return 0
