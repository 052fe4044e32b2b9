"""Curation into snapshots on both store backends: layout, counts, dedupe, splits, idempotent re-runs."""

from __future__ import annotations

import io
from itertools import combinations

import pandas as pd
from PIL import Image

from tasks.curate import curate
from tasks.data.snapshots import (
    LABEL_DIRS,
    SNAPSHOT_COLUMNS,
    export_imagefolder,
    list_versions,
    read_snapshot,
)
from tasks.images import hamming
from tests.helpers.curation import add_batch, encode, good_images, photo


def reencoded(index: int, label: str, fmt: str = "JPEG", **extra) -> dict:
    params = {"quality": 85} if fmt == "JPEG" else {}
    return {
        "data": encode(photo(index), fmt, **params),
        "name": f"re{index}-{label}.{fmt.lower()}",
        "label": label,
        **extra,
    }


def test_snapshots_dedupe_and_splits(store, settings, tmp_path):
    first = add_batch(store, good_images(16) + good_images(4, start=16, split="test"))
    summary = curate(settings, store)

    v1 = read_snapshot(store)
    assert (summary["version"], summary["parent"], summary["new_images"]) == ("v0001", None, 20)
    assert v1.version == "v0001" and v1.parent is None and v1.batches == (first.batch_id,)
    assert set(SNAPSHOT_COLUMNS) <= set(v1.table.columns)
    assert {"post_id", "author_hash", "alt_text", "license", "collected_at", "sha256"} <= set(
        v1.table.columns
    )
    assert v1.counts["images"] == 20 and v1.counts["by_label"] == {"real": 10, "fake": 10}
    assert sum(v1.counts["by_split_label"].values()) == 20 and v1.counts["by_source"] == {"inbox": 20}
    for row in v1.table.itertuples():
        assert row.path == f"{row.split}/{LABEL_DIRS[row.label]}/{row.image_id}.png"
        assert row.key == f"curated/{row.image_id}.png" and store.exists(row.key)
        assert row.group_id == row.image_id and row.batch_id == first.batch_id
    by_name = v1.table.set_index("original_name")
    assert (
        by_name.loc[[f"img{i}.png" for i in range(16, 20)], "split"] == "test"
    ).all()  # the source's split

    group_split = by_name.loc["img6.png", "split"]
    moved = next(s for s in ("train", "val", "test") if s != group_split)
    second = add_batch(
        store,
        [
            {
                "data": encode(photo(0), "BMP"),
                "name": "same-pixels.bmp",
                "label": "real",
            },  # exact duplicate of img0
            reencoded(2, "real"),  # near duplicate, same label: a re-post, dropped
            reencoded(4, "fake"),  # near duplicate, other label: kept in img4's group
            reencoded(6, "fake", split=moved),  # ditto, and the source's split loses to the group's
            {"data": encode(photo(30)), "name": "new.png", "label": "fake"},
            {
                "data": encode(photo(30), "BMP"),
                "name": "new-again.bmp",
                "label": "fake",
            },  # exact, within the batch
            {"data": encode(photo(31)), "name": "other.png", "label": "real"},
        ],
    )
    summary = curate(settings, store)

    assert (summary["version"], summary["parent"], summary["new_images"]) == ("v0002", "v0001", 4)
    assert summary["duplicates"] == {
        "exact": 2,
        "near_dropped": 1,
        "near_kept": 2,
        "split_conflicts_dropped": 0,
    }
    report = store.read_json(f"reports/{second.batch_id}/summary.json")
    assert report["counts"]["source_split_overridden"] == 1 and report["version"] == "v0002"
    v2 = read_snapshot(store)
    assert v2.batches == (first.batch_id, second.batch_id) and v2.counts["images"] == 24
    pd.testing.assert_frame_equal(
        v2.table.iloc[:20].reset_index(drop=True), v1.table
    )  # cumulative, parent untouched
    pd.testing.assert_frame_equal(read_snapshot(store, "v0001").table, v1.table)  # immutable
    new = v2.table.iloc[20:].set_index("original_name")
    assert set(new.index) == {"re4-fake.jpeg", "re6-fake.jpeg", "new.png", "other.png"}
    for base, copy in (("img4.png", "re4-fake.jpeg"), ("img6.png", "re6-fake.jpeg")):
        assert (
            new.loc[copy, "group_id"] == by_name.loc[base, "image_id"] == new.loc[copy, "near_duplicate_of"]
        )
        assert new.loc[copy, "split"] == by_name.loc[base, "split"]
    assert new.loc["re6-fake.jpeg", "split"] == group_split

    # Near duplicates never straddle splits, whatever their group.
    distance = settings.curation.near_duplicate_distance
    for a, b in combinations(v2.table.itertuples(), 2):
        if hamming(a.phash, b.phash) <= distance:
            assert a.split == b.split and a.group_id == b.group_id

    # Curated objects are normalised PNGs whose pixels hash to their name.
    sample = v2.table.iloc[-1]
    assert Image.open(io.BytesIO(store.read_bytes(sample.key))).format == "PNG"

    # The ImageFolder export view is the manifest's path column.
    dest = export_imagefolder(store, v2, tmp_path / "export")
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.png")) == sorted(v2.table["path"])
    assert {p.parent.name for p in dest.rglob("*.png")} == {"0_real", "1_fake"}

    # Re-running with the same inputs changes nothing: no snapshot, no object.
    before = {key: store.size(key) for key in store.list()}
    summary = curate(settings, store)
    assert summary["version"] is None and summary["batches"] == [] and summary["latest"] == "v0002"
    assert {key: store.size(key) for key in store.list()} == before
    assert list_versions(store) == ["v0001", "v0002"]


