"""The ``vigil`` command: every subcommand runs the same function its DAG task runs.

So that a step can be run and debugged from a shell, without a scheduler. Each stage package
contributes its subcommands through a ``register(subparsers)`` function in its ``cli`` module;
heavy imports happen inside the handlers, so ``vigil --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

# Stage modules that add subcommands (each has ``register(subparsers)``).
STAGE_COMMANDS: tuple[str, ...] = (
    "tasks.collect.cli",
    "tasks.curate.cli",
    "tasks.model.cli",
    "tasks.promote.cli",
    "tasks.serve.cli",
    "tasks.tune.cli",
)


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def _demo_data(args: argparse.Namespace) -> int:
    from tasks.demo_data import DemoSpec, generate
    from tasks.settings import Settings

    dest = Path(args.dest or Settings().inbox)
    for generator in args.generator:
        spec = DemoSpec(generator=generator, seed=args.seed)
        if args.per_class:
            spec = DemoSpec(
                generator=generator,
                seed=args.seed,
                per_split=(
                    ("train", args.per_class),
                    ("val", max(4, args.per_class // 4)),
                    ("test", max(4, args.per_class // 3)),
                ),
            )
        root = generate(dest, spec)
        print(f"generator {generator}: {sum(1 for _ in root.rglob('*.png'))} images in {root}")
    return 0


def _snapshot(args: argparse.Namespace) -> int:
    from tasks import snapshots
    from tasks.storage import ObjectStore

    store = ObjectStore.from_settings()
    if args.snapshot_command == "list":
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
        if args.json:
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


def _stack(args: argparse.Namespace) -> int:
    from tasks import stack
    from tasks.settings import Settings

    settings = Settings()
    if args.stack_command == "up":
        info = stack.up(settings, serving=not args.no_serving)
        print_stack(info)
    elif args.stack_command == "down":
        stopped = stack.down(settings)
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
    else:
        services, info = stack.load_stack(settings.home / "stack.json")
        for service in services:
            print(
                f"{service.name:<8} {'running' if service.is_alive() else 'stopped':<8} {service.url}  log: {service.log}"
            )
        if not services:
            print("the embedded stack is not running (start it with `vigil stack up` or `make demo`)")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from tasks.demo import run_demo

    run_demo(generators=tuple(args.rounds))
    return 0


def print_stack(info: dict) -> None:
    print(
        f"Airflow UI:   {info['airflow_url']}  (user {info['airflow_user']}, password {info['airflow_password']})"
    )
    print(f"MLflow UI:    {info['mlflow_url']}")
    if info.get("serving_url"):
        print(f"Detector API: {info['serving_url']}  (upload page at /, API docs at /docs)")
    print(f"Object store: {info['store_url']}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vigil", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo-data", help="generate the synthetic labeled demo set into the inbox")
    demo.add_argument(
        "--generator",
        action="append",
        choices=["A", "B"],
        help="generator(s) of the fake class (repeatable; default A)",
    )
    demo.add_argument("--dest", help="target folder (default: settings.inbox)")
    demo.add_argument("--per-class", type=int, help="training images per class (val/test scale with it)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo_data, generator=None)

    demo_parser = sub.add_parser(
        "demo", help="the whole loop, two rounds (generators A then B), through Airflow"
    )
    demo_parser.add_argument(
        "--rounds",
        nargs="+",
        default=["A", "B"],
        choices=["A", "B"],
        help="demo generators, one round each (default: A B)",
    )
    demo_parser.set_defaults(func=_demo)

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

    stack_parser = sub.add_parser(
        "stack", help="start, stop or inspect the embedded stack (Airflow, MLflow, serving)"
    )
    stack_sub = stack_parser.add_subparsers(dest="stack_command", required=True)
    stack_up = stack_sub.add_parser("up", help="start the services (idempotent)")
    stack_up.add_argument("--no-serving", action="store_true", help="do not start the detection API")
    stack_sub.add_parser("down", help="stop every service of the stack")
    stack_sub.add_parser("status", help="which services run, where, and their logs")
    stack_parser.set_defaults(func=_stack)

    for module in STAGE_COMMANDS:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "generator", "unset") is None:
        args.generator = ["A"]
    try:
        return int(args.func(args) or 0)
    except (LookupError, ValueError, FileNotFoundError) as exc:
        print(f"vigil {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
