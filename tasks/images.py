"""Image bytes: what they are (magic bytes, never the file name) and whether Vigil accepts them.

Shared by collection (refuse what is not an image before storing it), curation (validate and
normalise) and serving (reject bad uploads with a clear 4xx), so the three agree on what an
acceptable image is.
"""

from __future__ import annotations

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
MIME_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp",
              "BMP": "image/bmp", "TIFF": "image/tiff"}


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
    return f"unknown content (first bytes {data[:8].hex()})"
