"""The duplicate index (multi-index hashing) and the group split, against brute force."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from tasks.curate.dedupe import DuplicateIndex, band_layout, split_for_group

RATIOS = {"train": 0.8, "val": 0.1, "test": 0.1}


@pytest.mark.parametrize("distance", [0, 4, 10])
def test_bands_cover_64_bits(distance):
    layout = band_layout(distance)
    assert len(layout) == distance + 1
    assert sum(mask.bit_length() for _, mask in layout) == 64
    assert layout[-1][0] + layout[-1][1].bit_length() == 64


@pytest.mark.parametrize("distance", [2, 4, 8])
def test_near_lookup_equals_brute_force(distance):
    rng = np.random.default_rng(distance)
    stored = [int(v) for v in rng.integers(0, 2**63, 3000, dtype=np.int64)]
    table = pd.DataFrame(
        {
            "image_id": [f"id{i}" for i in range(len(stored))],
            "phash": [f"{h:016x}" for h in stored],
            "group_id": [f"id{i}" for i in range(len(stored))],
            "split": "train",
            "label": "real",
        }
    )
    index = DuplicateIndex.from_table(table, distance)
    for _ in range(300):
        base = stored[int(rng.integers(len(stored)))]
        flips = rng.choice(64, size=int(rng.integers(0, distance + 3)), replace=False)
        query = base ^ sum(1 << int(b) for b in flips)
        brute = sorted(
            ((query ^ h).bit_count(), f"id{j}")
            for j, h in enumerate(stored)
            if (query ^ h).bit_count() <= distance
        )
        assert [(d, e.image_id) for d, e in index.near(query)] == brute


def test_split_for_group_is_stable_and_follows_ratios():
    ids = [f"{i:064x}" for i in range(4000)]
    splits = [split_for_group(i, RATIOS) for i in ids]
    assert splits == [
        split_for_group(i, dict(reversed(RATIOS.items()))) for i in ids
    ]  # order of the YAML keys
    share = {k: v / len(ids) for k, v in Counter(splits).items()}
    assert share["train"] == pytest.approx(0.8, abs=0.03) and share["test"] == pytest.approx(0.1, abs=0.02)


def test_policy():
    index = DuplicateIndex(distance=4)
    first = index.decide("a" * 64, "ff00ff00ff00ff00", "real", None, RATIOS)
    assert first.verdict == "new" and first.group_id == "a" * 64
    assert index.decide("a" * 64, "ff00ff00ff00ff00", "fake", None, RATIOS).verdict == "exact"
    assert index.decide("b" * 64, "ff00ff00ff00ff03", "real", None, RATIOS).verdict == "near_dropped"
    other_split = next(s for s in ("train", "val", "test") if s != first.split)
    kept = index.decide("c" * 64, "ff00ff00ff00ff07", "fake", other_split, RATIOS)
    assert (kept.verdict, kept.group_id, kept.split, kept.duplicate_of) == (
        "near_kept",
        "a" * 64,
        first.split,
        "a" * 64,
    )
    assert kept.split_overridden
    source = index.decide("d" * 64, "0123456789abcdef", "real", "test", RATIOS)
    assert (source.verdict, source.split) == ("new", "test")
    # An image close to two groups in different splits would straddle them: dropped.
    bridge_split = "val" if first.split != "val" else "train"
    index.decide(
        "e" * 64, "ff00ff00ff00f0f0", "real", bridge_split, RATIOS
    )  # 8 bits from a: a group of its own
    assert index.decide("f" * 64, "ff00ff00ff00fff0", "unknown", None, RATIOS).verdict == "split_conflict"
    assert len(index) == 4
