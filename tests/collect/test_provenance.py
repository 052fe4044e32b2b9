"""Provenance weak labels on real files: PNG generator chunks, XMP IPTC DigitalSourceType, C2PA JUMBF."""

from __future__ import annotations

import io
import json
import struct
import uuid
import zlib

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from tasks.collect import provenance

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
C2PA_UUID = uuid.UUID("63327061-0011-0010-8000-00aa00389b71").bytes  # "c2pa" + ISO suffix


def picture() -> Image.Image:
    img = Image.new("RGB", (40, 40), (90, 140, 200))
    img.putpixel((3, 3), (0, 0, 0))
    return img


def png(info: PngInfo | None = None) -> bytes:
    buf = io.BytesIO()
    picture().save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def jpeg(**save) -> bytes:
    buf = io.BytesIO()
    picture().save(buf, "JPEG", **save)
    return buf.getvalue()


def xmp_packet(source_type: str, element: bool = False) -> bytes:
    value = IPTC + source_type
    prop = f"<Iptc4xmpExt:DigitalSourceType>{value}</Iptc4xmpExt:DigitalSourceType>" if element else ""
    attr = "" if element else f' Iptc4xmpExt:DigitalSourceType="{value}"'
    return (
        '<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"{attr}>'
        f'{prop}</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode()


# -- a minimal but well-formed C2PA manifest store (JUMBF boxes, CBOR assertion) ----------------------


def cbor(obj) -> bytes:
    def head(major: int, n: int) -> bytes:
        if n < 24:
            return bytes([major << 5 | n])
        if n < 256:
            return bytes([major << 5 | 24, n])
        return bytes([major << 5 | 25]) + struct.pack(">H", n)

    if isinstance(obj, str):
        raw = obj.encode()
        return head(3, len(raw)) + raw
    if isinstance(obj, list):
        return head(4, len(obj)) + b"".join(cbor(x) for x in obj)
    if isinstance(obj, dict):
        return head(5, len(obj)) + b"".join(cbor(k) + cbor(v) for k, v in obj.items())
    raise TypeError(obj)


def box(tbox: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + tbox + payload


def superbox(type_uuid: bytes, label: str, *children: bytes) -> bytes:
    description = box(b"jumd", type_uuid + b"\x03" + label.encode() + b"\x00")
    return box(b"jumb", description + b"".join(children))


def c2pa_store(source_type: str) -> bytes:
    actions = {"actions": [{"action": "c2pa.created", "digitalSourceType": IPTC + source_type}]}
    cbor_uuid = uuid.UUID("63626f72-0011-0010-8000-00aa00389b71").bytes
    assertion = superbox(cbor_uuid, "c2pa.actions.v2", box(b"cbor", cbor(actions)))
    assertions = superbox(
        uuid.UUID("63326173-0011-0010-8000-00aa00389b71").bytes, "c2pa.assertions", assertion
    )
    manifest = superbox(uuid.UUID("63326d61-0011-0010-8000-00aa00389b71").bytes, "urn:uuid:1234", assertions)
    return superbox(C2PA_UUID, "c2pa", manifest)


def jpeg_with_c2pa(store: bytes, segments: int = 2) -> bytes:
    """Insert the store as APP11 JUMBF segments (split so that the source type URI straddles two)."""
    header, payload = store[:8], store[8:]
    cut = payload.index(b"digitalsourcetype") + 5
    pieces = [payload[:cut], payload[cut:]] if segments == 2 else [payload]
    app11 = b""
    for seq, piece in enumerate(pieces, 1):
        body = b"JP" + b"\x00\x01" + struct.pack(">I", seq) + header + piece
        app11 += b"\xff\xeb" + struct.pack(">H", len(body) + 2) + body
    data = jpeg()
    return data[:2] + app11 + data[2:]


def png_with_chunk(ctype: bytes, body: bytes) -> bytes:
    data = png()
    chunk = struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))
    first_chunk_end = 8 + 8 + 13 + 4  # signature + IHDR
    return data[:first_chunk_end] + chunk + data[first_chunk_end:]


