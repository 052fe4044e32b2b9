"""Dataset snapshots: immutable, versioned views of the curated store.

A snapshot is one Parquet manifest at ``snapshots/<version>/manifest.parquet`` listing every curated
image it contains (cumulative: a snapshot holds its parent's rows plus the new ones). Curated images
are content addressed (``curated/<image_id>.png``) and written *before* the manifest; the manifest is
written last, in one atomic put, so a reader that only follows manifests never sees a partial
snapshot. Versions are ``v0001``, ``v0002``, ... in publication order.

The ImageFolder export view (``{train,val,test}/{0_real,1_fake}/<image_id>.png``) is the ``path``
column of the manifest; :func:`export_imagefolder` materialises it into a folder on demand.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from tasks.storage import ObjectStore

SNAPSHOT_PREFIX = "snapshots"
MANIFEST_NAME = "manifest.parquet"
VERSION_RE = re.compile(r"^v(\d{4,})$")
LABEL_DIRS = {"real": "0_real", "fake": "1_fake"}
SPLITS = ("train", "val", "test")

# One row per curated image (curation may add more columns; these are the ones readers rely on).
SNAPSHOT_COLUMNS: dict[str, str] = {
    "image_id": "sha256 of the decoded RGB pixels (also the curated object's name)",
    "key": "object key of the normalised PNG",
    "path": "path in the ImageFolder export view: <split>/<0_real|1_fake>/<image_id>.png",
    "split": "train, val or test",
    "label": "real, fake or unknown",
    "label_source": "which rule gave the label",
    "source": "source name",
    "batch_id": "raw batch the image came from",
    "group_id": "near-duplicate group (the image_id of its first member); the split follows the group",
    "phash": "64-bit perceptual hash, 16 hex digits",
    "width": "width after EXIF orientation",
    "height": "height after EXIF orientation",
    "original_format": "format of the raw file",
    "original_size_bytes": "size of the raw file",
    "generator": "generator name when known, else None",
}


# Further columns written by curation (tasks/curate): provenance carried over from the raw batch and
# what normalisation did. Readers may use them; snapshots built elsewhere (tests) may lack them.
CURATION_COLUMNS: dict[str, str] = {
    "sha256": "sha256 of the raw bytes",
    "raw_key": "object key of the raw bytes",
    "source_kind": "x, mastodon, folder, ...",
    "post_id": "id of the post (or the relative path for folder sources)",
    "post_url": "public URL of the post, if any",
    "media_url": "URL the bytes were downloaded from, if any",
    "author_hash": "sha256 of the author's handle/id",
    "created_at": "when the post was created, if known",
    "collected_at": "when Vigil collected it",
    "alt_text": "the post's alt text, if any",
    "license": "license or attribution given by the source, if any",
    "dataset": "ImageFolder data set name (folder sources)",
    "original_name": "file name at the source, if any",
    "original_width": "width of the stored pixels before EXIF orientation",
    "original_height": "height of the stored pixels before EXIF orientation",
    "original_mode": "Pillow mode of the original (RGB, RGBA, P, CMYK, I;16, L, ...)",
    "conversions": "what normalisation did, comma separated (alpha_on_white, exif_orientation_6, ...)",
    "near_duplicate_of": "image_id of the curated image this one nearly duplicates (kept: a different label)",
    "curated_at": "when curation processed the image's batch",
}


class SnapshotConflict(RuntimeError):
    """Another run published a snapshot since this one started; re-run on top of it."""


@dataclass(frozen=True)
class Snapshot:
    version: str
    parent: str | None
    created_at: str
    table: pd.DataFrame = field(repr=False)
    batches: tuple[str, ...] = ()
    counts: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return manifest_key(self.version)

    def labeled(self, split: str | None = None) -> pd.DataFrame:
        """Rows with a real/fake label, optionally of one split."""
        table = self.table[self.table["label"].isin(LABEL_DIRS)]
        return table if split is None else table[table["split"] == split]


def manifest_key(version: str) -> str:
    return f"{SNAPSHOT_PREFIX}/{version}/{MANIFEST_NAME}"


def list_versions(store: ObjectStore) -> list[str]:
    """Published versions, oldest first (only versions whose manifest exists)."""
    versions = []
    for key in store.list(SNAPSHOT_PREFIX):
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == MANIFEST_NAME and VERSION_RE.match(parts[1]):
            versions.append(parts[1])
    return sorted(versions, key=lambda v: int(v[1:]))


def latest_version(store: ObjectStore) -> str | None:
    versions = list_versions(store)
    return versions[-1] if versions else None


def resolve_version(store: ObjectStore, version: str = "latest") -> str:
    """``latest`` or an explicit version; a clear error when there is none."""
    versions = list_versions(store)
    if version == "latest":
        if not versions:
            raise LookupError(
                f"no dataset snapshot published yet in {store.url}; run collection and curation first"
            )
        return versions[-1]
    if version not in versions:
        raise LookupError(f"snapshot {version!r} not found in {store.url}; known: {versions or 'none'}")
    return version


def read_snapshot(store: ObjectStore, version: str = "latest") -> Snapshot:
    version = resolve_version(store, version)
    key = manifest_key(version)
    meta = store.read_table_metadata(key)
    return Snapshot(
        version=version,
        parent=meta.get("parent") or None,
        created_at=meta.get("created_at", ""),
        table=store.read_table(key),
        batches=tuple(json.loads(meta.get("batches", "[]"))),
        counts=json.loads(meta.get("counts", "{}")),
    )


def count_rows(table: pd.DataFrame) -> dict[str, Any]:
    """Counts per split/label/source, as stored in the manifest and shown by ``vigil snapshot show``."""

    def counts(values: pd.Series) -> dict[str, int]:
        return {str(k): int(v) for k, v in values.value_counts(dropna=False, sort=False).items()}

    return {
        "images": len(table),
        "by_split_label": counts(table["split"].astype(str) + "/" + table["label"].astype(str)),
        "by_source": counts(table["source"]),
        "by_label": counts(table["label"]),
    }


def export_path(split: str, label: str, image_id: str) -> str:
    return f"{split}/{LABEL_DIRS.get(label, 'unlabeled')}/{image_id}.png"


def publish_snapshot(
    store: ObjectStore,
    table: pd.DataFrame,
    parent: str | None,
    batches: list[str],
    extra: dict[str, str] | None = None,
) -> Snapshot:
    """Write the manifest of a new version on top of ``parent``; every curated object must already exist.

    Raises :class:`SnapshotConflict` if ``parent`` is no longer the latest version, also when another
    run publishes the same version concurrently (the manifest is created exclusively): a published
    snapshot is never overwritten.
    """
    missing = sorted(set(SNAPSHOT_COLUMNS) - set(table.columns))
    if missing:
        raise ValueError(f"snapshot table lacks columns {missing}")
    current = latest_version(store)
    if current != parent:
        raise SnapshotConflict(f"expected latest snapshot {parent!r}, found {current!r}")
    version = f"v{(int(current[1:]) if current else 0) + 1:04d}"
    created_at = datetime.now(UTC).isoformat()
    counts = count_rows(table)
    metadata = {
        "version": version,
        "parent": parent or "",
        "created_at": created_at,
        "batches": json.dumps(sorted(batches)),
        "counts": json.dumps(counts),
        **(extra or {}),
    }
    try:
        store.write_table(manifest_key(version), table, metadata=metadata, exclusive=True)
    except FileExistsError:
        message = f"snapshot {version} was published by another run meanwhile; re-run on top of it"
        raise SnapshotConflict(message) from None
    return Snapshot(version, parent, created_at, table, tuple(sorted(batches)), counts)


def export_imagefolder(store: ObjectStore, snapshot: Snapshot, dest: Path) -> Path:
    """Materialise the snapshot's ImageFolder view under ``dest`` (hard links on a local store)."""
    import os
    import shutil

    dest = Path(dest)
    for row in snapshot.table.itertuples():
        target = dest / row.path
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        local = store.local_path(row.key)
        if local is not None:
            try:
                os.link(local, target)
                continue
            except OSError:
                shutil.copyfile(local, target)
                continue
        target.write_bytes(store.read_bytes(row.key))
    return dest
