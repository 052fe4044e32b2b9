"""Helpers for curation tests: photo-like test images and raw batches written the collectors' way."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import numpy as np
from PIL import Image

from tasks.data.batches import raw_key, write_batch
from tasks.demo.data import load_photo
from tasks.images import sniff_format
from tasks.storage import sha256_hex

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "china")


def photo(index: int, size: int = 96) -> Image.Image:
    """A distinct photo-like RGB image: a crop of a bundled photograph (distinct pHash per index)."""
    source = _photo(PHOTOS[index % len(PHOTOS)])
    step = index // len(PHOTOS)
    h, w = source.shape[:2]
    scale = 3 + (step % 4)
    y = (step * 37) % (h - size * scale // 2)
    x = (step * 53) % (w - size * scale // 2)
    crop = Image.fromarray(source[y : y + size * scale // 2, x : x + size * scale // 2])
    return crop.resize((size, size), Image.LANCZOS)


_PHOTOS: dict[str, np.ndarray] = {}


def _photo(name: str) -> np.ndarray:
    if name not in _PHOTOS:
        _PHOTOS[name] = load_photo(name)
    return _PHOTOS[name]


def encode(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


_CLOCK = [datetime(2025, 1, 1, tzinfo=UTC)]


def add_batch(store, files, source: str = "inbox"):
    """Store raw files like a collector and publish their batch manifest.

    ``files``: dicts with ``data`` (bytes) and optional ``name``, ``label``, ``split``, ``ext`` and any
    other raw column; ``key`` overrides the raw key (for manifests naming missing objects).
    """
    _CLOCK[0] += timedelta(minutes=1)  # batch ids sort in creation order
    when = _CLOCK[0]
    rows = []
    for i, item in enumerate(files):
        item = dict(item)
        data = item.pop("data")
        name = item.pop("name", f"file{i}.{item.get('ext', 'png')}")
        ext = item.pop("ext", name.rsplit(".", 1)[-1])
        sha = item.pop("sha256", sha256_hex(data))
        key = item.pop("key", None) or raw_key(source, sha256_hex(data), ext, when)
        missing = item.pop("missing", False)
        if not missing and not store.exists(key):
            store.write_bytes(key, data)
        rows.append(
            {
                "sha256": sha,
                "raw_key": key,
                "format": sniff_format(data),
                "size_bytes": len(data),
                "source": source,
                "source_kind": "folder",
                "label": "unknown",
                "label_source": "folder",
                "collected_at": when.isoformat(),
                "original_name": name,
                **item,
            }
        )
    return write_batch(store, source, rows, when=when)


def good_images(n: int, start: int = 0, size: int = 96, **extra) -> list[dict]:
    """``n`` distinct labeled photo-like PNG files, alternating real/fake."""
    return [
        {
            "data": encode(photo(start + i, size)),
            "name": f"img{start + i}.png",
            "label": ("real", "fake")[i % 2],
            **extra,
        }
        for i in range(n)
    ]
