"""``vigil train``: train a detector on a dataset snapshot and register it as ``challenger``."""

from __future__ import annotations

import argparse

from tasks.train.launch import add_arguments, run


def register(sub) -> None:
    train = sub.add_parser(
        "train", help="train a detector on a dataset snapshot and register it as challenger"
    )
    add_arguments(train)
    train.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    return run(args)
