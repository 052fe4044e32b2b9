"""The embedded Airflow as one service: its metadata DB, its pools and connections, ``airflow standalone``.

``python -m tasks.stack.airflow_service`` (what :func:`tasks.stack.embedded.start_airflow` starts, with
``AIRFLOW_HOME`` and the rest of the environment set):

1. starts the private PostgreSQL cluster in ``$AIRFLOW_HOME/postgres`` (:mod:`tasks.stack.metadb`);
2. migrates the DB and imports ``include/airflow/pools.json`` and ``connections.json`` (one child
   process, Airflow's own CLI commands: the same ones compose's ``airflow-init`` runs; an existing
   connection is kept, so edits made in the UI or CLI survive restarts);
3. points ``$AIRFLOW_HOME/airflow.cfg`` at the cluster, so that ``airflow`` commands run by hand with this
   ``AIRFLOW_HOME`` see the same database;
4. runs ``airflow standalone`` until it ends or this process gets SIGTERM/SIGINT; stops PostgreSQL last.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tasks.stack import metadb
from tasks.stack.airflow_objects import CONNECTIONS_FILE, POOLS_FILE


def main() -> int:
    home = Path(os.environ["AIRFLOW_HOME"])
    cluster = metadb.Cluster(home / "postgres")
    say(f"starting the metadata DB (PostgreSQL, socket {cluster.sockets})")
    server = cluster.start()
    try:
        env = {**os.environ, **cluster.airflow_env()}
        prepared = subprocess.run([sys.executable, "-m", __spec__.name, "prepare"], env=env)
        if prepared.returncode != 0:
            say("preparing the metadata DB failed (see above)")
            return prepared.returncode
        point_config_at(home / "airflow.cfg", cluster.airflow_env())
        standalone = subprocess.Popen([str(Path(sys.executable).with_name("airflow")), "standalone"], env=env)
        signalled = []

        def forward(signum, _frame):  # usually the whole group got it; when only we did, pass it on
            signalled.append(signum)
            if standalone.poll() is None:
                standalone.send_signal(signum)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        returncode = standalone.wait()
        if not signalled:  # standalone ended by itself: its components must not outlive it
            say(f"airflow standalone exited with {returncode}; stopping its components")
            os.killpg(0, signal.SIGTERM)
        _wait_for_rest_of_group(timeout=15.0)  # they write their last state to the DB as they stop
        return returncode
    finally:
        say("stopping the metadata DB")
        metadb.stop(server)


def prepare() -> None:
    """``airflow db migrate``, ``pools import``, ``connections import`` in one process (one Airflow import)."""
    from airflow.cli import cli_parser
    from airflow.configuration import write_default_airflow_configuration_if_needed

    from tasks.settings import Settings

    settings = Settings()
    write_default_airflow_configuration_if_needed()  # what `airflow` does first: airflow.cfg, its keys
    parser = cli_parser.get_parser()
    for argv in (
        ["db", "migrate"],
        ["pools", "import", str(settings.include(POOLS_FILE))],
        ["connections", "import", str(settings.include(CONNECTIONS_FILE))],
    ):
        say(f"airflow {' '.join(argv)}")
        args = parser.parse_args(argv)
        args.func(args)


def point_config_at(config: Path, database_env: dict[str, str]) -> None:
    """Set ``[database]`` ``sql_alchemy_conn`` (and ``_async``) in the airflow.cfg Airflow generated.

    Airflow writes its defaults (SQLite) into a new airflow.cfg, with the secrets it generates (Fernet key,
    JWT secret); editing those two lines keeps the rest as Airflow made it.
    """
    if not config.exists():
        return
    values = {
        key.removeprefix("AIRFLOW__DATABASE__").lower(): value
        for key, value in database_env.items()
        if key.startswith("AIRFLOW__DATABASE__")
    }
    lines = config.read_text().splitlines(keepends=True)
    section, seen, out = None, set(), []
    for line in lines:
        header = re.match(r"\s*\[(?P<name>[^\]]+)\]", line)
        if header:
            if section == "database":
                out.extend(f"{k} = {v}\n" for k, v in values.items() if k not in seen)
                seen.update(values)
            section = header["name"]
        option = re.match(r"\s*#?\s*(?P<key>sql_alchemy_conn(?:_async)?)\s*=", line)
        if section == "database" and option and option["key"] in values:
            if option["key"] not in seen:
                out.append(f"{option['key']} = {values[option['key']]}\n")
                seen.add(option["key"])
            continue
        out.append(line)
    if section == "database":
        out.extend(f"{k} = {v}\n" for k, v in values.items() if k not in seen)
    config.write_text("".join(out))


def _wait_for_rest_of_group(timeout: float) -> None:
    """Until this process is the last live member of its process group, or ``timeout``."""
    group, me = os.getpgid(0), os.getpid()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(pid != me for pid in _live_members(group)):
        time.sleep(0.2)


def _live_members(group: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(entry))
    return members


def say(message: str) -> None:
    print(f"vigil airflow service | {message}", flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["prepare"]:
        prepare()
    else:
        sys.exit(main())
