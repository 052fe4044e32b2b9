"""Every bad input gets a 4xx JSON answer that says what was wrong; the server keeps serving."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
import requests
from PIL import Image

LIMIT = 200_000


def png(size=(64, 64), seed: int = 0) -> bytes:
    import numpy as np

    pixels = np.random.default_rng(seed).integers(0, 255, (*size[::-1], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def bomb_png(width: int = 10_000, height: int = 8_000) -> bytes:
    """A small PNG whose header claims width x height pixels (a decompression bomb)."""
    data = bytearray(png((40, 40)))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def image_bytes(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.frombytes("RGB", (64, 64), png()[: 64 * 64 * 3].ljust(64 * 64 * 3, b"\x07")).save(buf, fmt)
    return buf.getvalue()


def upload(server, data: bytes, name: str = "image.png", path: str = "/v1/detect") -> requests.Response:
    return requests.post(
        server.url + path, files={"file": (name, data, "application/octet-stream")}, timeout=30
    )


def assert_error(response: requests.Response, status: int, code: str, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code, body
    for word in words:
        assert word.lower() in body["message"].lower(), body


@pytest.fixture
def server(serve, detector):
    # BMP left out of the accepted formats to show format_not_allowed.
    return serve(
        detector,
        max_upload_bytes=LIMIT,
        max_batch_images=2,
        images={"allowed_formats": ("JPEG", "PNG", "WEBP", "GIF", "TIFF")},
    )


def test_bad_uploads_are_refused_with_a_reason(server):
    good = png()
    truncated = good[: len(good) // 2]
    corrupt = bytearray(good)
    corrupt[60:80] = b"\x00" * 20  # inside the image data: the CRC no longer matches

    assert_error(upload(server, truncated), 422, "truncated", "PNG")
    assert_error(upload(server, bytes(corrupt)), 422, "corrupt")
    assert_error(upload(server, bomb_png()), 422, "decompression_bomb", "80,000,000 pixels")
    assert_error(upload(server, b"just some notes\n", "notes.txt"), 415, "not_an_image", "text file", "PNG")
    svg = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"></svg>'
    assert_error(upload(server, svg, "logo.svg"), 415, "not_an_image", "SVG")
    assert_error(upload(server, image_bytes("BMP"), "x.bmp"), 415, "format_not_allowed", "BMP")
    assert_error(upload(server, b""), 422, "empty")
    # Larger than serving.max_upload_bytes: refused while reading the body (Content-Length first).
    assert_error(upload(server, png((400, 400))), 413, "upload_too_large", f"{LIMIT + 64 * 1024:,}")
    assert_error(
        upload(server, png((300, 300)), "big.png", path="/v1/detect/batch"),
        413,
        "upload_too_large",
        "big.png",
        f"{LIMIT:,}",
    )

    # Without a Content-Length (chunked), counting stops the upload as soon as it passes the limit.
    def chunks():
        yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        for _ in range(64):
            yield b"\0" * 64 * 1024

    chunked = requests.post(
        server.url + "/v1/detect",
        data=chunks(),
        timeout=30,
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )
    assert_error(chunked, 413, "upload_too_large", "more than")
    # Batches: too many images; a bad image is answered in its place, named by its position, and the
    # good ones are still scored; a batch with nothing good fails with the first file's reason.
    files = [("file", (f"{i}.png", png(seed=i), "image/png")) for i in range(3)]
    assert_error(
        requests.post(server.url + "/v1/detect/batch", files=files, timeout=30), 413, "batch_too_large", "2"
    )
    files = [("file", ("bad.png", truncated, "image/png")), ("file", ("ok.png", good, "image/png"))]
    mixed = requests.post(server.url + "/v1/detect/batch", files=files, timeout=30)
    assert mixed.status_code == 200, mixed.text
    rejected, scored = mixed.json()["predictions"]
    assert (rejected["file"], rejected["status"], rejected["error"]) == ("bad.png", 422, "truncated")
    assert "file 1 (bad.png)" in rejected["message"] and "prediction_id" not in rejected
    assert (
        scored["label"] in {"synthetic", "authentic"}
        and scored["p_fake"] == upload(server, good).json()["p_fake"]
    )
    files = [("file", ("bad.png", truncated, "image/png")), ("file", ("notes.txt", b"notes\n", "text/plain"))]
    assert_error(
        requests.post(server.url + "/v1/detect/batch", files=files, timeout=30),
        422,
        "truncated",
        "file 1 (bad.png)",
    )
    # Request shapes.
    assert_error(
        requests.post(server.url + "/v1/detect", files={"other": ("a.png", good)}),
        422,
        "invalid_request",
        "'file'",
    )
    assert_error(
        requests.post(server.url + "/v1/detect", data=good, headers={"Content-Type": "image/png"}),
        415,
        "unsupported_media_type",
        "multipart/form-data",
    )
    not_json = requests.post(
        server.url + "/v1/detect", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_error(not_json, 422, "invalid_json", "line 1")
    missing = requests.post(server.url + "/v1/detect", json={"link": "http://example.com/a.png"})
    assert_error(missing, 422, "invalid_request", "url")
    assert missing.json()["field"] == "url"
    assert_error(requests.get(server.url + "/v1/nothing"), 404, "not_found")

    # After all that, the server still answers.
    assert upload(server, good).status_code == 200


def test_urls_to_private_loopback_and_link_local_addresses_are_refused(server, image_host):
    image_url = image_host.route("/a.png", png(), headers={"Content-Type": "image/png"})
    for url in (
        image_url,
        "http://127.0.0.1:9/a.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/a.png",
        "http://[::1]:9/a.png",
    ):
        response = requests.post(server.url + "/v1/detect", json={"url": url}, timeout=30)
        assert_error(response, 400, "url_unreachable", "unreachable or not allowed")
    assert image_host.hits == 0  # refused before any connection
    assert_error(
        requests.post(server.url + "/v1/detect", json={"url": "file:///etc/passwd"}),
        400,
        "url_invalid_url",
        "http",
    )


def test_blocked_refused_and_unresolvable_targets_look_the_same(serve, detector):
    """No port or address oracle (DNS rebinding): whatever failed, the client gets one code and one
    message, the URL aside; the detail is in the server's log only."""
    import socket

    server = serve(detector, allow_private_urls=True)  # loopback allowed: a closed port is *refused*
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    answers = []
    for url in (
        f"http://127.0.0.1:{closed}/a.png",  # connection refused
        "http://169.254.169.254/latest/meta-data/",  # blocked (link-local stays refused)
        "http://no-such-host.invalid/a.png",  # does not resolve
    ):
        response = requests.post(server.url + "/v1/detect", json={"url": url}, timeout=30)
        assert response.status_code == 400, response.text
        answers.append({**response.json(), "message": response.json()["message"].replace(url, "URL")})
    assert answers[0] == answers[1] == answers[2], answers
    assert answers[0]["error"] == "url_unreachable"


