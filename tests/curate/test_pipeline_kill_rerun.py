"""A curate run killed with SIGKILL mid-way: no visible snapshot, and the re-run publishes one and removes
what the killed run left (its spool, its lock, its hidden temporary files), on both store backends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tasks.curate import curate
from tasks.curate.leftovers import SPOOL_FOLDER
from tasks.data.snapshots import list_versions, read_snapshot
from tasks.settings import Settings
from tasks.storage import TMP_MARKER
from tests.helpers.curation import add_batch, good_images

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOUR = 3600


def tmp_files(store) -> list[Path]:
    root = store.local_path("x")
    return [] if root is None else sorted(root.parent.rglob(f"{TMP_MARKER}*"))


def test_killed_run_leaves_no_snapshot_and_the_rerun_cleans_up_and_publishes(store_env, store):
    env = {**os.environ, **store_env, "PYTHONPATH": REPO}
    home = Path(store_env["VIGIL_HOME"])
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
    # What the killed run left: its spool of normalised images, and its lock.
    [spool] = (home / SPOOL_FOLDER).glob(f"curate-{proc.pid}-*")
    assert sum(p.stat().st_size for p in spool.rglob("*.png")) > 0
    [lock] = store.list("locks/curate")
    assert store.read_json(lock)["pid"] == proc.pid
    # A local store also has hidden temporaries of killed writers: age those, add one in flight.
    if store.local_path("x") is not None:
        stale = store.local_path("curated/.tmp-deadbeef-left-by-a-killed-writer.png")
        stale.write_bytes(b"partial")
        for path in tmp_files(store):
            os.utime(path, (time.time() - 2 * HOUR, time.time() - 2 * HOUR))
        in_flight = store.local_path("curated/.tmp-cafe-being-written-now.png")
        in_flight.write_bytes(b"partial")

    # The re-run may not wait: the killed run's lock must not hold it up (its pid is dead on this host).
    settings = Settings(curation={"lock_wait_s": 0})
    summary = curate(settings, store)

    assert summary["version"] == "v0001" and list_versions(store) == ["v0001"]
    snapshot = read_snapshot(store)
    assert snapshot.batches == (first.batch_id, second.batch_id)
    assert len(snapshot.table) == summary["new_images"] > 400
    assert set(store.list("curated")) == set(snapshot.table["key"])  # the killed run's objects were reused
    assert list((home / SPOOL_FOLDER).iterdir()) == []  # no spool left, neither the killed one nor its own
    assert store.list("locks") == []
    if store.local_path("x") is not None:
        assert tmp_files(store) == [in_flight]  # only the one younger than curation.temp_grace_s
    assert curate(settings, store)["version"] is None
