"""A batch with too many bad files fails, publishes nothing, is recorded as failed and can be re-queued."""

from __future__ import annotations

import json

from tasks.cli import main
from tasks.curate import curate, failed_batches_message
from tasks.data.snapshots import list_versions
from tests.helpers import corpus
from tests.helpers.curation import add_batch, good_images


def test_failed_batch_publishes_nothing_and_is_not_retried(store, settings):
    bad = [
        {"data": b"", "name": "zero.jpg"},
        {"data": corpus.HTML, "name": "page.png"},
        {"data": corpus.SVG, "name": "logo.svg"},
    ]
    batch = add_batch(store, bad + good_images(2))

    summary = curate(settings, store)

    assert summary["version"] is None and summary["passed_batches"] == []
    message = failed_batches_message(summary)
    assert f"batch {batch.batch_id} failed: 3 of 5 images rejected (60%)" in message
    assert "curation.max_failure_ratio=50%" in message and "nothing from it was published" in message
    assert f"vigil curate --retry {batch.batch_id}" in message
    assert list_versions(store) == [] and store.list("curated") == [] and store.list("snapshots") == []
    report = store.read_json(f"reports/{batch.batch_id}/summary.json")
    assert report["status"] == "failed" and report["version"] is None and report["message"] in message
    assert report["quarantine"]["by_code"] == {"empty": 1, "not_an_image": 2}
    assert len(store.list(f"quarantine/{batch.batch_id}")) == 6  # 3 files + 3 reasons

    assert curate(settings, store)["batches"] == []  # recorded as failed: not retried forever


def test_cli_fails_then_retry_with_a_higher_threshold(local_store, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VIGIL_STORE_URL", local_store.url)
    monkeypatch.setenv("VIGIL_HOME", str(tmp_path / "home"))
    batch = add_batch(
        local_store, [{"data": b"", "name": "a.jpg"}, {"data": b"", "name": "b.jpg"}, *good_images(1)]
    )

    assert main(["curate"]) == 1
    err = capsys.readouterr().err
    assert f"batch {batch.batch_id} failed: 2 of 3 images rejected (67%)" in err
    assert main(["curate", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["batches"] == []

    assert main(["curate", "--retry", "nope"]) == 2
    assert "cannot retry batch 'nope': no such raw batch" in capsys.readouterr().err

    monkeypatch.setenv("VIGIL_CURATION__MAX_FAILURE_RATIO", "0.7")
    assert main(["curate", "--retry", batch.batch_id]) == 0
    assert "published snapshot v0001" in capsys.readouterr().out
    assert local_store.read_json(f"reports/{batch.batch_id}/summary.json")["status"] == "passed"
    assert main(["curate", "--retry", batch.batch_id]) == 2
    assert "already in snapshot v0001" in capsys.readouterr().err


def test_batch_at_the_threshold_passes(local_store, tmp_path, monkeypatch):
    from tasks.settings import Settings

    monkeypatch.setenv("VIGIL_HOME", str(tmp_path / "home"))
    add_batch(local_store, [{"data": b"", "name": "a.jpg"}, {"data": b"", "name": "b.jpg"}, *good_images(2)])
    summary = curate(
        Settings(store_url=local_store.url), local_store
    )  # 2 of 4 rejected: 50% is not above 50%
    assert summary["version"] == "v0001" and summary["new_images"] == 2 and summary["failed_batches"] == []
