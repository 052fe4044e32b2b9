"""Duplicate detection against the whole curated store, and the split of each near-duplicate group.

The index is built from the latest snapshot manifest, which already lists ``image_id``, ``phash``,
``group_id``, ``split`` and ``label`` of every curated image: no image is re-read. Near-duplicate
lookups use multi-index hashing: the 64-bit pHash is cut into ``distance + 1`` bands, and by the
pigeonhole principle two hashes within ``distance`` bits agree exactly on at least one band. So a
lookup only compares the images that share a band value with the query (a few dict hits), not the
whole store.

Policy (also in docs/curation.md):

* exact duplicate (same decoded pixels): dropped, the first one stays;
* near duplicate with the same label as a match: dropped as a re-post;
* near duplicate with a different label (e.g. a manipulated version of a real photo): kept, in the
  group of its nearest match, so it lands in the same split;
* near duplicate of images in different splits (possible only when groups lie close to each
  other): dropped, as keeping it would put near duplicates on both sides of a split.

A new group takes the split its source gives (ImageFolder layout) or else the split chosen by a stable
hash of its group id; every later member follows the group, even when its source says otherwise.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from tasks.data.snapshots import SPLITS

if TYPE_CHECKING:
    from collections.abc import Mapping

    import pandas as pd

INDEX_COLUMNS = ("image_id", "phash", "group_id", "split", "label")

Verdict = Literal["new", "near_kept", "exact", "near_dropped", "split_conflict"]
DROPPED: frozenset[str] = frozenset({"exact", "near_dropped", "split_conflict"})


@dataclass(frozen=True)
class Entry:
    image_id: str
    phash: int
    group_id: str
    split: str
    label: str


@dataclass(frozen=True)
class Decision:
    """Where a new image goes: its verdict, group and split, and the image it duplicates (if any)."""

    verdict: Verdict
    group_id: str
    split: str
    duplicate_of: str | None = None
    split_overridden: bool = False  # the source gave another split, the group's split won

    @property
    def keep(self) -> bool:
        return self.verdict not in DROPPED


def split_for_group(group_id: str, ratios: Mapping[str, float]) -> str:
    """A stable split for a group: its sha256 mapped onto the cumulative ``ratios``."""
    point = int(hashlib.sha256(group_id.encode()).hexdigest()[:15], 16) / 16**15
    splits = [split for split in SPLITS if ratios.get(split, 0) > 0]
    cumulative = 0.0
    for split in splits:
        cumulative += ratios[split]
        if point < cumulative:
            return split
    return splits[-1]


def band_layout(distance: int) -> list[tuple[int, int]]:
    """``distance + 1`` (shift, mask) bands covering the 64 bits as evenly as possible."""
    count = min(distance + 1, 64)
    widths = [64 // count + (1 if i < 64 % count else 0) for i in range(count)]
    layout, shift = [], 0
    for width in widths:
        layout.append((shift, (1 << width) - 1))
        shift += width
    return layout


class DuplicateIndex:
    """Exact (image_id) and near (pHash within ``distance`` bits) lookups over curated images.

    The snapshot's images are indexed with numpy (per band: the band values sorted once, looked up
    by binary search), so building the index of a large store costs milliseconds; images added
    during the run go to small per-band dicts.
    """

    def __init__(self, distance: int, table: pd.DataFrame | None = None) -> None:
        self.distance = distance
        self.layout = band_layout(distance)
        if table is None:
            import pandas as pd

            table = pd.DataFrame({column: [] for column in INDEX_COLUMNS}, dtype=object)
        self.ids: list[str] = table["image_id"].tolist()
        self.groups: list[str] = table["group_id"].tolist()
        self.splits: list[str] = table["split"].tolist()
        self.labels: list[str] = table["label"].tolist()
        hashes = np.array([int(h, 16) for h in table["phash"]], dtype=np.uint64)
        self.hashes: list[int] = hashes.tolist()
        self.by_id: dict[str, int] = dict(zip(self.ids, range(len(self.ids)), strict=True))
        # Raw bytes already curated -> their label (a human label on the same bytes may correct it).
        self.raw_labels: dict[str, str] = (
            dict(zip(table["sha256"], table["label"], strict=True)) if "sha256" in table else {}
        )
        self._sorted_bands = []
        for shift, mask in self.layout:
            values = (hashes >> np.uint64(shift)) & np.uint64(mask)
            order = np.argsort(values, kind="stable")
            self._sorted_bands.append((values[order], order))
        self._added_bands: list[dict[int, list[int]]] = [{} for _ in self.layout]

    @classmethod
    def from_table(cls, table: pd.DataFrame | None, distance: int) -> DuplicateIndex:
        """The index of a snapshot manifest (None: an empty store)."""
        return cls(distance, table)

    def __len__(self) -> int:
        return len(self.ids)

    def entry(self, position: int) -> Entry:
        return Entry(
            self.ids[position],
            self.hashes[position],
            self.groups[position],
            self.splits[position],
            self.labels[position],
        )

    def _add(self, entry: Entry) -> None:
        position = len(self.ids)
        self.ids.append(entry.image_id)
        self.hashes.append(entry.phash)
        self.groups.append(entry.group_id)
        self.splits.append(entry.split)
        self.labels.append(entry.label)
        self.by_id.setdefault(entry.image_id, position)
        for added, (shift, mask) in zip(self._added_bands, self.layout, strict=True):
            added.setdefault((entry.phash >> shift) & mask, []).append(position)

    def near(self, phash: int) -> list[tuple[int, Entry]]:
        """(distance, entry) of every indexed image within ``distance`` bits, nearest first."""
        candidates: set[int] = set()
        for (values, order), added, (shift, mask) in zip(
            self._sorted_bands, self._added_bands, self.layout, strict=True
        ):
            band = (phash >> shift) & mask
            key = np.uint64(band)
            lo, hi = np.searchsorted(values, key, "left"), np.searchsorted(values, key, "right")
            candidates.update(order[lo:hi].tolist())
            candidates.update(added.get(band, ()))
        found = sorted(((phash ^ self.hashes[i]).bit_count(), i) for i in candidates)
        return [(d, self.entry(i)) for d, i in found if d <= self.distance]

    def decide(
        self, image_id: str, phash: str, label: str, source_split: str | None, ratios: Mapping[str, float]
    ) -> Decision:
        """Classify a new image against everything indexed so far, and index it if it is kept."""
        if image_id in self.by_id:
            existing = self.entry(self.by_id[image_id])
            return Decision("exact", existing.group_id, existing.split, existing.image_id)
        value = int(phash, 16)
        matches = self.near(value)
        if not matches:
            split = source_split or split_for_group(image_id, ratios)
            decision = Decision("new", image_id, split)
        else:
            nearest = matches[0][1]
            if len({entry.split for _, entry in matches}) > 1:
                decision = Decision("split_conflict", nearest.group_id, nearest.split, nearest.image_id)
            elif any(entry.label == label for _, entry in matches):
                same = next(entry for _, entry in matches if entry.label == label)
                decision = Decision("near_dropped", same.group_id, same.split, same.image_id)
            else:
                decision = Decision(
                    "near_kept",
                    nearest.group_id,
                    nearest.split,
                    nearest.image_id,
                    split_overridden=bool(source_split and source_split != nearest.split),
                )
        if decision.keep:
            self._add(Entry(image_id, value, decision.group_id, decision.split, label))
        return decision
