"""``vigil monitor``: the monitoring run of the ``monitor`` DAG, a version's reference, the review queue."""

from __future__ import annotations

import argparse
import getpass

from tasks.console import print_json


def register(sub) -> None:
    monitor = sub.add_parser("monitor", help="drift and accuracy of the prediction log; the review queue")
    commands = monitor.add_subparsers(dest="monitor_command", required=True)
    run = commands.add_parser(
        "run", help="test the new windows of the prediction log (the monitor DAG's run)"
    )
    run.add_argument("--json", action="store_true")
    reference = commands.add_parser(
        "reference", help="record a model version's reference (its test-split scores)"
    )
    reference.add_argument("version", help="registered version, e.g. 3")
    reference.add_argument("--model", help="registered model (default: settings.model_name)")
    queue = commands.add_parser("queue", help="the items waiting in the review queue")
    queue.add_argument("--json", action="store_true")
    decide = commands.add_parser("decide", help="decide a review item (real, fake or skip)")
    decide.add_argument("item")
    decide.add_argument("label", choices=["real", "fake", "skip"])
    decide.add_argument("--reviewer", default=None, help="who decides (default: this shell's user)")
    monitor.set_defaults(func=_monitor)


def _monitor(args: argparse.Namespace) -> int:
    from tasks.settings import Settings
    from tasks.storage import ObjectStore

    settings = Settings()
    if args.monitor_command == "run":
        from tasks.logs import setup_logging
        from tasks.monitor.run import monitor

        setup_logging()
        summary = monitor(settings)
        if args.json:
            print_json(summary)
        return 0
    if args.monitor_command == "reference":
        from tasks.monitor.reference import record_reference

        key = record_reference(settings, args.model or settings.model_name, args.version)
        print(ObjectStore.from_settings(settings).uri(key))
        return 0
    from tasks.review import queue

    store = ObjectStore.from_settings(settings)
    if args.monitor_command == "queue":
        items = [item.public() for item in queue.list_items(store)]
        if args.json:
            print_json(items)
        else:
            for item in items:
                print(
                    f"{item['item_id']}  {'+'.join(item['reasons']):<22} P(fake)={item['p_fake']:.3f}  "
                    f"{item['model_name']} v{item['model_version']}  {item['source']}"
                )
            print(f"{len(items)} waiting")
        return 0
    inbox = ObjectStore(settings.inbox, endpoint_url=settings.s3_endpoint_url)
    record = queue.decide(store, inbox, args.item, args.label, args.reviewer or getpass.getuser())
    print_json(record)
    return 0
