"""Image bytes: what they are (magic bytes, never the file name) and whether Vigil accepts them.

Shared by collection (refuse what is not an image before storing it), curation (validate and
normalise) and serving (reject bad uploads with a clear 4xx), so the three agree on what an
acceptable image is.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageStat

if TYPE_CHECKING:
    from tasks.settings import ImageSettings

# (prefix, offset, format) for the raster formats Pillow decodes and Vigil may accept.
_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"WEBP", 8, "WEBP"),  # after b"RIFF" + 4 size bytes
    (b"BM", 0, "BMP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
)
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "BMP": "bmp", "TIFF": "tif"}
MIME_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}


def sniff_format(data: bytes) -> str | None:
    """The raster format named by the magic bytes (``JPEG``, ``PNG``, ...), or None."""
    for magic, offset, fmt in _MAGIC:
        if data[offset : offset + len(magic)] == magic and (fmt != "WEBP" or data[:4] == b"RIFF"):
            return fmt
    return None


def describe_non_image(data: bytes) -> str:
    """A short human description of bytes that are not a raster image, for rejection reasons."""
    if not data:
        return "empty file"
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head[:256]:
        return "HTML document"
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in data[:4096].lower()):
        return "SVG vector image"
    if head.startswith(b"%pdf"):
        return "PDF document"
    if data[:4] == b"PK\x03\x04":
        return "ZIP archive"
    text = data[:512].decode("utf-8", errors="replace")[:-1]  # the cut may split the last character
    if all(c.isprintable() or c in "\t\r\n" for c in text) and "\ufffd" not in text:
        return "text file"
    return f"unknown content (first bytes {data[:8].hex()})"


# -- decoding and validation ----------------------------------------------------------------------
# Stable, machine-readable rejection codes (quarantine reasons, API error codes). Never rename one.
REJECTION_CODES: dict[str, str] = {
    "empty": "the file has no bytes",
    "too_large_file": "the file is larger than images.max_file_bytes",
    "not_an_image": "the bytes are not a raster image (HTML, SVG, PDF, ZIP, text, unknown format)",
    "format_not_allowed": "a raster format that is not in images.allowed_formats",
    "decompression_bomb": "width x height above images.max_pixels, read from the header before decoding",
    "too_large_dimensions": "a side longer than images.max_side pixels",
    "too_small": "a side shorter than images.min_side pixels",
    "animated": "an animated image while images.animated is 'reject'",
    "truncated": "the image data ends before the image is complete",
    "corrupt": "the decoder failed on invalid data (bad checksum, broken stream)",
    "near_constant": "every channel's pixel standard deviation is below images.min_pixel_std (blank image)",
}

# EXIF orientation tag value -> the transposition that makes the image upright.
_ORIENTATION_TRANSPOSE = {
    2: "FLIP_LEFT_RIGHT",
    3: "ROTATE_180",
    4: "FLIP_TOP_BOTTOM",
    5: "TRANSPOSE",
    6: "ROTATE_270",
    7: "TRANSVERSE",
    8: "ROTATE_90",
}
_EXIF_ORIENTATION = 0x0112
_WHITE = (255, 255, 255)


class ImageRejected(ValueError):
    """The bytes are not an acceptable image; ``code`` is one of :data:`REJECTION_CODES`."""

    def __init__(self, code: str, message: str) -> None:
        if code not in REJECTION_CODES:
            raise ValueError(f"unknown rejection code {code!r}; known: {sorted(REJECTION_CODES)}")
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class DecodedImage:
    """An accepted image: upright 8-bit RGB pixels, plus what the original file was."""

    image: Image.Image
    format: str
    mode: str
    width: int  # of the stored pixels, before EXIF orientation
    height: int
    frames: int
    conversions: tuple[str, ...]  # what was done to reach upright RGB, e.g. ("alpha_on_white",)


def decode_image(data: bytes, policy: ImageSettings) -> DecodedImage:
    """Decode ``data`` fully and check it against ``policy``; raise :class:`ImageRejected` if unacceptable.

    The one definition of an acceptable image, shared by curation and serving. Dimensions are checked
    from the header before any pixel is decoded (decompression-bomb guard); the result is upright
    (EXIF orientation applied), 8-bit RGB, first frame of an animation, transparency composited on white.
    """
    if not data:
        raise ImageRejected("empty", "the file is empty (0 bytes)")
    if len(data) > policy.max_file_bytes:
        limit = f"images.max_file_bytes={policy.max_file_bytes:,}"
        raise ImageRejected("too_large_file", f"{len(data):,} bytes is more than {limit}")
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageRejected("not_an_image", f"not a raster image: {describe_non_image(data)}")
    if fmt not in policy.allowed_formats:
        raise ImageRejected(
            "format_not_allowed",
            f"{fmt} is not accepted; images.allowed_formats={list(policy.allowed_formats)}",
        )
    try:
        image = _open_checked(data, fmt, policy)
        width, height = image.size
        frames = int(getattr(image, "n_frames", 1) or 1)
        if frames > 1 and policy.animated == "reject":
            raise ImageRejected("animated", f"animated {fmt}, {frames} frames; images.animated is 'reject'")
        image.load()  # the first frame: pixels are decoded only now
        rgb, conversions = upright_rgb(image)
    except ImageRejected:
        raise
    except Image.DecompressionBombError as exc:
        message = f"{exc} (images.max_pixels={policy.max_pixels:,})"
        raise ImageRejected("decompression_bomb", message) from None
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: any decoder failure is a rejection
        text = str(exc) or type(exc).__name__
        code = "truncated" if "truncated" in text.lower() or isinstance(exc, EOFError) else "corrupt"
        raise ImageRejected(code, f"{fmt} could not be decoded: {text}") from None
    if frames > 1:
        conversions.append(f"first_frame_of_{frames}")
    spread = max(ImageStat.Stat(rgb).stddev)
    if spread < policy.min_pixel_std:
        raise ImageRejected(
            "near_constant",
            f"pixel standard deviation {spread:.2f} is below images.min_pixel_std={policy.min_pixel_std}",
        )
    return DecodedImage(rgb, fmt, image.mode, width, height, frames, tuple(conversions))


def _open_checked(data: bytes, fmt: str, policy: ImageSettings) -> Image.Image:
    """Open lazily (header only), check the size, verify the stream, reopen for decoding."""

    def open_() -> Image.Image:
        return Image.open(io.BytesIO(data), formats=[fmt])

    try:
        image = open_()
    except Image.UnidentifiedImageError:
        raise ImageRejected("corrupt", f"the {fmt} header is invalid") from None
    width, height = image.size
    if width * height > policy.max_pixels:
        raise ImageRejected(
            "decompression_bomb",
            f"{width}x{height} = {width * height:,} pixels is more "
            f"than images.max_pixels={policy.max_pixels:,}",
        )
    if max(width, height) > policy.max_side:
        raise ImageRejected(
            "too_large_dimensions",
            f"{width}x{height}: a side is longer than images.max_side={policy.max_side}",
        )
    if min(width, height) < policy.min_side:
        raise ImageRejected(
            "too_small", f"{width}x{height}: a side is shorter than images.min_side={policy.min_side}"
        )
    image.verify()  # checksums and structure; the image object is unusable afterwards
    return open_()


def upright_rgb(image: Image.Image) -> tuple[Image.Image, list[str]]:
    """The one conversion of any decoded image to what every stage sees: EXIF orientation applied,
    8-bit RGB, transparency composited on white; returns the image and the conversions applied.

    Idempotent: the result carries no EXIF orientation any more, so a second call changes nothing.
    """
    orientation = _orientation(image)
    rgb, conversions = _to_rgb(image)
    if orientation in _ORIENTATION_TRANSPOSE:
        rgb = rgb.transpose(getattr(Image.Transpose, _ORIENTATION_TRANSPOSE[orientation]))
        conversions.append(f"exif_orientation_{orientation}")
    if rgb is not image:
        rgb.info.pop("exif", None)  # applied: it must not be applied again downstream
    return rgb, conversions


def load_image(data: bytes) -> Image.Image:
    """Trusted image bytes (curated images, a labeled folder) as the model sees them: the first frame,
    through :func:`upright_rgb`. Untrusted bytes go through :func:`decode_image`, which adds the checks."""
    with Image.open(io.BytesIO(data)) as image:
        image.seek(0)
        image.load()
        return upright_rgb(image)[0]


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block is no reason to reject the pixels
        return 1


def _to_rgb(image: Image.Image) -> tuple[Image.Image, list[str]]:
    """8-bit RGB from any mode Pillow decodes; returns the image and the conversions applied."""
    mode = image.mode
    if mode == "RGB":
        return image, []
    if mode == "P":
        if "transparency" not in image.info:
            return image.convert("RGB"), ["palette_to_rgb"]
        image, mode = image.convert("RGBA"), "PA"
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB"), ["alpha_on_white"]
    if mode == "I" or mode.startswith("I;16") or mode == "F":
        values = np.asarray(image, dtype=np.float32)
        if mode != "F":
            values = values / 257.0  # 16-bit range onto 8 bits
        gray = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
        return gray.convert("RGB"), [f"{mode.lower()}_to_8bit", "gray_to_rgb"]
    if mode in ("L", "1"):
        return image.convert("RGB"), ["gray_to_rgb"]
    return image.convert("RGB"), [f"{mode.lower()}_to_rgb"]  # CMYK, YCbCr, LAB, HSV


# -- normalisation ------------------------------------------------------------------------------
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def pixel_hash(image: Image.Image) -> str:
    """sha256 of the size and the RGB bytes: the ``image_id`` (identical pixels, identical id)."""
    return hashlib.sha256(f"{image.width}x{image.height}:".encode() + image.tobytes()).hexdigest()


def perceptual_hash(image: Image.Image) -> str:
    """64-bit DCT perceptual hash (imagehash.phash) as 16 hex digits; near duplicates differ in few bits.

    The image is first box-reduced to about 64 px (what Pillow's ``reducing_gap`` does inside a
    resize): pHash only looks at a 32x32 thumbnail, and this makes it 3x cheaper.
    """
    import imagehash

    factor = max(1, min(image.size) // 64)
    return str(imagehash.phash(image.reduce(factor) if factor > 1 else image))


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def encode_png(image: Image.Image) -> bytes:
    """The one curated encoding: 8-bit RGB PNG, no metadata, "Up" filter, fast deflate (ISA-L level 1).

    Every curated image is written by this function, so the file format and compression of the
    original cannot leak the label. Written directly rather than with Pillow: Pillow's per-row
    adaptive filter search plus zlib made encoding the dominant cost of curation; ISA-L's deflate is
    about 3x faster than zlib's at a similar size (see bench/etl.py).
    """
    from isal import isal_zlib

    if image.mode != "RGB":
        raise ValueError(f"encode_png expects an RGB image, got mode {image.mode!r}")
    width, height = image.size
    rows = np.frombuffer(image.tobytes(), np.uint8).reshape(height, width * 3)
    filtered = np.empty((height, width * 3 + 1), np.uint8)
    filtered[:, 0] = 2  # filter type "Up": each row minus the row above (the first row: minus zeros)
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    idat = isal_zlib.compress(filtered.tobytes(), 1)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit, truecolour, no interlace
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
