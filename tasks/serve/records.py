"""What serving remembers: the prediction log (object store), recent uploads (local) and feedback (inbox).

* **Prediction log**: one row per prediction, buffered in memory and written as a Parquet part
  ``predictions/date=YYYY-MM-DD/<time>-<id>.parquet`` once ``log_flush_rows`` rows are waiting, once the
  oldest is ``log_flush_s`` old, and at shutdown: never an object-store write per request. The bytes
  of review candidates go to ``review/candidates/`` (the monitor deletes those it does not queue); all
  bytes to ``predictions/images/`` only with ``log_image_bytes``.
* **Upload cache**: the bytes of recent images under ``<home>/serving/uploads/<prediction_id>.<ext>``,
  capped in count and size (oldest first out), so ``POST /v1/feedback`` can refer to an image it was
  asked about. It survives restarts, and several servers may share it (the deploy step's sandbox runs
  beside the live server): the cap holds for the folder, under a file lock.
* **Claims**: feedback is a claim, not a label. Each one is recorded in the object store as
  ``claims/<prediction_id>/<label>.json`` (who, when, against which prediction) with the image bytes
  beside it while it awaits review; the same claim again writes nothing.
* **Trusted labels**: :func:`accept_claim` turns a claim into a label: the image goes to the inbox as
  ``feedback/{0_real,1_fake}/<prediction_id>.<ext>``, where the folder collector imports it with
  ``label_source`` ``feedback`` (curation applies it), and a record
  ``feedback/date=YYYY-MM-DD/<prediction_id>.json`` goes to the object store. Only a trusted path
  calls it: feedback with a ``relabel`` token, or a person accepting the claim in the review queue.
"""

from __future__ import annotations

import contextlib
import fcntl
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
from tasks.monitor.predictions import COLUMNS as LOG_COLUMNS  # the log's contract is its reader's
from tasks.monitor.predictions import PREFIX as PREDICTIONS_PREFIX
from tasks.review.candidates import keep_candidate
from tasks.storage import ObjectStore

log = logging.getLogger(__name__)

