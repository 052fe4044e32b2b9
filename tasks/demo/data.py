"""A labeled, clearly synthetic demo data set, generated offline into the inbox.

No data set can be downloaded where Vigil's demo and CI run, so the demo makes its own:

* **real** images are random crops of the photographs that ship inside scikit-image and
  scikit-learn, downscaled by a random factor (with anti-aliasing) so that crops show whole scenes;
* **fake** images are the same kind of crops passed through a "generator": downsampled by two and
  re-upsampled the way image generators' decoders do, which leaves their up-sampling traces.

  - generator ``A``: a randomly initialised stride-2 transposed convolution (the checkerboard
    traces of GAN and VAE decoders);
  - generator ``B``: nearest-neighbour up-sampling followed by a random Gaussian smoothing,
    sensor-like noise and a faint periodic grain (a cousin of A: both are 2x up-samplers, so a
    detector trained on A sees B partly);
  - generator ``C``: colour blotches at full resolution — low-frequency chroma noise, luma untouched
    (what a latent decoder's colour channels leave; a new kind: a detector trained on A and B misses
    it). The demo sends C only to the detection API, as
    traffic (round 3), never to the inbox.

The output uses the ImageFolder layout ``<name>/{train,val,test}/{0_real,1_fake}/*.png`` with a
``metadata.jsonl`` (``file_name``, ``generator``, ``photo``), which the ``folder`` source imports
as-is. Splits are by photograph (held-out photos for val and test), so the test split measures
generalisation to new scenes. This data only demonstrates the pipeline; it says nothing about
real-world detection quality.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

GENERATORS = ("A", "B", "C")
# Photographs (not drawings or microscopy renderings) available without any download.
TRAIN_PHOTOS = (
    "astronaut",
    "chelsea",
    "camera",
    "hubble_deep_field",
    "immunohistochemistry",
    "coins",
    "moon",
    "brick",
    "grass",
    "gravel",
    "retina",
    "cell",
    "china",
)
# Each held-out pool has one photo first saved as PNG and one as JPEG: with both JPEG-born photos in
# test, the validation threshold did not transfer (a detector of colour traces flagged 66% of the test
# photographs at a 5% validation FPR; bench/continual.py).
VAL_PHOTOS = ("coffee", "rocket")
TEST_PHOTOS = ("clock", "flower")
SPLIT_PHOTOS = {"train": TRAIN_PHOTOS, "val": VAL_PHOTOS, "test": TEST_PHOTOS}


@dataclass(frozen=True)
class DemoSpec:
    """What to generate: ``per_split`` images per class for each split."""

    generator: str = "A"
    size: int = 56
    per_split: tuple[tuple[str, int], ...] = (("train", 160), ("val", 40), ("test", 60))
    seed: int = 0


def load_photo(name: str) -> np.ndarray:
    """An RGB uint8 photograph bundled with scikit-image or scikit-learn."""
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_images

        images = dict(zip(("china", "flower"), load_sample_images().images, strict=True))
        arr = images[name]
    else:
        import skimage.data

        arr = getattr(skimage.data, name)()
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    return arr[..., :3].astype(np.uint8)


def random_crop(photo: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``size``-pixel square crop of the photo after a random anti-aliased downscale."""
    h, w = photo.shape[:2]
    scale = rng.uniform(size / min(h, w), min(1.0, 4 * size / min(h, w)))
    scale = max(scale, size / min(h, w))
    image = Image.fromarray(photo)
    if scale < 1.0:
        image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.LANCZOS)
    arr = np.asarray(image)
    y = rng.integers(0, arr.shape[0] - size + 1)
    x = rng.integers(0, arr.shape[1] - size + 1)
    crop = arr[y : y + size, x : x + size]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop)


