"""The embedded stack as ``make demo`` starts it keeps to itself: a private state folder, no secret in any
file but its own, every service on loopback, no look for cloud instance credentials; and a demo set goes
through collect and curate while the inbox's scheduled collection runs at the same time."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from tests.helpers.stack import alive, children, environ_of, group_pids, tcp_listeners
from tests.stack.conftest import X_TOKEN

WRITTEN_BY_THE_USER = {"inbox", "staging"}  # the demo's own process writes these, not a service
LOG_SERVERS = ("AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT", "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT")


def state_files(home: Path):
    for path in sorted(home.rglob("*")):
        if path.relative_to(home).parts[0] not in WRITTEN_BY_THE_USER and not path.is_symlink():
            yield path


def postmaster_pid(embedded) -> int:
    return int((embedded.airflow_home / "postgres" / "data" / "postmaster.pid").read_text().split()[0])


def test_the_state_folder_is_private_and_the_stack_file_holds_no_password(embedded):
    home = embedded.settings.home
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    shared = {str(p.relative_to(home)): oct(stat.S_IMODE(p.lstat().st_mode)) for p in state_files(home)}
    shared = {path: mode for path, mode in shared.items() if int(mode, 8) & 0o077}
    assert shared == {}, "group or others may read these"
    for secret_file in ("stack.json", "admin_token", "airflow/simple_auth_manager_passwords.json.generated"):
        assert stat.S_IMODE((home / secret_file).stat().st_mode) == 0o600, secret_file
    stack_file = json.loads((home / "stack.json").read_text())
    assert "airflow_password" not in stack_file
    assert embedded.info["airflow_password"]  # ...yet the CLI can show it: it reads the 0600 file


def test_no_secret_is_in_any_file_but_its_own(embedded):
    home = embedded.settings.home
    secrets = {
        embedded.info["airflow_password"]: home / "airflow" / "simple_auth_manager_passwords.json.generated",
        (home / "admin_token").read_text().strip(): home / "admin_token",
        X_TOKEN: None,  # stored encrypted in the metadata DB once a test has put it there
    }
    found = []
    for path in state_files(home):
        if path.is_file() and not path.is_socket():
            data = path.read_bytes()
            found += [
                (str(path), secret[:4])
                for secret, own in secrets.items()
                if path != own and secret.encode() in data
            ]
    assert found == []
    assert "Password for user" not in (home / "airflow" / "standalone.log").read_text()


def test_every_service_listens_on_loopback_only_except_airflows_log_servers(embedded):
    listening: dict[str, set[tuple[str, int]]] = {}
    log_server_ports: set[int] = set()
    for service in embedded.services():
        listening[service.name] = tcp_listeners(group_pids(service.pid))
        if service.name == "airflow":
            env = environ_of(service.pid)
            log_server_ports = {int(env[name]) for name in LOG_SERVERS}

    for service in embedded.services():
        assert ("127.0.0.1", service.port) in listening[service.name], service.name
        outside = {(addr, port) for addr, port in listening[service.name] if addr != "127.0.0.1"}
        # Airflow 3.3.2 binds the scheduler's and triggerer's log servers to every interface, no setting
        # changes that; they only answer requests signed with this stack's secret.
        assert {port for _, port in outside} <= log_server_ports, service.name
    assert len(log_server_ports) == 2 and log_server_ports.isdisjoint({8793, 8794})  # two stacks can coexist
    assert tcp_listeners(children(postmaster_pid(embedded))) == set()  # the metadata DB: a Unix socket only


PROBE = r"""
import json, sys
attempts = []
sys.addaudithook(lambda event, args: attempts.append(str(args[1])) if event == "socket.connect" else None)
import boto3
from botocore.config import Config
config = Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=1)
try:
    boto3.client("s3", endpoint_url="http://127.0.0.1:9", config=config).list_buckets()
    error = None
except Exception as exc:
    error = type(exc).__name__
