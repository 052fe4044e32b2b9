"""Per-image work of curation: read the raw bytes, validate, normalise, hash — in parallel.

Each image is decoded exactly once, in a worker process: the worker reads the raw object itself,
runs :func:`tasks.images.decode_image`, hashes the pixels, and spools the normalised PNG to a local
folder. Nothing is written to the store here: the caller decides (failure ratio, duplicates) what
gets uploaded, so a rejected batch leaves no curated objects behind.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.images import ImageRejected, decode_image, encode_png, perceptual_hash, pixel_hash
from tasks.storage import ObjectStore, sha256_hex

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from tasks.settings import ImageSettings

# Rejections found by curation itself, on top of tasks.images.REJECTION_CODES.
CURATION_CODES: dict[str, str] = {
    "missing_raw": "the batch manifest names a raw object that does not exist",
    "checksum_mismatch": "the raw bytes do not match the sha256 in the batch manifest",
}
# Rejections whose quarantined bytes are a raster image worth a thumbnail on the batch page (the others
# have no bytes, are not images, or are too large to decode safely).
PREVIEWABLE_CODES = frozenset(
    {
        "format_not_allowed",
        "too_small",
        "animated",
        "truncated",
        "corrupt",
        "near_constant",
        "checksum_mismatch",
    }
)
# Below this many images per worker, a pool costs more than it saves.
MIN_IMAGES_PER_WORKER = 8


@dataclass(frozen=True)
class ImageResult:
    """The outcome for one raw image: accepted (``code`` is None) or rejected with a reason."""

    sha256: str
    raw_key: str | None
    code: str | None = None
    message: str = ""
    image_id: str | None = None
    phash: str | None = None
    width: int | None = None
    height: int | None = None
    original_format: str | None = None
    original_mode: str | None = None
    original_width: int | None = None
    original_height: int | None = None
    conversions: str = ""
    spooled: str | None = None  # local path of the normalised PNG

    @property
    def accepted(self) -> bool:
        return self.code is None


@dataclass(frozen=True)
class ImageWorker:
    """Turns (sha256, raw key) into an :class:`ImageResult`; picklable, one per process."""

    store_url: str
    endpoint_url: str | None
    policy: ImageSettings
    spool: str

    def __call__(self, item: tuple[str, str | None, int]) -> ImageResult:
        sha256, raw_key, size = item
        limit = self.policy.max_file_bytes
        if size > limit:  # known from the manifest: the bytes are not read
            message = f"{size:,} bytes is more than images.max_file_bytes={limit:,}"
            if raw_key is None:
                message += "; collection did not copy the file: it is still where it was dropped"
            return ImageResult(sha256, raw_key, "too_large_file", message)
        if raw_key is None:
            return ImageResult(
                sha256,
                raw_key,
                "missing_raw",
                f"the file ({size:,} bytes) was over images.max_file_bytes when it was collected, so its "
                "bytes were not copied; touch it at its source to collect it again",
            )
        try:
            data = _store(self).read_bytes(raw_key)
        except FileNotFoundError:
            return ImageResult(sha256, raw_key, "missing_raw", f"raw object {raw_key!r} does not exist")
        if sha256_hex(data) != sha256:
            return ImageResult(
                sha256,
                raw_key,
                "checksum_mismatch",
                f"the bytes of {raw_key!r} hash to {sha256_hex(data)}, the manifest says {sha256}",
            )
        try:
            decoded = decode_image(data, self.policy)
        except ImageRejected as exc:
            return ImageResult(sha256, raw_key, exc.code, exc.message)
        image = decoded.image
        image_id = pixel_hash(image)
        spooled = Path(self.spool) / f"{image_id}.png"
        if not spooled.exists():
            tmp = spooled.with_name(f".tmp-{os.getpid()}-{spooled.name}")
            tmp.write_bytes(encode_png(image))
            os.replace(tmp, spooled)
        return ImageResult(
            sha256,
            raw_key,
            image_id=image_id,
            phash=perceptual_hash(image),
            width=image.width,
            height=image.height,
            original_format=decoded.format,
            original_mode=decoded.mode,
            original_width=decoded.width,
            original_height=decoded.height,
            conversions=",".join(decoded.conversions),
            spooled=str(spooled),
        )


_STORES: dict[tuple[str, str | None], ObjectStore] = {}


def _store(worker: ImageWorker) -> ObjectStore:
    """One store client per process (fsspec clients must not cross a fork)."""
    key = (worker.store_url, worker.endpoint_url)
    if key not in _STORES:
        _STORES[key] = ObjectStore(worker.store_url, endpoint_url=worker.endpoint_url)
    return _STORES[key]


_WORKER: ImageWorker | None = None


def _init_process(worker: ImageWorker) -> None:
    global _WORKER
    _WORKER = worker
    _STORES.clear()
    _die_with_parent()


def _run(item: tuple[str, str | None, int]) -> ImageResult:
    assert _WORKER is not None
    return _WORKER(item)


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when its parent dies, so a killed run leaves no orphans."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class ImagePool:
    """Runs :class:`ImageWorker` over many images, in ``workers`` processes when it pays off."""

    def __init__(self, worker: ImageWorker, workers: int) -> None:
        self.worker = worker
        self.workers = workers or os.cpu_count() or 1
        self._executor: ProcessPoolExecutor | None = None

    def map(self, items: Sequence[tuple[str, str | None, int]]) -> Iterator[ImageResult]:
        """Results in the order of ``items``."""
        # A daemonic process (some executors' workers) may not have children: decode in-process there.
        daemonic = multiprocessing.current_process().daemon
        if self.workers <= 1 or len(items) < MIN_IMAGES_PER_WORKER * 2 or daemonic:
            return map(self.worker, items)
        if self._executor is None:
            # fork: workers start in milliseconds and inherit the imported modules (imported here
            # once, not in every worker); they only decode and hash, never touching the parent's
            # threads or clients.
            import imagehash  # noqa: F401
            import isal.isal_zlib  # noqa: F401

            self._executor = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("fork"),
                initializer=_init_process,
                initargs=(self.worker,),
            )
        chunksize = max(1, min(16, len(items) // (self.workers * 4)))
        return self._executor.map(_run, items, chunksize=chunksize)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None

    def __enter__(self) -> ImagePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