LABEL_DIRS = {"authentic": "0_real", "synthetic": "1_fake"}
CLAIMS_PREFIX = "claims"
LOCK_FILE = ".lock"


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

    def add(self, row: dict[str, Any], data: bytes | None = None, *, keep: bool = False) -> None:
        """Buffer one row; its image bytes are stored with it when ``keep_images`` is on or ``keep`` says
        so (a review candidate: the review queue needs the image)."""
        with self._lock:
            self._rows.append(row)
            self._images.append(data if (self.keep_images or keep) else None)
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
                        if self.keep_images:  # the log's own copy, kept as long as the log
                            row["image_key"] = self.store.put_content(
                                data, f"{PREDICTIONS_PREFIX}/images", ext
                            )
                        else:  # a review candidate: kept only while it is (or may be) queued
                            row["image_key"] = keep_candidate(self.store, data, ext)
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
    """The bytes of recent images by prediction id, in a local folder capped in count and bytes.

    Every change happens under a thread lock and an exclusive ``flock`` of the folder, and the index is
    re-read from the folder whenever its files are not the ones this process last saw (another server
    sharing the folder wrote or evicted some), so the folder never holds more than the caps.
    """

    def __init__(self, folder: Path, *, max_items: int, max_bytes: int) -> None:
        self.folder = folder
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[Path, int]] = OrderedDict()  # oldest first
        self._bytes = 0
        self._lock = threading.Lock()
        folder.mkdir(parents=True, exist_ok=True)
        with self._locked():
            self._rescan()
            self._evict(0)

    def __len__(self) -> int:
        return len(self._entries)

    @contextlib.contextmanager
    def _locked(self):
        with self._lock, open(self.folder / LOCK_FILE, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _files(self) -> set[str]:
        return {name for name in os.listdir(self.folder) if not name.startswith(".")}

    def _rescan(self) -> None:
        entries = []
        for entry in os.scandir(self.folder):
            if entry.name.startswith(".") or not entry.is_file():
                continue
            with contextlib.suppress(FileNotFoundError):
                stat = entry.stat()
                entries.append((stat.st_mtime_ns, entry.name, Path(entry.path), stat.st_size))
        self._entries = OrderedDict(
            (name.rsplit(".", 1)[0], (path, size)) for _, name, path, size in sorted(entries)
        )
        self._bytes = sum(size for _, size in self._entries.values())

    def _sync(self) -> None:
        if self._files() != {path.name for path, _ in self._entries.values()}:
            self._rescan()

    def put(self, prediction_id: str, data: bytes) -> None:
        if self.max_items == 0 or len(data) > self.max_bytes:
            return
        ext = EXTENSIONS.get(sniff_format(data) or "", "bin")
        path = self.folder / f"{prediction_id}.{ext}"
        tmp = self.folder / f".{prediction_id}.tmp"
        with self._locked():
            self._sync()
            self._evict(len(data))  # room first: the folder never holds more than the caps
            tmp.write_bytes(data)
            os.replace(tmp, path)
            self._entries[prediction_id] = (path, len(data))
            self._bytes += len(data)

    def get(self, prediction_id: str) -> tuple[bytes, str] | None:
        """(bytes, file extension) of a cached image, or None when unknown or evicted."""
        with self._locked():
            if prediction_id not in self._entries:
                self._sync()  # perhaps written by another server sharing the folder
            entry = self._entries.get(prediction_id)
            if entry is None:
                return None
            try:
                return entry[0].read_bytes(), entry[0].suffix.lstrip(".")
            except FileNotFoundError:
                return None

    def _evict(self, incoming: int) -> None:
        """Drop the oldest until ``incoming`` more bytes (and one more file, if any) fit the caps."""
        more = 1 if incoming else 0
        while self._entries and (
            len(self._entries) + more > self.max_items or self._bytes + incoming > self.max_bytes
        ):
            _, (path, size) = self._entries.popitem(last=False)
            self._bytes -= size
            path.unlink(missing_ok=True)


# -- claims and trusted labels -------------------------------------------------------------------


def claim_key(prediction_id: str, label: str) -> str:
    return f"{CLAIMS_PREFIX}/{prediction_id}/{label}.json"


def record_claim(
    store: ObjectStore, claim: dict[str, Any], data: bytes, ext: str
) -> tuple[dict[str, Any], bool]:
    """Record a claim with its image unless the same claim (prediction and label) exists: (claim, new)."""
    key = claim_key(claim["prediction_id"], claim["claimed_label"])
    if store.exists(key):
        return store.read_json(key), False
    image_key = f"{CLAIMS_PREFIX}/{claim['prediction_id']}/{claim['claimed_label']}.{ext}"
    store.write_bytes(image_key, data)
    claim = {**claim, "status": "pending", "image_key": image_key}
    store.write_json(key, claim)
    return claim, True


def accept_claim(
    inbox: ObjectStore, store: ObjectStore, prediction_id: str, label: str, decided_by: str
) -> tuple[str, bool]:
    """The one way a claim becomes a trusted label: (inbox key, whether anything new was written).

    Used by feedback with a ``relabel`` token and by the review queue when a person accepts a claim.
    The image goes to the inbox where the folder collector takes it as a ``feedback`` label (and a
    label for the other class of the same prediction is withdrawn); the claim is marked accepted and
    its copy of the image dropped. Accepting an accepted claim again writes nothing.
    """
    key = claim_key(prediction_id, label)
    claim = store.read_json(key)
    if claim.get("status") == "accepted":
        return claim["inbox_key"], False
    data = store.read_bytes(claim["image_key"])
    ext = claim["image_key"].rsplit(".", 1)[-1]
    decided_at = datetime.now(UTC).isoformat(timespec="milliseconds")
    inbox_key = write_label(inbox, prediction_id, label, data, ext)
    store.write_json(
        f"{FEEDBACK_DIR}/date={decided_at[:10]}/{prediction_id}.json",
        {
            **{k: v for k, v in claim.items() if k not in ("status", "image_key")},
            "label": label,
            "decided_by": decided_by,
            "decided_at": decided_at,
            "inbox_key": inbox_key,
        },
    )
    store.write_json(
        key,
        {
            **claim,
            "status": "accepted",
            "decided_by": decided_by,
            "decided_at": decided_at,
            "inbox_key": inbox_key,
        },
    )
    store.delete(claim["image_key"])
    return inbox_key, True


def write_label(inbox: ObjectStore, prediction_id: str, label: str, data: bytes, ext: str) -> str:
    """Put a trusted label where the inbox collector finds it; returns its key in the inbox.

    Writing the same bytes again would give the file a new modification time, which the collector
    takes for a new file (a new raw batch): an identical file is left alone.
    """
    key = f"{FEEDBACK_DIR}/{LABEL_DIRS[label]}/{prediction_id}.{ext}"
    for other in LABEL_DIRS.values():  # a corrected correction: only the latest label stays
        if other != LABEL_DIRS[label]:
            inbox.delete(f"{FEEDBACK_DIR}/{other}/{prediction_id}.{ext}")
    if not (inbox.exists(key) and inbox.read_bytes(key) == data):
        inbox.write_bytes(key, data)
    return key