print(json.dumps({"connects": attempts, "error": error}))
"""


def probe_credentials(env: dict[str, str], tmp_path: Path) -> dict:
    """An S3 client without credentials under ``env``: which addresses does it try to reach?"""
    env = {k: v for k, v in env.items() if not k.startswith("AWS_") or k == "AWS_EC2_METADATA_DISABLED"}
    env |= {
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_METADATA_SERVICE_TIMEOUT": "1",
        "AWS_METADATA_SERVICE_NUM_ATTEMPTS": "1",
    }
    result = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def test_no_process_of_the_stack_asks_for_cloud_instance_credentials(embedded, tmp_path):
    environments = {s.name: environ_of(s.pid) for s in embedded.services()}
    assert {name: env.get("AWS_EC2_METADATA_DISABLED") for name, env in environments.items()} == {
        "mlflow": "true",
        "airflow": "true",
        "serving": "true",
    }

    under_the_stack = probe_credentials(environments["airflow"], tmp_path)
    without_the_setting = probe_credentials(
        {k: v for k, v in environments["airflow"].items() if k != "AWS_EC2_METADATA_DISABLED"}, tmp_path
    )

    assert under_the_stack == {"connects": [], "error": "NoCredentialsError"}
    assert any(
        "169.254.169.254" in address for address in without_the_setting["connects"]
    )  # the probe sees it


def test_a_demo_set_goes_through_collect_and_curate_while_the_scheduled_collection_runs(embedded):
    """As ``make demo`` round 1 starts: unpausing the inbox's DAG starts its scheduled run at once, and the
    demo's trigger comes right behind it."""
    from tasks.data.snapshots import latest_version, read_snapshot
    from tasks.demo.data import DemoSpec, generate
    from tasks.storage import ObjectStore

    client = embedded.client()
    client.wait_for_dags(["collect_inbox", "curate"])
    staged = generate(
        embedded.settings.home / "staging", DemoSpec("A", per_split=(("train", 12), ("val", 4), ("test", 4)))
    )
    inbox = Path(embedded.settings.inbox)
    inbox.mkdir(parents=True, exist_ok=True)
    staged.rename(inbox / staged.name)
    after = datetime.now(UTC)
    client.unpause("curate")
    client.unpause("collect_inbox")
    run_id = client.trigger("collect_inbox", note="tests/stack: behind the scheduled run")

    collected = client.wait_for_run("collect_inbox", run_id, timeout=900)
    curated = settled_runs(client, "curate", after, timeout=900)

    assert collected["state"] == "success"  # it collected the set, or the scheduled run did and it skipped
    assert curated and {r["state"] for r in curated} == {"success"}
    assert all(r["state"] != "failed" for r in client.runs("collect_inbox"))
    assert [r["dag_run_id"] for r in client.runs("collect_inbox")].count(run_id) == 1
    store = ObjectStore.from_settings(embedded.settings)
    snapshot = read_snapshot(store, latest_version(store)).table
    assert "A" in set(snapshot.loc[snapshot["source"] == "inbox", "generator"])  # the demo set's fakes


def settled_runs(client, dag_id: str, after: datetime, timeout: float) -> list[dict]:
    """The runs of ``dag_id`` queued after ``after``, once there is one and none is still to finish (asset
    events may still be turning into runs: settled means unchanged over a few seconds)."""
    deadline = time.monotonic() + timeout
    previous = None
    while time.monotonic() < deadline:
        runs = client.runs(dag_id, after=after)
        states = [(r["dag_run_id"], r["state"]) for r in runs]
        if runs and all(state in {"success", "failed"} for _, state in states) and states == previous:
            return runs
        previous = states
        time.sleep(5)
    raise AssertionError(f"{dag_id} did not settle within {timeout:.0f}s: {previous}")


def test_a_killed_airflow_leaves_no_database_server_behind_and_the_stack_starts_again(embedded):
    """``stop`` ends with SIGKILL when a service does not stop in time: PostgreSQL, outside the Airflow
    service's process group, must still go (it gets SIGINT when its parent dies), and the next start
    must recover the cluster."""
    import os
    import signal

    from tasks import stack

    postmaster = postmaster_pid(embedded)
    services = embedded.services()
    airflow = next(s for s in services if s.name == "airflow")

    os.killpg(airflow.pid, signal.SIGKILL)
    deadline = time.monotonic() + 120
    while alive(postmaster) and time.monotonic() < deadline:
        time.sleep(0.5)
    stack.down(embedded.settings)

    assert not alive(postmaster), "PostgreSQL outlived the killed Airflow service"
    assert [s.name for s in services if group_pids(s.pid)] == []
    embedded.info = stack.up(embedded.settings)
    assert postmaster_pid(embedded) != postmaster
    assert "collect_inbox" in {d["dag_id"] for d in embedded.client().request("GET", "/dags")["dags"]}
