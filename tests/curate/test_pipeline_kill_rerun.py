"""A curate run killed after writing curated objects leaves no visible snapshot; the re-run publishes one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

from tasks.curate import curate
from tasks.data.snapshots import list_versions, read_snapshot
from tasks.settings import Settings
from tasks.storage import ObjectStore
from tests.helpers.curation import add_batch, good_images

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_killed_run_leaves_no_snapshot_and_rerun_publishes_one(tmp_path):
    env = {
        **os.environ,
        "VIGIL_STORE_URL": (tmp_path / "store").as_uri(),
        "VIGIL_HOME": str(tmp_path / "home"),
        "PYTHONPATH": REPO,
    }
    store = ObjectStore(env["VIGIL_STORE_URL"])
    first = add_batch(store, good_images(24, size=64))
    second = add_batch(store, good_images(400, start=24, size=128))

    proc = subprocess.Popen(
        [sys.executable, "-m", "tasks.cli", "curate"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while not store.list("curated"):  # the first batch is uploaded, the second is still being decoded
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no curated object appeared"
        time.sleep(0.01)
    workers = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()

    assert workers, "the decoding pool was running"
    _gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, "worker processes outlived the killed run"
    assert store.list("curated")  # objects were written ...
    assert list_versions(store) == [] and not store.list("snapshots")  # ... but no snapshot is visible
    assert not store.exists(f"reports/{first.batch_id}/summary.json")

    summary = curate(Settings(store_url=env["VIGIL_STORE_URL"], home=tmp_path / "home"), store)

    assert summary["version"] == "v0001" and list_versions(store) == ["v0001"]
    snapshot = read_snapshot(store)
    assert snapshot.batches == (first.batch_id, second.batch_id)
    assert len(snapshot.table) == summary["new_images"] > 400
    assert set(store.list("curated")) == set(snapshot.table["key"])  # the killed run's objects were reused
    assert (
        curate(Settings(store_url=env["VIGIL_STORE_URL"], home=tmp_path / "home"), store)["version"] is None
    )
