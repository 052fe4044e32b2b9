"""What serving remembers: the prediction log (object store), recent uploads (local) and feedback (inbox).

* **Prediction log**: one row per prediction, buffered in memory and written as a Parquet part
  ``predictions/date=YYYY-MM-DD/<time>-<id>.parquet`` once ``log_flush_rows`` rows are waiting, once the
  oldest is ``log_flush_s`` old, and at shutdown: never an object-store write per request.
* **Upload cache**: the bytes of recent images under ``<home>/serving/uploads/<prediction_id>.<ext>``,
  capped in count and size (oldest first out), so ``POST /v1/feedback`` can label an image it was
  asked about. It survives restarts (the folder is re-read at start).
* **Feedback**: the labeled image goes to the inbox as ``feedback/{0_real,1_fake}/<prediction_id>.<ext>``,
  where the folder collector imports it with ``label_source`` ``feedback``; a JSON record
  ``feedback/date=YYYY-MM-DD/<prediction_id>.json`` goes to the object store.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.collect.folder import FEEDBACK_DIR
from tasks.images import EXTENSIONS, sniff_format
from tasks.storage import ObjectStore

log = logging.getLogger(__name__)

PREDICTIONS_PREFIX = "predictions"
LOG_COLUMNS = (
    "prediction_id",
    "time",
    "image_sha256",
    "p_fake",
    "label",
    "threshold",
    "model_name",
    "model_version",
    "latency_ms",
    "input_kind",
    "explained",
    "image_key",
)
LABEL_DIRS = {"authentic": "0_real", "synthetic": "1_fake"}


class PredictionLog:
    """Buffered, thread-safe prediction log; :meth:`flush` writes one Parquet part per date."""

    def __init__(self, store: ObjectStore, *, flush_rows: int, flush_s: float, keep_images: bool) -> None:
        self.store = store
        self.flush_rows = flush_rows
        self.flush_s = flush_s
        self.keep_images = keep_images
        self._rows: list[dict[str, Any]] = []
        self._images: list[bytes | None] = []  # kept only with keep_images
        self._oldest: float | None = None
        self._lock = threading.Lock()
        self._flushing = threading.Lock()

    def add(self, row: dict[str, Any], data: bytes | None = None) -> None:
        with self._lock:
            self._rows.append(row)
            self._images.append(data if self.keep_images else None)
            self._oldest = self._oldest or time.monotonic()

    def due(self) -> bool:
        with self._lock:
            return bool(self._rows) and (
                len(self._rows) >= self.flush_rows or time.monotonic() - (self._oldest or 0) >= self.flush_s
            )

    def __len__(self) -> int:
        return len(self._rows)

    def flush(self) -> list[str]:
        """Write the buffered rows (one part per date); returns the keys written. Rows are kept on failure."""
        import pandas as pd

        with self._flushing:
            with self._lock:
                rows, images = self._rows, self._images
                self._rows, self._images, self._oldest = [], [], None
            if not rows:
                return []
            try:
                for row, data in zip(rows, images, strict=True):
                    if data is not None and row.get("image_key") is None:
                        ext = EXTENSIONS.get(sniff_format(data) or "", "bin")
                        row["image_key"] = self.store.put_content(data, f"{PREDICTIONS_PREFIX}/images", ext)
                frame = pd.DataFrame(rows, columns=list(LOG_COLUMNS))
                keys = []
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
                for date, part in frame.groupby(frame["time"].str[:10], sort=True):
                    key = f"{PREDICTIONS_PREFIX}/date={date}/{stamp}-{uuid.uuid4().hex[:8]}.parquet"
                    keys.append(self.store.write_table(key, part.reset_index(drop=True)))
            except Exception:
                with self._lock:  # put them back in front: nothing is lost, the next flush retries
                    self._rows[:0], self._images[:0] = rows, images
                    self._oldest = self._oldest or time.monotonic()
                raise
            log.info("prediction log: %d rows written to %s", len(rows), ", ".join(keys))
            return keys


class UploadCache:
    """The bytes of recent images by prediction id, in a local folder capped in count and bytes."""

    def __init__(self, folder: Path, *, max_items: int, max_bytes: int) -> None:
        self.folder = folder
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[Path, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        folder.mkdir(parents=True, exist_ok=True)
        for path in sorted(folder.iterdir(), key=lambda p: p.stat().st_mtime):  # oldest first
            if path.is_file() and not path.name.startswith("."):
                self._entries[path.stem] = (path, path.stat().st_size)
                self._bytes += path.stat().st_size
        with self._lock:
            self._evict()

    def put(self, prediction_id: str, data: bytes) -> None:
        if self.max_items == 0 or len(data) > self.max_bytes:
            return
        ext = EXTENSIONS.get(sniff_format(data) or "", "bin")
        path = self.folder / f"{prediction_id}.{ext}"
        tmp = self.folder / f".{prediction_id}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, path)
        with self._lock:
            self._entries[prediction_id] = (path, len(data))
            self._bytes += len(data)
            self._evict()

    def get(self, prediction_id: str) -> tuple[bytes, str] | None:
        """(bytes, file extension) of a cached image, or None when unknown or evicted."""
        with self._lock:
            entry = self._entries.get(prediction_id)
        if entry is None:
            return None
        try:
            return entry[0].read_bytes(), entry[0].suffix.lstrip(".")
        except FileNotFoundError:
            return None

    def _evict(self) -> None:
        while self._entries and (len(self._entries) > self.max_items or self._bytes > self.max_bytes):
            _, (path, size) = self._entries.popitem(last=False)
            self._bytes -= size
            path.unlink(missing_ok=True)


def write_feedback(
    inbox: ObjectStore,
    store: ObjectStore,
    prediction_id: str,
    label: str,
    data: bytes,
    ext: str,
    record: dict[str, Any],
) -> str:
    """Put the labeled image where the inbox collector finds it; returns its key in the inbox."""
    key = f"{FEEDBACK_DIR}/{LABEL_DIRS[label]}/{prediction_id}.{ext}"
    for other in LABEL_DIRS.values():  # a corrected correction: only the latest label stays
        if other != LABEL_DIRS[label]:
            inbox.delete(f"{FEEDBACK_DIR}/{other}/{prediction_id}.{ext}")
    inbox.write_bytes(key, data)
    date = record["time"][:10]
    store.write_json(
        f"{FEEDBACK_DIR}/date={date}/{prediction_id}.json", {**record, "inbox_key": inbox.uri(key)}
    )
    return key
