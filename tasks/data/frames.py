"""Labeled image frames: the rows training and evaluation work on, from a snapshot or a folder.

A :class:`Frame` is a table with one row per labeled image (``label`` real/fake, ``split``, ``source``,
``label_source``, ``generator``, ``original_format``) and a ``file`` column with a local path to its
bytes: objects of a local store are read in place, objects of an S3 store are downloaded once into a
cache folder (content-addressed keys never change). Folders use the ImageFolder layout
``{0_real,1_fake}`` or ``{train,val,test}/{0_real,1_fake}``, with an optional ``metadata.jsonl``
(``file_name``, ``generator``) as written by ``vigil demo-data``.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tasks.data.snapshots import LABEL_DIRS, SPLITS, VERSION_RE, read_snapshot
from tasks.images import load_image, sniff_format

if TYPE_CHECKING:
    import pandas as pd
    from PIL import Image

    from tasks.storage import ObjectStore

FRAME_COLUMNS = (
    "image_id",
    "file",
    "label",
    "split",
    "source",
    "label_source",
    "generator",
    "original_format",
)
FOLDER_LABELS = {v: k for k, v in LABEL_DIRS.items()}  # 0_real -> real, 1_fake -> fake


@dataclass(frozen=True)
class Frame:
    """Labeled images with their metadata; ``name`` says where they came from (for reports)."""

    table: pd.DataFrame
    name: str

    def __len__(self) -> int:
        return len(self.table)

    @property
    def labels(self) -> np.ndarray:
        """1 for fake, 0 for real."""
        return (self.table["label"].to_numpy() == "fake").astype(int)

    def images(self) -> list[Image.Image]:
        return [load_image(Path(f).read_bytes()) for f in self.table["file"]]

    def where(self, mask, name: str | None = None) -> Frame:
        return Frame(self.table[np.asarray(mask)].reset_index(drop=True), name or self.name)

    def counts(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.table["label"].value_counts().items()}


def snapshot_frame(
    store: ObjectStore, version: str, splits: tuple[str, ...] | None, cache_dir: Path
) -> Frame:
    """The labeled rows of a snapshot (optionally only some splits), with local files."""
    snapshot = read_snapshot(store, version)
    table = snapshot.labeled()
    if splits:
        table = table[table["split"].isin(splits)]
    table = table.reset_index(drop=True).copy()
    table["file"] = localize(store, table["key"].tolist(), cache_dir)
    for column in FRAME_COLUMNS:
        if column not in table:
            table[column] = None
    name = f"snapshot {snapshot.version}" + (f" {'+'.join(splits)}" if splits else "")
    return Frame(table[list(FRAME_COLUMNS)], name)


def localize(store: ObjectStore, keys: list[str], cache_dir: Path, workers: int = 8) -> list[str]:
    """Local paths for store objects: in place for a local store, else downloaded once into ``cache_dir``."""

    def fetch(key: str) -> str:
        local = store.local_path(key)
        if local is not None:
            return str(local)
        dest = Path(cache_dir) / key
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".tmp-{os.getpid()}-{dest.name}")
            tmp.write_bytes(store.read_bytes(key))
            tmp.replace(dest)
        return str(dest)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fetch, keys))


def folder_frame(root: str | Path, split: str | None = None) -> Frame:
    """A folder in the ImageFolder layout; ``split`` picks ``<root>/<split>`` when the folder has splits."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist")
    has_splits = any((root / s).is_dir() for s in SPLITS)
    if has_splits and split:
        if not (root / split).is_dir():
            raise FileNotFoundError(
                f"{root} has no {split!r} split; found {sorted(s for s in SPLITS if (root / s).is_dir())}"
            )
        bases = [(split, root / split)]
    elif has_splits:
        bases = [(s, root / s) for s in SPLITS if (root / s).is_dir()]
    else:
        bases = [(split, root)]
    metadata = _folder_metadata(root)
    rows = []
    for split_name, base in bases:
        for label_dir, label in FOLDER_LABELS.items():
            for path in sorted((base / label_dir).glob("*")) if (base / label_dir).is_dir() else []:
                if not path.is_file():
                    continue
                head = path.open("rb").read(64)
                fmt = sniff_format(head)
                if fmt is None:
                    continue
                meta = metadata.get(path.relative_to(root).as_posix(), {})
                rows.append(
                    {
                        "image_id": path.relative_to(root).as_posix(),
                        "file": str(path),
                        "label": label,
                        "split": split_name,
                        "source": root.name,
                        "label_source": "folder",
                        "generator": meta.get("generator"),
                        "original_format": fmt,
                    }
                )
    if not rows:
        raise ValueError(
            f"no images found under {root} in {{0_real,1_fake}} or {{train,val,test}}/{{0_real,1_fake}}"
        )
    import pandas as pd

    return Frame(
        pd.DataFrame(rows, columns=list(FRAME_COLUMNS)), f"folder {root}" + (f" {split}" if split else "")
    )


def _folder_metadata(root: Path) -> dict[str, dict]:
    path = root / "metadata.jsonl"
    if not path.exists():
        return {}
    records = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return {r["file_name"]: r for r in records if "file_name" in r}


def load_frame(data: str, split: str | None, store: ObjectStore | None, cache_dir: Path) -> Frame:
    """``data`` is a snapshot version (``latest``, ``v0003``) or a folder path."""

    if data == "latest" or VERSION_RE.match(data):
        if store is None:
            raise ValueError(f"snapshot {data!r} needs an object store")
        return snapshot_frame(store, data, (split,) if split else None, cache_dir)
    return folder_frame(data, split)