# -- tests --------------------------------------------------------------------------------------------


def test_a1111_parameters_chunk():
    info = PngInfo()
    info.add_text("parameters", "a cat in space\nSteps: 20, Sampler: Euler a, CFG scale: 7, Model: sdxl_base")
    assert provenance.detect(png(info)) == provenance.Provenance("fake", "png_parameters", "sdxl_base")


def test_comfyui_prompt_chunk_compressed():
    info = PngInfo()
    info.add_text("prompt", json.dumps({"3": {"class_type": "KSampler", "inputs": {"seed": 1}}}), zip=True)
    assert provenance.detect(png(info)) == provenance.Provenance("fake", "png_comfyui", "comfyui")


def test_unrelated_text_chunks_say_nothing():
    info = PngInfo()
    info.add_text("Comment", "holiday photo")
    info.add_text("prompt", "not json, just a word someone wrote")
    assert provenance.detect(png(info)) is None
    assert provenance.detect(png()) is None and provenance.detect(jpeg()) is None


@pytest.mark.parametrize("element", [False, True])
def test_jpeg_xmp_iptc_digital_source_type(element):
    assert provenance.detect(
        jpeg(xmp=xmp_packet("trainedAlgorithmicMedia", element))
    ) == provenance.Provenance("fake", "iptc")


def test_png_itxt_xmp_composite_is_fake_and_capture_is_not_evidence():
    info = PngInfo()
    info.add_itxt("XML:com.adobe.xmp", xmp_packet("compositeWithTrainedAlgorithmicMedia").decode())
    assert provenance.detect(png(info)).label_source == "iptc"
    assert provenance.detect(jpeg(xmp=xmp_packet("digitalCapture"))) is None


def test_c2pa_in_jpeg_app11_reassembled_across_segments():
    data = jpeg_with_c2pa(c2pa_store("trainedAlgorithmicMedia"), segments=2)
    assert Image.open(io.BytesIO(data)).size == (40, 40)  # still a valid JPEG
    assert provenance.detect(data) == provenance.Provenance("fake", "c2pa")
    assert provenance.detect(jpeg_with_c2pa(c2pa_store("digitalCapture"))) is None


def test_c2pa_in_png_cabx_chunk():
    data = png_with_chunk(b"caBX", c2pa_store("compositeWithTrainedAlgorithmicMedia"))
    Image.open(io.BytesIO(data)).load()  # CRCs right: Pillow decodes it
    assert provenance.detect(data) == provenance.Provenance("fake", "c2pa")


def test_c2pa_wins_over_generator_text():
    info = PngInfo()
    info.add_text("parameters", "a dog")
    buf = io.BytesIO()
    picture().save(buf, "PNG", pnginfo=info)
    data = buf.getvalue()
    chunk_body = c2pa_store("trainedAlgorithmicMedia")
    crc = struct.pack(">I", zlib.crc32(b"caBX" + chunk_body))
    chunk = struct.pack(">I", len(chunk_body)) + b"caBX" + chunk_body + crc
    assert provenance.detect(data[:33] + chunk + data[33:]).label_source == "c2pa"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x89PNG\r\n\x1a\n\xff\xff\xff\xfftEXt",
        b"\xff\xd8\xff\xeb\xff\xff",
        b"RIFF\x00\x00\x00\x00WEBPXMP \xff\xff\xff\x7f",
        b"<html>not an image</html>",
    ],
)
def test_truncated_or_foreign_bytes_never_raise(data):
    assert provenance.detect(data) is None


def test_precedence_explicit_then_provenance_then_prior():
    fake = provenance.Provenance("fake", "c2pa")
    assert provenance.weak_label("real", label="real", label_source="folder", provenance=fake) == (
        "real",
        "folder",
    )
    assert provenance.weak_label("real", label="fake", label_source="metadata") == ("fake", "metadata")
    assert provenance.weak_label("real", provenance=fake) == ("fake", "c2pa")
    assert provenance.weak_label("unknown") == ("unknown", "prior")
