"""``vigil stack up|down|status``: the embedded stack (Airflow, MLflow, serving) from a shell."""

from __future__ import annotations

import argparse

from tasks.settings import Settings
from tasks.stack import embedded


def register(sub) -> None:
    stack_parser = sub.add_parser(
        "stack", help="start, stop or inspect the embedded stack (Airflow, MLflow, serving)"
    )
    stack_sub = stack_parser.add_subparsers(dest="stack_command", required=True)
    stack_up = stack_sub.add_parser("up", help="start the services (idempotent)")
    stack_up.add_argument("--no-serving", action="store_true", help="do not start the detection API")
    stack_sub.add_parser("down", help="stop every service of the stack")
    stack_sub.add_parser("status", help="which services run, where, and their logs")
    stack_parser.set_defaults(func=_stack)


def _stack(args: argparse.Namespace) -> int:
    settings = Settings()
    if args.stack_command == "up":
        print_stack(embedded.up(settings, serving=not args.no_serving))
    elif args.stack_command == "down":
        stopped = embedded.down(settings)
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
    else:
        services, _ = embedded.load_stack(settings.home / "stack.json")
        for service in services:
            state = "running" if service.is_alive() else "stopped"
            print(f"{service.name:<8} {state:<8} {service.url}  log: {service.log}")
        if not services:
            print("the embedded stack is not running (start it with `vigil stack up` or `make demo`)")
    return 0


def print_stack(info: dict) -> None:
    print(
        f"Airflow UI:   {info['airflow_url']}  (user {info['airflow_user']}, password {info['airflow_password']})"
    )
    print(f"MLflow UI:    {info['mlflow_url']}")
    if info.get("serving_url"):
        print(f"Detector API: {info['serving_url']}  (upload page at /, API docs at /docs)")
    print(f"Object store: {info['store_url']}")
