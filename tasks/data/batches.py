"""Raw batches: the contract between collection and curation.

A collector stores each image's raw bytes content-addressed under
``raw/<source>/<YYYY-MM-DD>/<sha256>.<ext>`` and then, last, one Parquet manifest per run under
``batches/<source>/<batch_id>.parquet``. Curation only follows manifests, so a collector that dies
half way leaves orphan raw objects (re-used by the next run, since keys are content addressed)
but never a half batch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import pandas as pd

    from tasks.storage import ObjectStore

BATCH_PREFIX = "batches"
Label = Literal["real", "fake", "unknown"]
LABELS: tuple[str, ...] = ("real", "fake", "unknown")
# label_source of a label a person gave through serving's feedback: it corrects a stored label.
HUMAN_LABEL = "feedback"
# ... and of one a reviewer gave in the review queue (tasks/review): it corrects a stored label too.
REVIEW_LABEL = "review"
HUMAN_LABELS = frozenset({HUMAN_LABEL, REVIEW_LABEL})

# One row per collected image. Optional columns may be None.
RAW_COLUMNS: dict[str, str] = {
    "sha256": "sha256 of the raw bytes (also the raw object's name)",
    "raw_key": "object key of the raw bytes; None for a file over images.max_file_bytes (bytes not copied)",
    "format": "format sniffed from the magic bytes (JPEG, PNG, ...), never from the extension",
    "size_bytes": "size of the raw bytes (as listed, when they were not copied)",
    "source": "source name from include/sources.yaml",
    "source_kind": "x, mastodon, folder, feedback, ...",
    "post_id": "id of the post (or the relative path for folder sources)",
    "post_url": "public URL of the post, if any",
    "media_url": "URL the bytes were downloaded from, if any",
    "author_hash": "sha256 of the author's handle/id (never the handle itself)",
    "created_at": "when the post was created (ISO 8601, UTC), if known",
    "collected_at": "when Vigil collected it (ISO 8601, UTC)",
    "alt_text": "the post's alt text / description, if any",
    "license": "license or attribution given by the source, if any",
    "label": "real, fake or unknown",
    "label_source": "which rule gave the label: prior, folder, metadata, c2pa, iptc, png_parameters, feedback, review",
    "split": "train/val/test when the source fixes it (ImageFolder layout), else None",
    "dataset": "ImageFolder data set name (folder sources), else None",
    "generator": "generator name when known (e.g. from metadata.jsonl), else None",
    "original_name": "file name at the source, if any",
}


@dataclass(frozen=True)
class Batch:
    batch_id: str
    source: str
    key: str
    table: pd.DataFrame


def utc_now() -> datetime:
    return datetime.now(UTC)


def raw_key(source: str, sha256: str, ext: str, when: datetime) -> str:
    return f"raw/{source}/{when:%Y-%m-%d}/{sha256}.{ext.lower().lstrip('.')}"


def new_batch_id(source: str, shas: list[str], when: datetime) -> str:
    """``<source>-<UTC time>-<8 hex of the sorted contents>``: sortable and unique per content."""
    digest = hashlib.sha256("\n".join(sorted(shas)).encode()).hexdigest()[:8]
    return f"{source}-{when:%Y%m%dT%H%M%SZ}-{digest}"


def write_batch(store: ObjectStore, source: str, rows: list[dict], when: datetime | None = None) -> Batch:
    """Publish a batch manifest (after its raw objects are stored). Missing columns become None."""
    import pandas as pd

    unknown = {k for row in rows for k in row} - RAW_COLUMNS.keys()
    if unknown:
        raise ValueError(f"unknown raw batch columns: {sorted(unknown)}")
    bad = {row.get("label") for row in rows} - set(LABELS)
    if bad:
        raise ValueError(f"label must be one of {LABELS}, got {sorted(map(str, bad))}")
    when = when or utc_now()
    table = pd.DataFrame(
        [{col: row.get(col) for col in RAW_COLUMNS} for row in rows], columns=list(RAW_COLUMNS)
    )
    table = table.astype({"size_bytes": "int64"}) if len(table) else table
    batch_id = new_batch_id(source, table["sha256"].tolist(), when)
    key = f"{BATCH_PREFIX}/{source}/{batch_id}.parquet"
    store.write_table(
        key, table, metadata={"batch_id": batch_id, "source": source, "created_at": when.isoformat()}
    )
    return Batch(batch_id, source, key, table)


def list_batches(store: ObjectStore) -> list[str]:
    """Keys of every published batch manifest, oldest first within a source."""
    return [k for k in store.list(BATCH_PREFIX) if k.endswith(".parquet")]


def batch_id_of(key: str) -> str:
    return key.rsplit("/", 1)[-1].removesuffix(".parquet")


def read_batch(store: ObjectStore, key: str) -> Batch:
    source = key.split("/")[1]
    return Batch(batch_id_of(key), source, key, store.read_table(key))
