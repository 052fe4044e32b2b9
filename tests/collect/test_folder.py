"""Folder sources: labels from the layout, ImageFolder splits, metadata.jsonl, re-runs add nothing."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import boto3
import pytest
from PIL.PngImagePlugin import PngInfo

from tasks.collect.base import CollectError
from tasks.collect.run import collect, cursor_key
from tasks.data.batches import list_batches
from tasks.settings import Settings
from tasks.storage import sha256_hex
from tests.helpers.collect import all_rows, image_bytes, rows_by_post

SOURCES = """
    sources:
      - name: drop
        kind: folder
        schedule: "@hourly"
        label_prior: {prior}
        options: {{path: "{path}"}}
"""


def a1111_png(color=(10, 200, 90)) -> bytes:
    import io

    from PIL import Image

    info = PngInfo()
    info.add_text("parameters", "a portrait\nSteps: 30, Sampler: DPM++ 2M, Model: juggernaut_xl")
    buf = io.BytesIO()
    Image.new("RGB", (48, 48), color).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def put(root: Path, rel: str, data: bytes) -> bytes:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


@pytest.fixture
def inbox(tmp_path) -> Path:
    root = tmp_path / "inbox"
    root.mkdir()
    return root


def test_layouts_labels_metadata_and_non_images(with_sources, store, inbox):
    files = {
        "batch1/0_real/cat.jpg": image_bytes((120, 80, 40), "JPEG"),
        "batch1/1_fake/dog.png": image_bytes((40, 80, 120)),
        "setA/train/0_real/a.png": image_bytes((1, 2, 3)),
        "setA/train/1_fake/b.png": image_bytes((4, 5, 6)),
        "setA/test/1_fake/c.png": image_bytes((7, 8, 9)),
        "loose/photo.png": image_bytes((9, 9, 9)),
        "loose/notes.png": b"<html><body>not an image</body></html>",
        "loose/generated.png": a1111_png(),
        "batch1/0_real/claimed_real.png": a1111_png((0, 0, 1)),  # provenance, yet labeled real
    }
    for rel, data in files.items():
        put(inbox, rel, data)
    put(inbox, ".DS_Store", b"\x00\x01")
    (inbox / "setA" / "metadata.jsonl").write_text(
        json.dumps({"file_name": "train/1_fake/b.png", "generator": "GenX", "extra": 1})
        + "\n"
        + json.dumps({"file_name": "test/1_fake/c.png", "generator": "GenY", "license": "CC-BY-4.0"})
        + "\n"
    )
    settings = with_sources(SOURCES.format(prior="unknown", path="."))

    summary = collect("drop", settings, store)

    assert summary["images"] == len(files) and summary["batch_id"]
    assert summary["labels"] == {"real": 3, "fake": 4, "unknown": 2}
    assert summary["label_sources"] == {"folder": 6, "png_parameters": 1, "prior": 2}
    assert summary["label_conflicts"] == 1 and summary["refused"] == {}
    rows = rows_by_post(store)
    assert set(rows) == set(files)  # .DS_Store and metadata.jsonl are not images of the batch
    assert (rows["batch1/0_real/cat.jpg"]["label"], rows["batch1/0_real/cat.jpg"]["format"]) == (
        "real",
        "JPEG",
    )
    assert rows["batch1/0_real/cat.jpg"]["split"] is None and rows["batch1/0_real/cat.jpg"]["dataset"] is None
    assert {k: rows["setA/train/1_fake/b.png"][k] for k in ("label", "split", "dataset", "generator")} == {
        "label": "fake",
        "split": "train",
        "dataset": "setA",
        "generator": "GenX",
    }
    assert (rows["setA/test/1_fake/c.png"]["split"], rows["setA/test/1_fake/c.png"]["license"]) == (
        "test",
        "CC-BY-4.0",
    )
    assert rows["setA/train/0_real/a.png"]["generator"] is None
    assert (rows["loose/photo.png"]["label"], rows["loose/photo.png"]["label_source"]) == ("unknown", "prior")
    assert (rows["loose/generated.png"]["label"], rows["loose/generated.png"]["generator"]) == (
        "fake",
        "juggernaut_xl",
    )
    assert rows["batch1/0_real/claimed_real.png"]["label"] == "real"  # an explicit folder label wins
    # Non-images are kept (curation quarantines them with a reason), stored under their own extension.
    html = rows["loose/notes.png"]
    assert html["format"] is None and html["raw_key"].endswith(".png")
    # Raw bytes are stored content-addressed, byte for byte.
    for rel, data in files.items():
        row = rows[rel]
        assert row["sha256"] == sha256_hex(data) and row["size_bytes"] == len(data)
        assert row["raw_key"].startswith("raw/drop/") and row["raw_key"].rsplit("/", 1)[-1].startswith(
            row["sha256"]
        )
        assert store.read_bytes(row["raw_key"]) == data
        assert row["source_kind"] == "folder" and row["original_name"] == rel.rsplit("/", 1)[-1]


def test_rerun_adds_nothing_and_new_files_are_picked_up(with_sources, store, inbox):
    for i in range(3):
        put(inbox, f"0_real/r{i}.png", image_bytes((i, 50, 50)))
    settings = with_sources(SOURCES.format(prior="real", path="."))
    first = collect("drop", settings, store)
    assert first["images"] == 3

    again = collect("drop", settings, store)
    assert again["batch_id"] is None and again["images"] == 0 and again["skipped"] == {"already collected": 3}
    assert len(list_batches(store)) == 1

    # Touching a file or copying it under another name adds nothing either; new content does.
    os.utime(inbox / "0_real/r0.png", (1, 1))
    put(inbox, "elsewhere/copy.png", (inbox / "0_real/r1.png").read_bytes())
    put(inbox, "1_fake/new.png", image_bytes((250, 1, 1)))
    third = collect("drop", settings, store)
    assert third["images"] == 1 and third["labels"] == {"fake": 1}
    assert third["skipped"] == {"already collected": 4}
    assert len(list_batches(store)) == 2
    assert store.exists(cursor_key("drop"))


def test_max_images_takes_the_rest_next_time(with_sources, store, inbox):
    for i in range(5):
        put(inbox, f"f{i}.png", image_bytes((i * 40, 0, 0)))
    settings = with_sources(SOURCES.format(prior="unknown", path="."))
    counts = [collect("drop", settings, store, max_images=2)["images"] for _ in range(4)]
    assert counts == [2, 2, 1, 0]
    assert len(rows_by_post(store)) == 5


def test_source_folder_relative_to_inbox_and_dataset_root(with_sources, store, inbox):
    put(inbox, "demo/train/0_real/x.png", image_bytes((3, 3, 3)))
    settings = with_sources(SOURCES.format(prior="unknown", path="demo/train"))
    collect("drop", settings, store)
    row = rows_by_post(store)["0_real/x.png"]
    assert (row["label"], row["split"]) == ("real", None)  # the split folder is the source root here


def test_bad_metadata_line_fails_and_publishes_nothing(with_sources, store, inbox):
    put(inbox, "a.png", image_bytes())
    (inbox / "metadata.jsonl").write_text('{"file_name": "a.png"}\n{not json\n')
    settings = with_sources(SOURCES.format(prior="unknown", path="."))
    with pytest.raises(CollectError, match=r"metadata.jsonl line 2: not valid JSON"):
        collect("drop", settings, store)
    assert list_batches(store) == [] and not store.exists(cursor_key("drop"))


def test_missing_folder_is_a_clear_error(with_sources, store):
    settings = with_sources(SOURCES.format(prior="unknown", path="no/such/dir"))
    with pytest.raises(
        CollectError, match=r"folder .*no/such/dir does not exist \(options.path='no/such/dir'"
    ):
        collect("drop", settings, store)


def test_import_from_an_s3_prefix_on_moto(tmp_path, moto_endpoint, local_store):
    bucket = f"inbox-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=moto_endpoint)
    s3.create_bucket(Bucket=bucket)
    files = {
        "drops/1_fake/x.png": image_bytes((1, 100, 1)),
        "drops/ds/val/0_real/y.jpg": image_bytes((5, 5, 5), "JPEG"),
        "drops/z.png": image_bytes((200, 200, 1)),
        "other/ignored.png": image_bytes((0, 0, 200)),
    }  # outside the source's prefix
    for key, data in files.items():
        s3.put_object(Bucket=bucket, Key=key, Body=data)
    include = tmp_path / "include"
    include.mkdir()
    (include / "sources.yaml").write_text(
        "sources:\n  - {name: bucket_drop, kind: folder, schedule: '@daily', "
        f"options: {{path: 's3://{bucket}/drops'}}}}\n"
    )
    settings = Settings(
        include_dir=include, home=tmp_path / "home", store_url=local_store.url, s3_endpoint_url=moto_endpoint
    )

    summary = collect("bucket_drop", settings, local_store)

    assert summary["images"] == 3 and summary["labels"] == {"fake": 1, "real": 1, "unknown": 1}
    rows = rows_by_post(local_store)
    assert (rows["ds/val/0_real/y.jpg"]["split"], rows["ds/val/0_real/y.jpg"]["dataset"]) == ("val", "ds")
    assert local_store.read_bytes(rows["1_fake/x.png"]["raw_key"]) == files["drops/1_fake/x.png"]
    assert collect("bucket_drop", settings, local_store)["images"] == 0


def test_a_missing_inbox_is_created_and_empty(with_sources, store, tmp_path):
    settings = with_sources(SOURCES.format(prior="unknown", path="."))
    assert collect("drop", settings, store)["batch_id"] is None
    assert (tmp_path / "inbox").is_dir()


def test_an_oversize_file_ends_in_quarantine_with_its_reason_and_is_collected_once_the_limit_allows(
    with_sources, store, inbox, settings
):
    from tasks.curate import curate

    put(inbox, "0_real/small.png", image_bytes((9, 9, 9)))
    huge = put(inbox, "0_real/huge.png", image_bytes((8, 8, 8)) + b"\0" * 5000)
    sources = SOURCES.format(prior="real", path=".")
    limited = with_sources(sources, images=settings.images.model_copy(update={"max_file_bytes": 4000}))

    run = collect("drop", limited, store)

    assert run["images"] == 2 and run["too_large_files"] == 1 and run["skipped"] == {}
    row = rows_by_post(store)["0_real/huge.png"]
    # Listed by size and content hash, its bytes not copied into the store.
    assert (row["raw_key"], row["size_bytes"], row["sha256"]) == (None, len(huge), sha256_hex(huge))
    assert [k for k in store.list("raw") if sha256_hex(huge) in k] == []

    curated = curate(limited.model_copy(update={"include_dir": settings.include_dir}), store)

    assert curated["quarantined"] == {"too_large_file": 1} and curated["new_images"] == 1
    reason = store.read_json(f"quarantine/{run['batch_id']}/{sha256_hex(huge)}.json")
    assert reason["code"] == "too_large_file" and reason["original_name"] == "huge.png"
    assert reason["post_id"] == "0_real/huge.png" and reason["source"] == "drop"
    assert reason["message"].startswith(f"{len(huge):,} bytes is more than images.max_file_bytes=4,000")
    assert "still where it was dropped" in reason["message"]

    # It was collected (into a quarantined batch): a re-run passes over it, saying so.
    again = collect("drop", limited, store)
    assert again["batch_id"] is None and again["skipped"] == {"already collected": 2}
    # With a higher limit, touching the file collects its bytes.
    os.utime(inbox / "0_real/huge.png", (1, 1))
    raised = collect("drop", with_sources(sources), store)
    assert raised["images"] == 1 and raised["too_large_files"] == 0
    stored = [r for r in all_rows(store) if r["sha256"] == sha256_hex(huge) and r["raw_key"]]
    assert len(stored) == 1 and store.read_bytes(stored[0]["raw_key"]) == huge


def test_images_under_the_top_level_feedback_folder_are_labeled_by_feedback(with_sources, store, inbox):
    put(inbox, "feedback/1_fake/p1.png", image_bytes((200, 10, 10)))
    put(inbox, "feedback/0_real/p2.png", image_bytes((10, 200, 10)))
    put(inbox, "other/feedback/0_real/p3.png", image_bytes((10, 10, 200)))  # not the top-level folder
    settings = with_sources(SOURCES.format(prior="unknown", path="."))

    collect("drop", settings, store)

    rows = rows_by_post(store)
    assert {rel: (row["label"], row["label_source"]) for rel, row in rows.items()} == {
        "feedback/1_fake/p1.png": ("fake", "feedback"),
        "feedback/0_real/p2.png": ("real", "feedback"),
        "other/feedback/0_real/p3.png": ("real", "folder"),
    }

    # A changed mind: the same bytes move to the other label. Known bytes are otherwise skipped, but a
    # person's label is collected again, for curation to correct the stored one.
    (inbox / "feedback/1_fake/p1.png").rename(inbox / "feedback/0_real/p1.png")
    put(inbox, "0_real/copy.png", image_bytes((10, 200, 10)))  # p2's bytes, not feedback: skipped
    again = collect("drop", settings, store)
    assert again["images"] == 1 and again["skipped"] == {"already collected": 3}  # p2, p3 and the copy
    relabel = rows_by_post(store)["feedback/0_real/p1.png"]
    assert (relabel["label"], relabel["label_source"], relabel["sha256"]) == (
        "real",
        "feedback",
        rows["feedback/1_fake/p1.png"]["sha256"],
    )
