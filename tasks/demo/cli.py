"""``vigil demo`` (the whole loop through Airflow) and ``vigil demo-data`` (the synthetic labeled set)."""

from __future__ import annotations

import argparse
from pathlib import Path

from tasks.demo.data import GENERATORS, DemoSpec, generate
from tasks.demo.run import run_demo
from tasks.settings import Settings


def register(sub) -> None:
    demo_data = sub.add_parser("demo-data", help="generate the synthetic labeled demo set into the inbox")
    demo_data.add_argument(
        "--generator",
        action="append",
        choices=list(GENERATORS),
        help="generator(s) of the fake class (repeatable; default A)",
    )
    demo_data.add_argument("--dest", help="target folder (default: settings.inbox)")
    demo_data.add_argument("--per-class", type=int, help="training images per class (val/test scale with it)")
    demo_data.add_argument("--seed", type=int, default=0)
    demo_data.set_defaults(func=_demo_data)

    demo = sub.add_parser("demo", help="the whole loop, round after round, through Airflow")
    demo.add_argument(
        "--rounds",
        nargs="+",
        default=["A", "B"],
        choices=list(GENERATORS),
        help="generators whose labeled sets go to the inbox, one round each (default: A B)",
    )
    demo.add_argument(
        "--traffic",
        nargs="*",
        default=["C"],
        choices=list(GENERATORS),
        help="generators that then appear only in traffic to the API, one round each, found by the "
        "monitor and labeled through the review queue (default: C; none: --traffic)",
    )
    demo.set_defaults(func=_demo)


def _demo_data(args: argparse.Namespace) -> int:
    dest = Path(args.dest or Settings().inbox)
    for generator in args.generator or ["A"]:
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


def _demo(args: argparse.Namespace) -> int:

    run_demo(generators=tuple(args.rounds), traffic=tuple(args.traffic))
    return 0
