"""The store lock on both backends: exclusive, released, and taken over only from a holder that is gone."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from tasks.curate.lock import LockBusy, StoreLock


def plant(store, generation: int, *, host: str, pid: int, expires_in_s: float) -> str:
    key = f"locks/curate/{generation:010d}.json"
    now = datetime.now(UTC)
    store.write_json(
        key,
        {
            "owner": f"{host}:{pid}",
            "host": host,
            "pid": pid,
            "token": "someone-else",
            "generation": generation,
            "acquired_at": (now - timedelta(minutes=5)).isoformat(timespec="seconds"),
            "expires_at": (now + timedelta(seconds=expires_in_s)).isoformat(timespec="seconds"),
        },
    )
    return key


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_one_holder_at_a_time_and_release(store):
    with StoreLock(store, "curate", ttl_s=60, wait_s=0) as held:
        [key] = store.list("locks/curate")
        assert key == held.key and store.read_json(key)["token"] == held.record["token"]
        with pytest.raises(
            LockBusy, match=r"another curate is running on .* \(held by .* since .*, lease until"
        ):
            StoreLock(store, "curate", ttl_s=60, wait_s=0).acquire()
    assert store.list("locks") == []
    with StoreLock(store, "curate", ttl_s=60, wait_s=0):  # free again
        pass


def test_a_live_holder_elsewhere_blocks_until_its_lease_expires(store):
    plant(store, 7, host="other-host", pid=1, expires_in_s=600)
    with pytest.raises(LockBusy, match=r"held by other-host:1"):
        StoreLock(store, "curate", ttl_s=60, wait_s=0).acquire()

    plant(store, 7, host="other-host", pid=1, expires_in_s=-1)  # it stopped renewing: expired
    with StoreLock(store, "curate", ttl_s=60, wait_s=0) as held:
        assert held.key == "locks/curate/0000000008.json"  # the next generation, never an overwrite
        assert store.list("locks/curate") == [held.key]  # the stale one is gone


def test_a_holder_on_this_host_whose_process_is_dead_is_taken_over_at_once(store):
    import socket

    plant(store, 3, host=socket.gethostname(), pid=dead_pid(), expires_in_s=600)
    with StoreLock(store, "curate", ttl_s=60, wait_s=0) as held:
        assert held.key.endswith("0000000004.json")


def test_the_holder_renews_its_lease(store):
    with StoreLock(store, "curate", ttl_s=3, wait_s=0) as held:
        first = store.read_json(held.key)["expires_at"]
        deadline = time.monotonic() + 30
        while store.read_json(held.key)["expires_at"] == first:
            assert time.monotonic() < deadline, "the lease was never renewed"
            time.sleep(0.2)
