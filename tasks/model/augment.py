"""Social-media re-encoding as a training augmentation (``augment:`` in the model config).

Images on social media are resized and re-encoded on every upload, so a detector that only sees
pristine pixels fails exactly where Vigil collects. Training therefore adds copies of each training
image that went through what platforms do: down-scaling and back up, a mild crop, JPEG (or WebP) at a
random quality. Only training calls this; evaluation keeps its fixed JPEG-q75 and 0.5x conditions
(:mod:`tasks.evaluate`) and serving scores what it receives. Deterministic for a seed: view ``k`` of an
image is always the same image (its seed is derived from the image id), so features can be cached.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image

from tasks.images import upright_rgb
from tasks.model.config import AugmentSettings


def view_seed(image_id: str, view: int, seed: int) -> int:
    """The seed of one augmented view: stable across runs and processes (not Python's ``hash``)."""
    return int.from_bytes(hashlib.sha256(f"{seed}|{view}|{image_id}".encode()).digest()[:8], "big")


def reencode(image: Image.Image, settings: AugmentSettings, rng: np.random.Generator) -> Image.Image:
    """One random upload: resize down (and back up), crop, JPEG or WebP at a random quality."""
    width, height = image.size
    factor = rng.uniform(*settings.resize)
    if factor < 0.999:
        small = (max(8, round(width * factor)), max(8, round(height * factor)))
        image = image.resize(small, Image.BICUBIC).resize((width, height), Image.BICUBIC)
    keep = rng.uniform(settings.crop, 1.0)
    if keep < 0.999:
        cw, ch = max(8, round(width * keep)), max(8, round(height * keep))
        left, top = int(rng.integers(0, width - cw + 1)), int(rng.integers(0, height - ch + 1))
        image = image.crop((left, top, left + cw, top + ch)).resize((width, height), Image.BICUBIC)
    quality = int(rng.integers(settings.jpeg_quality[0], settings.jpeg_quality[1] + 1))
    fmt = "WEBP" if rng.random() < settings.webp_share else "JPEG"
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=quality)
    with Image.open(io.BytesIO(buffer.getvalue())) as decoded:
        decoded.load()
        return upright_rgb(decoded)[0]


def views(image: Image.Image, image_id: str, settings: AugmentSettings, seed: int) -> list[Image.Image]:
    """The ``settings.views`` augmented copies of one training image."""
    return [
        reencode(image, settings, np.random.default_rng(view_seed(image_id, view, seed)))
        for view in range(settings.views)
    ]