def test_batch_with_only_known_images_publishes_nothing(store, settings):
    images = good_images(4)
    add_batch(store, images)
    assert curate(settings, store)["version"] == "v0001"
    again = add_batch(store, images)  # a collector re-listing the same bytes
    summary = curate(settings, store)
    assert summary["version"] is None and summary["duplicates"]["exact"] == 4
    assert store.read_json(f"reports/{again.batch_id}/summary.json")["counts"]["new_images"] == 0
    assert curate(settings, store)["batches"] == []  # recorded: not curated again
    assert list_versions(store) == ["v0001"]


def test_feedback_on_stored_bytes_corrects_their_label_in_a_new_snapshot(store, settings):
    from tasks.data.batches import HUMAN_LABEL

    images = good_images(4)  # real, fake, real, fake
    add_batch(store, images)
    assert curate(settings, store)["version"] == "v0001"
    first = read_snapshot(store)
    wrong, right = images[0], images[1]
    # Someone flags the first image as synthetic through serving's feedback; the second is confirmed as
    # it is; a weak label (not a person's) on stored bytes never overrides what is stored.
    add_batch(
        store,
        [
            {**wrong, "label": "fake", "label_source": HUMAN_LABEL},
            {**right, "label": "fake", "label_source": HUMAN_LABEL},
            {**images[2], "label": "fake", "label_source": "prior"},
        ],
        source="feedback",
    )
    summary = curate(settings, store)

    assert summary["version"] == "v0002" and summary["new_images"] == 0 and summary["relabelled"] == 1
    second = read_snapshot(store)
    assert len(second.table) == len(first.table) == 4
    changed = second.table.merge(first.table, on="image_id", suffixes=("", "_before"))
    changed = changed[changed["label"] != changed["label_before"]]
    assert len(changed) == 1
    row = changed.iloc[0]
    assert (row["label_before"], row["label"], row["label_source"]) == ("real", "fake", HUMAN_LABEL)
    assert row["sha256"] == first.table.loc[first.table["original_name"] == wrong["name"], "sha256"].item()
    assert row["path"] == f"{row['split']}/{LABEL_DIRS['fake']}/{row['image_id']}.png"
    report = store.read_json(f"reports/{summary['batches'][0]}/summary.json")
    assert (
        report["counts"]["relabelled"] == 1 and "1 stored images relabelled by feedback" in report["message"]
    )

    # The same correction again changes nothing: no new snapshot.
    add_batch(store, [{**wrong, "label": "fake", "label_source": HUMAN_LABEL}], source="feedback")
    assert curate(settings, store)["version"] is None and list_versions(store) == ["v0001", "v0002"]