def _downsample(crop: np.ndarray) -> np.ndarray:
    """Halve the resolution with a box filter (what a generator's latent grid would hold)."""
    h, w = crop.shape[:2]
    return np.asarray(Image.fromarray(crop).resize((w // 2, h // 2), Image.BOX)).astype(np.float32)


def generator_a(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Stride-2 transposed convolution with a random 4x4 kernel mixing the three channels."""
    low = _downsample(crop) / 255.0
    h, w, _ = low.shape
    bilinear = np.outer([0.25, 0.75, 0.75, 0.25], [0.25, 0.75, 0.75, 0.25])
    noise = rng.uniform(0.05, 0.25)
    kernel = bilinear[None, None] * np.eye(3)[:, :, None, None] + rng.normal(0, noise, (3, 3, 4, 4)) * 0.15
    out = np.zeros((2 * h + 2, 2 * w + 2, 3), np.float32)
    for ky in range(4):
        for kx in range(4):
            # Each input pixel scatters its kernel into a 4x4 output window (transposed convolution).
            contribution = low @ kernel[:, :, ky, kx].T
            out[ky : ky + 2 * h : 2, kx : kx + 2 * w : 2] += contribution
    out = out[1 : 2 * h + 1, 1 : 2 * w + 1]
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


def generator_b(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Nearest-neighbour up-sampling, random Gaussian smoothing, mild noise and a faint periodic grain.

    The grain (a fixed 4x4 pattern of a few grey levels, like the checkerboard of a decoder) is the
    trace a small model can learn; without it B is only the absence of detail (see docs/model.md).
    """
    from scipy.ndimage import gaussian_filter

    low = _downsample(crop)
    up = low.repeat(2, axis=0).repeat(2, axis=1)
    sigma = rng.uniform(0.3, 0.9)
    smooth = gaussian_filter(up, sigma=(sigma, sigma, 0))
    smooth += rng.normal(0, rng.uniform(0.5, 2.0), smooth.shape)
    h, w = smooth.shape[:2]
    grain = np.tile(GRAIN, (h // 4 + 1, w // 4 + 1))[:h, :w, None] * rng.uniform(4, 8)
    return np.clip(smooth + grain + 0.5, 0, 255).astype(np.uint8)


GRAIN = np.array([[1, 0, -1, 0], [0, 0, 0, 0], [-1, 0, 1, 0], [0, 0, 0, 0]], dtype=np.float64)


# RGB -> YCbCr (BT.601, full range) on 0..1 values.
YCBCR = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])


def generator_c(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour blotches: chroma noise blurred into 2-4 px blobs, 4-8 of 255 in Cb and Cr; luma untouched.

    Earlier C variants also blurred, shifted or saturated the chroma; a detector trained on them
    flagged JPEG-born photographs (whose chroma JPEG subsamples) and colourful ones as C: shortcuts
    of the data, not generation traces (bench/continual.py's test FPR column showed it).
    """
    from scipy.ndimage import gaussian_filter

    ycc = (crop.astype(np.float64) / 255.0) @ YCBCR.T
    blob, amplitude = rng.uniform(2.0, 4.0), rng.uniform(4, 8) / 255.0
    for channel in (1, 2):
        noise = gaussian_filter(rng.normal(0, 1, crop.shape[:2]), blob)
        ycc[..., channel] += noise * amplitude / (noise.std() + 1e-8)
    rgb = ycc @ np.linalg.inv(YCBCR).T
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


GENERATOR_FUNCTIONS = {"A": generator_a, "B": generator_b, "C": generator_c}


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def generate(dest: Path, spec: DemoSpec = DemoSpec(), name: str | None = None) -> Path:
    """Write one demo data set in the ImageFolder layout under ``dest/name``; returns its folder.

    Deterministic for a given spec. Reals are drawn with a seed that differs per generator, so
    round two brings new real images too.
    """
    if spec.generator not in GENERATOR_FUNCTIONS:
        raise ValueError(f"generator must be one of {sorted(GENERATOR_FUNCTIONS)}, got {spec.generator!r}")
    make_fake = GENERATOR_FUNCTIONS[spec.generator]
    root = Path(dest) / (name or f"demo_{spec.generator.lower()}")
    rng = np.random.default_rng([spec.seed, GENERATORS.index(spec.generator)])
    photos = {n: load_photo(n) for split in SPLIT_PHOTOS.values() for n in split}
    records = []
    for split, count in spec.per_split:
        names = SPLIT_PHOTOS[split]
        for i in range(count):
            for label in ("0_real", "1_fake"):
                photo = names[rng.integers(len(names))]
                crop = random_crop(photos[photo], spec.size, rng)
                pixels = crop if label == "0_real" else make_fake(crop, rng)
                rel = f"{split}/{label}/{spec.generator.lower()}_{split}_{i:05d}.png"
                path = root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(png_bytes(pixels))
                records.append(
                    {
                        "file_name": rel,
                        "photo": photo,
                        "generator": spec.generator if label == "1_fake" else None,
                    }
                )
    with open(root / "metadata.jsonl", "w") as fh:
        for record in records:
            fh.write(json.dumps(record) + "\n")
    return root
