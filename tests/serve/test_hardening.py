"""The detection API under attack, on a live uvicorn: slow-drip URLs, slow bodies, malformed JSON,
concurrent batches within a memory bound, aborted uploads, the access log and the upload cache's cap."""

from __future__ import annotations

import io
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.helpers.serve import ADMIN_TOKEN, DripServer, serving_process
from tests.serve.test_routes import detect, metric

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def padded_png(size: int, seed: int = 0) -> bytes:
    """A valid 64x64 PNG of about ``size`` bytes: random bytes after its end carry the bulk (decoders stop
    at IEND and keep none of it), so memory follows the bytes sent, not the pixels."""
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        buf, "PNG"
    )
    png = buf.getvalue()
    return png + np.random.default_rng(seed + 1).bytes(max(0, size - len(png)))


def raw_request(url: str, head: str, body_parts: list[bytes], hold: threading.Event | None = None) -> bytes:
    """Send a request by hand: the headers and some body parts, then (``hold``) keep the connection
    open sending nothing until ``hold`` is set, or read the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.encode())
        for part in body_parts:
            sock.sendall(part)
        if hold is not None:
            hold.wait(60)
            return b""
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_uploads_stay_fast_while_eight_slow_drip_url_fetches_run(serve, detector, test_images):
    drip = DripServer(phase="body", size=10_000, interval=0.5)  # 10,000 bytes at 2 bytes a second
    server = serve(detector, allow_private_urls=True, url_timeout_s=8, url_fetch_concurrency=8)
    try:
        with ThreadPoolExecutor(8) as pool:
            slow = [
                pool.submit(
                    requests.post, server.url + "/v1/detect", json={"url": f"{drip.url}/{i}.png"}, timeout=120
                )
                for i in range(8)
            ]
            drip.wait_active(8)  # all eight fetches are in flight

            upload = detect(server, test_images["real"][0])

            assert upload.status_code == 200, upload.text
            assert drip.active == 8  # answered while the slow fetches were still running
            answers = [future.result() for future in slow]
    finally:
        drip.close()
    for answer in answers:
        assert answer.status_code == 400 and answer.json()["error"] == "url_timeout", answer.text
        assert "url_timeout_s=8s" in answer.json()["message"]
    assert drip.sent < 8 * 10_000  # cut off by the deadline, not read to the end


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("nested", b"[" * 60_000),
        ("nested-object", b'{"url": ' + b'{"a": ' * 40 + b"1" + b"}" * 41),
        ("invalid-utf8", b'{"url": "\xff\xfe\xfd"}'),
        (
            "million-digit number",
            b'{"url": "http://example.org/a.png", "explain": ' + b"9" * 1_000_000 + b"}",
        ),
        ("NaN", b'{"url": "http://example.org/a.png", "explain": NaN}'),
    ],
)
@pytest.mark.parametrize("path", ["/v1/detect", "/admin/reload", "/v1/feedback"])
def test_malformed_json_bodies_get_a_4xx_json_answer(serve, detector, path, name, body):
    server = serve(detector)
    answer = requests.post(
        server.url + path, data=body, headers={"Content-Type": "application/json", **AUTH}, timeout=30
    )
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:300])
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["error"] in {"invalid_json", "upload_too_large"}, answer.text[:300]
    assert len(answer.json()["message"]) < 600
    assert detect(server, Path(__file__)).status_code == 415  # still serving


def test_error_messages_never_echo_unbounded_input(serve, detector):
    server = serve(detector)
    for url in ("http://example.org/" + "a" * 60_000, "ftp://" + "b" * 9_000_000):
        answer = requests.post(server.url + "/v1/detect", json={"url": url}, timeout=60)
        assert 400 <= answer.status_code < 500 and answer.json()["error"]
        assert len(answer.text) < 1000, answer.text[:300]


def test_a_body_sent_too_slowly_is_cut_off_with_408(serve, detector, test_images):
    server = serve(detector, body_timeout_s=1)
    image = test_images["real"][0].read_bytes()
    body = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        + image
        + b"\r\n--b--\r\n"
    )
    head = (
        "POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    answer = raw_request(server.url, head, [body[:100]])  # the rest of the body never comes

    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout", answer[:300]
    assert b'"error":"body_timeout"' in rest and b"serving.body_timeout_s=1s" in rest
    assert b"connection: close" in rest.lower()
    text = requests.get(server.url + "/metrics", timeout=10).text
    assert metric(text, "vigil_http_requests_total", route="/v1/detect", status="408") == 1


def test_a_client_that_aborts_its_upload_is_not_counted_as_a_500(serve, detector, test_images):
    server = serve(detector)
    head = (
        "POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        "Content-Length: 100000\r\n\r\n"
    )
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            head.encode() + b'--b\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n'
        )
        sock.sendall(b"\0" * 1000)
    # ... and the client is gone. The server notices while reading the body.
    for _ in range(100):
        text = requests.get(server.url + "/metrics", timeout=10).text
        if metric(text, "vigil_http_requests_total", route="/v1/detect", status="499"):
            break
        threading.Event().wait(0.05)
    assert metric(text, "vigil_http_requests_total", route="/v1/detect", status="499") == 1
    assert "500" not in {line.split('status="')[1][:3] for line in text.splitlines() if 'status="' in line}
    assert metric(text, "vigil_http_requests_total", route="unmatched") == 0
    requests.get(server.url + "/no/such/route", timeout=10)
    text = requests.get(server.url + "/metrics", timeout=10).text
    assert metric(text, "vigil_http_requests_total", route="unmatched", status="404") == 1


def test_batches_over_the_caps_are_refused_with_503_and_retry_after(serve, detector, test_images):
    image = test_images["real"][0].read_bytes()
    server = serve(detector, max_concurrent_batches=1, max_bytes_in_flight=50_000)
    files = [("file", (f"{i}.png", image, "image/png")) for i in range(2)]
    assert requests.post(server.url + "/v1/detect/batch", files=files, timeout=30).status_code == 200

    big = [("file", (f"{i}.png", padded_png(30_000, seed=i), "image/png")) for i in range(2)]
    refused = requests.post(server.url + "/v1/detect/batch", files=big, timeout=30)
    assert refused.status_code == 503 and refused.json()["error"] == "busy", refused.text
    assert "serving.max_bytes_in_flight=50,000" in refused.json()["message"]
    assert int(refused.headers["Retry-After"]) >= 1

    # One batch in progress (its body still arriving) and a second one is refused at once.
    body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
    head = (
        "POST /v1/detect/batch HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        "Content-Length: 2000\r\n\r\n"
    )
    release = threading.Event()
    holder = threading.Thread(target=raw_request, args=(server.url, head, [body], release), daemon=True)
    holder.start()
    try:
        for _ in range(600):  # until the server has it in progress
            text = requests.get(server.url + "/metrics", timeout=10).text
            if metric(text, "vigil_batches_in_progress") == 1:
                break
            threading.Event().wait(0.05)
        assert metric(text, "vigil_request_bytes_in_flight") == 2000
        second = requests.post(server.url + "/v1/detect/batch", files=files, timeout=30)
        assert second.status_code == 503 and "serving.max_concurrent_batches=1" in second.json()["message"]
    finally:
        release.set()
        holder.join(timeout=60)


def test_concurrent_batch_uploads_stay_within_the_memory_bound(trained_dir, tmp_path):
    """Four concurrent 96 MB batches against a 200 MB cap on bytes in flight: two are admitted, two get
    503, and the server's resident memory grows by less than 1.5x the cap (before the cap, all four were
    taken and each cost about 3x its size)."""
    import psutil

    cap = 200_000_000
    files = [("file", (f"{i}.png", padded_png(12_000_000, seed=i), "image/png")) for i in range(8)]
    with serving_process(
        tmp_path,
        trained_dir,
        VIGIL_SERVING__MAX_UPLOAD_BYTES="12500000",
        VIGIL_SERVING__MAX_BATCH_IMAGES="8",
        VIGIL_SERVING__MAX_CONCURRENT_BATCHES="4",
        VIGIL_SERVING__MAX_BYTES_IN_FLIGHT=str(cap),
        VIGIL_SERVING__UPLOAD_CACHE_ITEMS="0",
    ) as service:
        warm = requests.post(service.url + "/v1/detect/batch", files=files[:2], timeout=60)
        assert warm.status_code == 200, warm.text
        process = psutil.Process(service.pid)
        baseline = process.memory_info().rss
        peak, stop = baseline, threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.wait(0.01):
                peak = max(peak, process.memory_info().rss)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        with ThreadPoolExecutor(4) as pool:
            answers = list(
                pool.map(
                    lambda _: requests.post(service.url + "/v1/detect/batch", files=files, timeout=120),
                    range(4),
                )
            )
        stop.set()
        sampler.join()
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) <= {200, 503} and 200 in statuses, [a.text[:200] for a in answers]
    assert all(a.headers.get("Retry-After") for a in answers if a.status_code == 503)
    assert peak - baseline < 1.5 * cap, f"RSS grew {(peak - baseline) / 1e6:.0f} MB (cap {cap / 1e6:.0f} MB)"


def test_the_access_log_has_paths_without_query_strings(trained_dir, tmp_path):
    with serving_process(tmp_path, trained_dir) as service:
        assert requests.get(service.url + "/healthz?token=s3cr3t-in-the-url", timeout=10).status_code == 200
    log = (tmp_path / "serving.log").read_text()
    assert '"GET /healthz" 200' in log, log[-2000:]
    assert "s3cr3t" not in log


def test_the_upload_cache_holds_its_cap_under_concurrency_and_across_servers(
    serve, detector, test_images, tmp_path
):
    from tests.helpers.serve import make_settings

    cap = 10
    settings = make_settings(tmp_path / "shared", upload_cache_items=cap)  # live and sandbox share a home
    live, sandbox = serve(detector, settings=settings), serve(detector, settings=settings)
    folder = settings.home / "serving" / "uploads"
    images = [p.read_bytes() for p in test_images["real"] + test_images["fake"]]
    most, stop = 0, threading.Event()

    def watch() -> None:
        nonlocal most
        while not stop.is_set():
            most = max(most, sum(1 for p in folder.iterdir() if not p.name.startswith(".")))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()

    def upload(i: int) -> int:
        server = (live, sandbox)[i % 2]
        return requests.post(
            server.url + "/v1/detect",
            files={"file": ("a.png", images[i % len(images)], "image/png")},
            timeout=60,
        ).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(upload, range(60)))
    stop.set()
    watcher.join()
    assert statuses == [200] * 60
    assert most <= cap
    assert sum(1 for p in folder.iterdir() if not p.name.startswith(".")) == cap


def test_the_openapi_schema_declares_the_error_shape_the_api_returns(serve, detector):
    server = serve(detector)
    schema = requests.get(server.url + "/openapi.json", timeout=10).json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    assert set(schema["components"]["schemas"]["ErrorBody"]["required"]) == {"error", "message"}
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorBody"), (method, path, status)
    # And that is what an error really looks like.
    answer = requests.post(server.url + "/v1/detect?explain=maybe", files={"file": ("a", b"x")}, timeout=10)
    assert answer.status_code == 422 and set(answer.json()) >= {"error", "message"}
