"""A corpus of bad and awkward image files, built with Pillow and by hand, with the outcome each must get."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import numpy as np
from PIL import Image

from tests.helpers.curation import encode, photo


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` with a tiny (invalid) IDAT: a decompression bomb."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def truncated_jpeg() -> bytes:
    data = encode(photo(40, 128), "JPEG", quality=90)
    return data[: len(data) // 2]


def bad_crc_png() -> bytes:
    data = bytearray(encode(photo(41)))
    data[200] ^= 0xFF  # inside the compressed pixels: the IDAT CRC no longer matches
    return bytes(data)


def noise_png(size: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return encode(Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)))


def near_constant_png() -> bytes:
    rng = np.random.default_rng(1)
    arr = np.full((64, 64, 3), 200, np.uint8) + rng.integers(0, 2, (64, 64, 3), dtype=np.uint8)
    return encode(Image.fromarray(arr))


def animated_gif() -> tuple[bytes, Image.Image]:
    frames = [photo(42 + i, 64).convert("P", palette=Image.ADAPTIVE) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue(), frames[0].convert("RGB")


def cmyk_jpeg() -> bytes:
    return encode(photo(45).convert("CMYK"), "JPEG", quality=95)


def png16() -> tuple[bytes, np.ndarray]:
    """A 16-bit grayscale photo PNG using the full 16-bit range, and the 8-bit pixels it must become."""
    gray = np.asarray(photo(51).convert("L"))
    low_bits = np.random.default_rng(2).integers(0, 128, gray.shape)
    deep = (gray.astype(np.uint32) * 257 + low_bits).astype(np.uint16)  # rounds back to `gray`
    return encode(Image.fromarray(deep)), gray


def grayscale_png() -> bytes:
    return encode(photo(46).convert("L"))


def exif_rotated_jpeg() -> bytes:
    """80x40 stored pixels, left half red and right half blue, EXIF orientation 6 (rotate 90 clockwise).

    Upright, it is 40 wide and 80 tall, red on top and blue below.
    """
    arr = np.zeros((40, 80, 3), np.uint8)
    arr[:, :40] = (220, 20, 20)
    arr[:, 40:] = (20, 20, 220)
    image = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(image, "JPEG", quality=95, exif=exif.tobytes())


def rgba_png() -> bytes:
    """A photo whose left half is fully transparent (must become white)."""
    rgba = photo(47).convert("RGBA")
    alpha = np.full((rgba.height, rgba.width), 255, np.uint8)
    alpha[:, : rgba.width // 2] = 0
    rgba.putalpha(Image.fromarray(alpha))
    return encode(rgba)


def palette_png_with_transparency() -> bytes:
    image = photo(48).convert("P", palette=Image.ADAPTIVE, colors=64)
    return encode(image, transparency=0)


def polyglot_jpeg_zip() -> bytes:
    """A valid JPEG with a ZIP archive appended (readable by both a JPEG viewer and unzip)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("payload.txt", "POLYGLOT-PAYLOAD")
    return encode(photo(49), "JPEG", quality=90) + buf.getvalue()


def polyglot_png_html() -> bytes:
    return encode(photo(50)) + b"<html><script>alert('POLYGLOT-SCRIPT')</script></html>"


SVG = (
    b'<?xml version="1.0"?>\n'
    b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64"/></svg>'
)
HTML = b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>"