def test_url_limits_with_loopback_allowed(serve, detector, image_host):
    server = serve(detector, max_upload_bytes=LIMIT, allow_private_urls=True, url_timeout_s=0.5)
    ok = image_host.route("/ok.png", png(), headers={"Content-Type": "image/png"})
    assert requests.post(server.url + "/v1/detect", json={"url": ok}, timeout=30).status_code == 200
    # A redirect to the cloud metadata address is refused at that hop (link-local stays refused even here).
    redirect = image_host.route(
        "/r", status=302, headers={"Location": "http://169.254.169.254/latest/meta-data/"}
    )
    assert_error(
        requests.post(server.url + "/v1/detect", json={"url": redirect}, timeout=30),
        400,
        "url_unreachable",
        "not allowed",
    )
    big = image_host.route("/big.png", png((400, 400)), headers={"Content-Type": "image/png"})
    assert_error(
        requests.post(server.url + "/v1/detect", json={"url": big}, timeout=30),
        413,
        "url_too_large",
        f"{LIMIT:,}",
    )
    slow = image_host.route("/slow.png", png(), delay=2.0)
    assert_error(
        requests.post(server.url + "/v1/detect", json={"url": slow}, timeout=30), 400, "url_timeout", "0.5s"
    )
    missing = image_host.route("/gone.png", b"", status=404)
    assert_error(
        requests.post(server.url + "/v1/detect", json={"url": missing}, timeout=30),
        400,
        "url_http_status",
        "404",
    )
    text = image_host.route(
        "/page.html", b"<html><body>hi</body></html>", headers={"Content-Type": "text/html"}
    )
    assert_error(
        requests.post(server.url + "/v1/detect", json={"url": text}, timeout=30), 415, "not_an_image", "HTML"
    )
