"""Two `vigil curate` at once on one store (both backends): one publishes, the other waits for it and finds
nothing left, or, when it may not wait, exits with a message saying who holds the lock — no traceback.

The first run is frozen (SIGSTOP) while it holds the lock, so the overlap does not depend on timing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from tasks.data.snapshots import list_versions, read_snapshot
from tests.helpers.curation import add_batch, good_images

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def start(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tasks.cli", "curate", *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def frozen_holder(store, env) -> subprocess.Popen:
    """A curation that has taken the store's lock, stopped there."""
    proc = start(env)
    deadline = time.monotonic() + 120
    while not store.list("locks/curate"):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the first curation never took the lock"
        time.sleep(0.01)
    proc.send_signal(signal.SIGSTOP)
    return proc


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def test_the_second_curation_waits_for_the_first_and_finds_nothing_left(store_env, store):
    env = {**os.environ, **store_env, "PYTHONPATH": REPO}
    batch = add_batch(store, good_images(40))
    first = frozen_holder(store, env)
    try:
        second = start(env, "--json")
        seen = []
        for line in second.stderr:  # blocks until the second run logs that it waits
            seen.append(line)
            if "waiting up to 600 s for the curate lock" in line:
                break
        else:
            raise AssertionError(f"the second curation did not wait: {''.join(seen)[-3000:]}")
    finally:
        first.send_signal(signal.SIGCONT)
    code, out, err = finish(first)
    assert code == 0 and "published snapshot v0001" in out, err[-3000:]
    code, out, err = finish(second)
    assert code == 0, err[-3000:]
    summary = json.loads(out)
    assert summary["version"] is None and summary["batches"] == [] and summary["latest"] == "v0001"
    assert "Traceback" not in err
    # The data is what one curation makes of the batch, once.
    assert list_versions(store) == ["v0001"]
    snapshot = read_snapshot(store)
    assert snapshot.batches == (batch.batch_id,) and len(snapshot.table) == 40
    assert store.list("locks") == []


def test_a_second_curation_that_may_not_wait_exits_with_a_clear_message(store_env, store):
    env = {**os.environ, **store_env, "PYTHONPATH": REPO}
    batch = add_batch(store, good_images(40))
    first = frozen_holder(store, env)
    holder = store.read_json(store.list("locks/curate")[0])
    try:
        code, out, err = finish(start({**env, "VIGIL_CURATION__LOCK_WAIT_S": "0"}))
    finally:
        first.send_signal(signal.SIGCONT)

    assert code == 3 and out == ""
    assert "Traceback" not in err
    message = err.strip().splitlines()[-1]
    assert message.startswith(f"vigil curate: error: another curate is running on {store.url} ")
    assert f"held by {holder['owner']} since {holder['acquired_at']}" in message
    assert "Nothing was changed" in message and "run it again once the other one has finished" in message
    code, out, err = finish(first)
    assert code == 0 and "published snapshot v0001" in out, err[-3000:]
    assert list_versions(store) == ["v0001"] and read_snapshot(store).batches == (batch.batch_id,)
    assert len(read_snapshot(store).table) == 40 and store.list("locks") == []
