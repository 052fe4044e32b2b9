"""Weak labels: what an image's own metadata says about where it came from.

Precedence, strongest first (``label_source`` records which rule gave the label):

1. an explicit label given by the user: the ``0_real``/``1_fake`` folder (``folder``), or the
   ``label`` column of a ``metadata.jsonl`` (``metadata``);
2. provenance metadata saying the image was generated (first match wins):
   ``c2pa``  — a C2PA manifest (JUMBF in JPEG APP11, PNG ``caBX`` or WebP ``C2PA``) whose
   ``digitalSourceType`` is ``trainedAlgorithmicMedia`` or ``compositeWithTrainedAlgorithmicMedia``;
   ``iptc`` — an XMP packet (JPEG APP1, PNG ``iTXt XML:com.adobe.xmp``, WebP ``XMP ``) with the same
   IPTC ``DigitalSourceType``; ``png_parameters`` (Stable Diffusion web UIs), ``png_comfyui``,
   ``png_invokeai``, ``png_novelai`` — the generator text chunks those tools write into PNGs;
3. the source's ``label_prior`` (``prior``).

Provenance only ever says *fake*: most platforms strip metadata on upload, so its absence is no
evidence of a real photo, and a "digital capture" claim is unsigned here (C2PA signatures are
not verified), so it does not make a label *real*. An explicit folder label wins over
provenance; disagreements are counted in the run summary so that the user can look at them.
The parsers only walk container structure (no pixel decoding) and cap decompression.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

FAKE_SOURCE_TYPES = frozenset({"trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia"})
_SOURCE_TYPE_URI = re.compile(rb"digitalsourcetype/([A-Za-z]+)")
_XMP_SOURCE_TYPE = re.compile(r"DigitalSourceType\s*(?:=\s*[\"']|>)\s*([^\"'<\s]+)")
_XMP_JPEG_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
_MAX_TEXT = 1_000_000  # decompressed bytes read from one compressed PNG text chunk


@dataclass(frozen=True)
class Provenance:
    """A label given by the image's own metadata."""

    label: str
    label_source: str
    generator: str | None = None


@dataclass(frozen=True)
class _Metadata:
    c2pa: list[bytes]
    xmp: list[str]
    text: dict[str, str]  # PNG text chunks: keyword -> text


def detect(data: bytes) -> Provenance | None:
    """The provenance label carried by the image bytes, or None when they say nothing."""
    meta = _extract(data)
    for manifest in meta.c2pa:
        if b"c2pa" in manifest and _fake_type(
            m.decode("ascii", "replace") for m in _SOURCE_TYPE_URI.findall(manifest)
        ):
            return Provenance("fake", "c2pa")
    for packet in meta.xmp:
        if _fake_type(value.rstrip("/").rsplit("/", 1)[-1] for value in _XMP_SOURCE_TYPE.findall(packet)):
            return Provenance("fake", "iptc")
    return _generator_text(meta.text)


def weak_label(
    prior: str,
    *,
    label: str | None = None,
    label_source: str | None = None,
    provenance: Provenance | None = None,
) -> tuple[str, str]:
    """(label, label_source) by the precedence in the module docstring."""
    if label:
        return label, label_source or "folder"
    if provenance:
        return provenance.label, provenance.label_source
    return prior, "prior"


def _fake_type(values: Iterator[str]) -> bool:
    return any(value in FAKE_SOURCE_TYPES for value in values)


def _generator_text(text: dict[str, str]) -> Provenance | None:
    if text.get("parameters"):
        model = re.search(r"Model: ([^,\n]+)", text["parameters"])
        return Provenance(
            "fake", "png_parameters", model.group(1).strip() if model else "stable-diffusion-webui"
        )
    for keyword in ("prompt", "workflow"):
        if _is_json_object(text.get(keyword)):
            return Provenance("fake", "png_comfyui", "comfyui")
    if text.get("invokeai_metadata") or text.get("sd-metadata"):
        return Provenance("fake", "png_invokeai", "invokeai")
    if text.get("Software", "").startswith("NovelAI"):
        return Provenance("fake", "png_novelai", "novelai")
    return None


def _is_json_object(value: str | None) -> bool:
    if not value:
        return False
    try:
        return isinstance(json.loads(value), dict)
    except ValueError:
        return False


# -- container walking -------------------------------------------------------------------------------


def _extract(data: bytes) -> _Metadata:
    meta = _Metadata([], [], {})
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        _png(data, meta)
    elif data.startswith(b"\xff\xd8"):
        _jpeg(data, meta)
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        _webp(data, meta)
    return meta


def _png(data: bytes, meta: _Metadata) -> None:
    pos = 8
    while pos + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if ctype == b"IEND":
            break
        if ctype == b"caBX":
            meta.c2pa.append(body)
        elif ctype in (b"tEXt", b"zTXt", b"iTXt"):
            parsed = _png_text(ctype, body)
            if parsed:
                keyword, text = parsed
                if keyword == "XML:com.adobe.xmp":
                    meta.xmp.append(text)
                else:
                    meta.text.setdefault(keyword, text)


def _png_text(ctype: bytes, body: bytes) -> tuple[str, str] | None:
    keyword, sep, rest = body.partition(b"\x00")
    if not sep:
        return None
    name = keyword.decode("latin-1")
    try:
        if ctype == b"tEXt":
            return name, rest.decode("latin-1")
        if ctype == b"zTXt":
            return name, _inflate(rest[1:]).decode("latin-1")
        compressed, rest = rest[:1] == b"\x01", rest[2:]  # flag, method
        _language, _, rest = rest.partition(b"\x00")
        _translated, _, text = rest.partition(b"\x00")
        return name, (_inflate(text) if compressed else text).decode("utf-8", "replace")
    except zlib.error:
        return None


def _inflate(data: bytes) -> bytes:
    return zlib.decompressobj().decompress(data, _MAX_TEXT)


def _jpeg(data: bytes, meta: _Metadata) -> None:
    """APP1 XMP packets and APP11 JUMBF segments (C2PA), reassembled per box instance."""
    jumbf: dict[bytes, list[tuple[int, bytes]]] = {}
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan / end of image: no metadata after this
            break
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        body = data[pos + 4 : pos + 2 + length]
        pos += 2 + length
        if marker == 0xE1 and body.startswith(_XMP_JPEG_HEADER):
            meta.xmp.append(body[len(_XMP_JPEG_HEADER) :].decode("utf-8", "replace"))
        elif marker == 0xEB and body[:2] == b"JP" and len(body) >= 8:
            # Common identifier "JP", box instance (2 bytes), packet sequence number (4 bytes), box data.
            instance, sequence = body[2:4], struct.unpack(">I", body[4:8])[0]
            jumbf.setdefault(instance, []).append((sequence, body[8:]))
    for packets in jumbf.values():
        packets.sort()
        # Continuation packets repeat the box header (LBox + TBox, 8 bytes): keep it once.
        meta.c2pa.append(packets[0][1] + b"".join(p[8:] for _, p in packets[1:]))


def _webp(data: bytes, meta: _Metadata) -> None:
    pos = 12
    while pos + 8 <= len(data):
        ctype, length = struct.unpack("<4sI", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 8 + length + (length & 1)
        if ctype == b"XMP ":
            meta.xmp.append(body.decode("utf-8", "replace"))
        elif ctype == b"C2PA":
            meta.c2pa.append(body)
