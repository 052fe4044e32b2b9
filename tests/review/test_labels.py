"""A review decision is a trusted label: the inbox collector takes it as ``label_source`` ``review`` and
curation applies it, to a new image and to bytes already in the dataset (which it relabels)."""

from __future__ import annotations

import pytest

from tasks.collect.run import collect
from tasks.curate import curate
from tasks.data.snapshots import read_snapshot
from tasks.review.labels import write_trusted_label
from tasks.storage import ObjectStore
from tests.helpers.curation import encode, good_images, photo


@pytest.mark.parametrize("store_env", ["local"], indirect=True)
def test_review_labels_are_collected_and_curated_as_a_persons_labels(settings, store, tmp_path):
    settings = settings.model_copy(update={"inbox": str(tmp_path / "inbox")})
    inbox = ObjectStore(settings.inbox)
    images = good_images(12)
    for item in images:
        inbox.write_bytes(f"{'0_real' if item['label'] == 'real' else '1_fake'}/{item['name']}", item["data"])
    collect("inbox", settings, store)
    assert curate(settings, store)["version"] == "v0001"
    stored = read_snapshot(store).table
    wrong = images[0]  # stored as real
    assert stored.loc[stored["original_name"] == wrong["name"], "label"].item() == "real"

    # A reviewer says the first image is fake, and labels an image the dataset has not seen.
    new = encode(photo(40))
    assert (
        write_trusted_label(inbox, "pred-wrong", "fake", wrong["data"], "png")
        == "review/1_fake/pred-wrong.png"
    )
    write_trusted_label(inbox, "pred-new", "real", new, "png")
    summary = collect("inbox", settings, store)
    assert summary["images"] == 2 and summary["label_sources"] == {"review": 2}

    curated = curate(settings, store)
    assert curated["version"] == "v0002" and curated["relabelled"] == 1 and curated["new_images"] == 1
    table = read_snapshot(store).table.set_index("original_name")
    assert (table.loc[wrong["name"], "label"], table.loc[wrong["name"], "label_source"]) == ("fake", "review")
    assert (table.loc["pred-new.png", "label"], table.loc["pred-new.png", "label_source"]) == (
        "real",
        "review",
    )

    # A changed mind: the label moves to the other folder (only the latest stays), and is applied again.
    write_trusted_label(inbox, "pred-wrong", "real", wrong["data"], "png")
    assert inbox.list("review/1_fake") == [] and inbox.exists("review/0_real/pred-wrong.png")
    collect("inbox", settings, store)
    assert curate(settings, store)["relabelled"] == 1
    assert read_snapshot(store).table.set_index("original_name").loc[wrong["name"], "label"] == "real"


def test_only_real_or_fake_is_a_label(local_store):
    with pytest.raises(ValueError, match="real or fake"):
        write_trusted_label(local_store, "x", "skip", b"", "png")
