"""Benchmarks of the detection API on loopback, each printing one table with its baseline and the ratio.

Every mode starts ``python -m tasks.serve`` as a subprocess (the untrained tiny detector, built offline:
the forward pass costs the same as a trained one). ``--code DIR`` runs the server from another checkout
(e.g. the previous release, for before/after numbers of a fix); by default this one.

* default (load): N concurrent clients for T seconds each (asyncio + aiohttp, each client posting one
  demo PNG after the other), micro-batching OFF (baseline: one ``Detector.score`` per request) against
  ON: throughput, p50/p99 latency, errors and the server's peak RSS.
* ``--scenario slow-urls``: upload latency alone (baseline), then while 8 clients ask for URLs on a
  loopback host that sends one byte a second (``serving.allow_private_urls`` on for the run).
* ``--scenario batches``: the server's RSS before (baseline) and during 4 concurrent batch uploads of
  ``serving.max_batch_images`` images of ``serving.max_upload_bytes`` each (the largest a client may send).
* ``--soak SECONDS``: mixed traffic (uploads, batches, URL input, feedback) for a bounded time, the
  server's RSS sampled every ``--sample-s`` seconds against the RSS after warm-up (baseline).

    PYTHONPATH=. python bench/serve.py [--clients 16] [--seconds 15] [--warmup 2]
    PYTHONPATH=. python bench/serve.py --scenario slow-urls [--code ../previous-checkout]
    PYTHONPATH=. python bench/serve.py --scenario batches
    PYTHONPATH=. python bench/serve.py --soak 60
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_detector(dest: Path) -> Path:
    from tasks.model.card import card_for
    from tasks.model.config import load_config
    from tasks.model.vlm import load_base, save_detector
    from tasks.settings import Settings

    config = load_config(None, Settings())
    model, preprocessor = load_base(config, dest / "cache")
    return save_detector(dest / "detector", model, preprocessor, card_for(config), config)


def demo_images(dest: Path, count: int) -> list[bytes]:
    from tasks.demo.data import DemoSpec, generate

    root = generate(dest, DemoSpec(generator="A", per_split=(("test", count // 2),)))
    return [p.read_bytes() for p in sorted(root.rglob("*.png"))][:count]


class PeakRss:
    """Samples a process's resident memory every 100 ms; ``peak`` in bytes."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.process, self.peak, self._stop = psutil.Process(pid), 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except Exception:  # noqa: BLE001 - the process ended
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


async def load(url: str, images: list[bytes], clients: int, seconds: float, warmup: float) -> dict:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    start = time.monotonic()
    measure_from, end = start + warmup, start + warmup + seconds

    async def client(index: int, session: aiohttp.ClientSession) -> None:
        nonlocal errors
        i = index
        while (now := time.monotonic()) < end:
            form = aiohttp.FormData()
            form.add_field("file", images[i % len(images)], filename="a.png", content_type="image/png")
            i += clients
            try:
                async with session.post(url + "/v1/detect", data=form) as response:
                    await response.read()
                    ok = response.status == 200
            except aiohttp.ClientError:
                ok = False
            done = time.monotonic()
            if now >= measure_from:
                if ok:
                    latencies.append(done - now)
                else:
                    errors += 1

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(client(i, session) for i in range(clients)))
    latencies.sort()

    def pick(q: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")
        )

    return {
        "requests": len(latencies),
        "throughput": len(latencies) / seconds,
        "p50": pick(0.50),
        "p99": pick(0.99),
        "errors": errors,
    }


@contextmanager
def server(name: str, detector: Path, tmp: Path, args, **env: str):
    """The detection API from ``args.code`` on a free port, ready; yields the stack Service."""
    from tasks import stack

    port = stack.free_port()
    code = Path(args.code).resolve()
    if "rate_limits" in (code / "tasks" / "settings.py").read_text():
        # One client address drives all the load here: per-client rate limits would measure themselves.
        env = {
            "VIGIL_SERVING__RATE_LIMITS__DETECT": "null",
            "VIGIL_SERVING__RATE_LIMITS__FEEDBACK": "null",
            **env,
        }
    env = {
        "VIGIL_HOME": str(tmp / name),
        "VIGIL_STORE_URL": (tmp / name / "store").as_uri(),
        "VIGIL_INBOX": str(tmp / name / "inbox"),
        "PYTHONPATH": os.pathsep.join([str(Path(args.code).resolve()), os.environ.get("PYTHONPATH", "")]),
        **env,
    }
    cmd = [sys.executable, "-m", "tasks.serve", "--port", str(port), "--model", str(detector)]
    service = stack.start(
        f"serving-{name}",
        cmd,
        port=port,
        health_path="/readyz",
        log=tmp / f"{name}.log",
        env=env,
        cwd=Path(args.code).resolve(),  # python -m puts the working directory first on the path
    )
    try:
        stack.wait_healthy(service, timeout=120)
        yield service
    finally:
        stack.stop(service)


def run_server(mode: str, detector: Path, tmp: Path, images: list[bytes], args) -> dict:
    env = {
        "VIGIL_SERVING__MICRO_BATCHING": str(mode == "on").lower(),
        "VIGIL_SERVING__MICRO_BATCH_SIZE": str(args.batch_size),
        "VIGIL_SERVING__MICRO_BATCH_WAIT_MS": str(args.wait_ms),
    }
    with server(mode, detector, tmp, args, **env) as service:
        rss = PeakRss(service.pid)
        result = asyncio.run(load(service.url, images, args.clients, args.seconds, args.warmup))
        result["peak_rss_mb"] = rss.stop() / 2**20
    return result


class DripHost:
    """A loopback host that answers every request one byte a second, status line and headers included
    (``size`` bytes in all): no single read ever waits long, so only a total deadline stops it."""

    def __init__(self, size: int) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: "
        body_size = max(1, size - len(head) - 8)
        self.response = head + f"{body_size}\r\n\r\n".encode() + b"\x89" * body_size
        self.active, self.stopped = 0, threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        response = self.response
        self.active += 1
        try:
            conn.recv(65536)
            for i in range(len(response)):
                if self.stopped.wait(1.0):
                    return
                conn.sendall(response[i : i + 1])
        except OSError:
            return
        finally:
            self.active -= 1
            conn.close()

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()


def upload_ms(url: str, image: bytes, timeout: float = 120) -> float:
    import requests

    started = time.perf_counter()
    try:
        answer = requests.post(
            url + "/v1/detect", files={"file": ("a.png", image, "image/png")}, timeout=timeout
        )
        answer.raise_for_status()
    except requests.RequestException:
        return float("inf")
    return (time.perf_counter() - started) * 1000


def slow_urls(detector: Path, tmp: Path, images: list[bytes], args) -> int:
    import requests

    drip = DripHost(size=args.drip_bytes)
    rows = []
    with server("slow-urls", detector, tmp, args, VIGIL_SERVING__ALLOW_PRIVATE_URLS="true") as service:
        for image in images[:5]:
            upload_ms(service.url, image)  # warm-up
        alone = [upload_ms(service.url, image) for image in images[:10]]
        pool = ThreadPoolExecutor(8)

        def fetch_url(i: int) -> tuple[requests.Response, float]:
            sent = time.monotonic()
            answer = requests.post(
                service.url + "/v1/detect", json={"url": f"{drip.url}/{i}.png"}, timeout=600
            )
            return answer, time.monotonic() - sent

        fetches = [pool.submit(fetch_url, i) for i in range(8)]
        seen, steady = 0, time.monotonic()  # until the server has opened all the connections it will
        while drip.active < 8 and time.monotonic() - steady < 1.0:
            if drip.active > seen:
                seen, steady = drip.active, time.monotonic()
            time.sleep(0.02)
        in_flight = drip.active
        under = [upload_ms(service.url, image) for image in images[:10]]
        results = [future.result() for future in fetches]
        answers = [answer for answer, _ in results]
        slowest_fetch = max(took for _, took in results)
        pool.shutdown()
    drip.close()
    rows.append(("uploads alone (baseline)", statistics.median(alone), max(alone), ""))
    codes = sorted({a.json().get("error", a.status_code) for a in answers})
    rows.append(
        (
            f"uploads while 8 URL clients get {len(drip.response)} bytes at 1 byte/s "
            f"({in_flight} fetches dripping)",
            statistics.median(under),
            max(under),
            f"URL answers: {', '.join(map(str, codes))}; slowest {slowest_fetch:.0f} s",
        )
    )
    print(
        f"\n/v1/detect upload latency, code {Path(args.code).resolve()}, {os.cpu_count()} CPU cores, loopback\n"
    )
    print("| situation | upload p50 (ms) | upload max (ms) | notes |")
    print("| --- | ---: | ---: | --- |")
    for name, p50, worst, notes in rows:
        print(f"| {name} | {p50:.0f} | {worst:.0f} | {notes} |")
    print(f"| ratio | {rows[1][1] / rows[0][1]:.1f}x | {rows[1][2] / rows[0][2]:.1f}x | |")
    return 0


def padded_png(size: int, seed: int) -> bytes:
    """A valid 64x64 PNG of ``size`` bytes: random bytes after its end carry the bulk (decoders keep none
    of it), so the server's memory follows the bytes it was sent."""
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        buf, "PNG"
    )
    png = buf.getvalue()
    return png + np.random.default_rng(seed + 1).bytes(size - len(png))


def batches(detector: Path, tmp: Path, images: list[bytes], args) -> int:
    import psutil
    import requests

    from tasks.settings import ServingSettings

    defaults = ServingSettings()
    per_image = defaults.max_upload_bytes - 4096
    files = [
        ("file", (f"{i}.png", padded_png(per_image, i), "image/png"))
        for i in range(defaults.max_batch_images)
    ]
    body_mb = sum(len(f[1][1]) for f in files) / 1e6
    with server("batches", detector, tmp, args) as service:
        process = psutil.Process(service.pid)
        requests.post(service.url + "/v1/detect/batch", files=files[:2], timeout=120)  # warm-up
        baseline = process.memory_info().rss
        rss = PeakRss(service.pid)
        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            answers = list(
                pool.map(
                    lambda _: requests.post(service.url + "/v1/detect/batch", files=files, timeout=600),
                    range(4),
                )
            )
        took = time.monotonic() - started
        peak = rss.stop()
    admitted = sum(a.status_code == 200 for a in answers)
    statuses = ", ".join(f"{code} x{n}" for code, n in sorted(_count(a.status_code for a in answers).items()))
    print(
        f"\n4 concurrent /v1/detect/batch uploads of {len(files)} x {per_image / 1e6:.1f} MB ({body_mb:.0f} MB each), "
        f"code {Path(args.code).resolve()}, {os.cpu_count()} CPU cores\n"
    )
    print("| | server RSS (MB) | growth (MB) | answers | time (s) |")
    print("| --- | ---: | ---: | --- | ---: |")
    print(f"| idle, after warm-up (baseline) | {baseline / 1e6:.0f} | | | |")
    print(
        f"| peak during the 4 uploads | {peak / 1e6:.0f} | {(peak - baseline) / 1e6:.0f} | {statuses} | {took:.1f} |"
    )
    print(
        f"| ratio peak / baseline | {peak / baseline:.2f}x | growth per admitted body byte "
        f"{(peak - baseline) / 1e6 / (body_mb * max(1, admitted)):.2f}x | | |"
    )
    return 0


def _count(values) -> dict:
    counts: dict = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def soak(detector: Path, tmp: Path, images: list[bytes], args) -> int:
    import psutil
    import requests

    host = ImageHost(images[0])
    env = {
        "VIGIL_SERVING__ALLOW_PRIVATE_URLS": "true",
        "VIGIL_SERVING__UPLOAD_CACHE_ITEMS": "200",
    }
    counts = {"requests": 0, "errors": 0, "busy": 0}
    lock = threading.Lock()
    with server("soak", detector, tmp, args, **env) as service:
        process = psutil.Process(service.pid)
        url = service.url

        def one(i: int) -> None:
            kind = i % 10
            if kind < 6:
                answer = requests.post(
                    url + "/v1/detect", files={"file": ("a.png", images[i % len(images)])}, timeout=60
                )
                if answer.ok and kind == 0:
                    answer = requests.post(
                        url + "/v1/feedback",
                        json={"prediction_id": answer.json()["prediction_id"], "label": "synthetic"},
                        timeout=60,
                    )
            elif kind < 8:
                files = [("file", (f"{j}.png", images[(i + j) % len(images)])) for j in range(4)]
                answer = requests.post(url + "/v1/detect/batch", files=files, timeout=60)
            else:
                answer = requests.post(url + "/v1/detect", json={"url": host.url}, timeout=60)
            with lock:
                counts["requests"] += 1
                counts["busy"] += answer.status_code == 503  # load shed by a cap, with Retry-After
                counts["errors"] += not answer.ok and answer.status_code != 503

        def client(index: int, end: float) -> None:
            i = index
            while time.monotonic() < end:
                try:
                    one(i)
                except requests.RequestException:
                    with lock:
                        counts["errors"] += 1
                i += args.clients

        warm_end = time.monotonic() + args.warmup
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(lambda c: client(c, warm_end), range(args.clients)))
        baseline = process.memory_info().rss
        counts.update(requests=0, errors=0, busy=0)
        samples = [(0.0, 0, baseline)]
        started = time.monotonic()
        end = started + args.soak
        with ThreadPoolExecutor(args.clients) as pool:
            futures = [pool.submit(client, c, end) for c in range(args.clients)]
            while time.monotonic() < end:
                time.sleep(min(args.sample_s, max(0.0, end - time.monotonic())))
                samples.append((time.monotonic() - started, counts["requests"], process.memory_info().rss))
            for future in futures:
                future.result()
    host.close()
    print(
        f"\nsoak: {args.clients} clients x {args.soak:g} s of mixed traffic (60% uploads, 20% batches of 4, "
        f"20% URL input, feedback on every 10th), code {Path(args.code).resolve()}, {os.cpu_count()} CPU cores\n"
    )
    print("| time (s) | requests | server RSS (MB) | growth since baseline (MB) | ratio to baseline |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for at, done, rss in samples:
        label = " (baseline, after warm-up)" if at == 0 else ""
        print(
            f"| {at:.0f}{label} | {done} | {rss / 1e6:.0f} | {(rss - baseline) / 1e6:+.0f} | {rss / baseline:.2f}x |"
        )
    print(
        f"\n{counts['requests']} requests: {counts['busy']} answered 503 busy (a cap shed them, with Retry-After), "
        f"{counts['errors']} errors"
    )
    return 0 if counts["errors"] == 0 else 1


class ImageHost:
    """A loopback host serving one image for the soak's URL input."""

    def __init__(self, image: bytes) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(image)))
                self.end_headers()
                self.wfile.write(image)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/a.png"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (load, soak)")
    parser.add_argument("--seconds", type=float, default=15, help="measured seconds per mode (load)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of load before measuring")
    parser.add_argument("--batch-size", type=int, default=16, help="serving.micro_batch_size (load)")
    parser.add_argument("--wait-ms", type=float, default=5, help="serving.micro_batch_wait_ms (load)")
    parser.add_argument("--scenario", choices=("load", "slow-urls", "batches"), default="load")
    parser.add_argument(
        "--soak", type=float, default=None, metavar="SECONDS", help="run the soak for SECONDS"
    )
    parser.add_argument("--sample-s", type=float, default=10, help="RSS sampling interval of the soak")
    parser.add_argument(
        "--drip-bytes", type=int, default=90, help="response size of the slow-drip host (slow-urls)"
    )
    parser.add_argument(
        "--code", default=str(Path(__file__).resolve().parents[1]), help="checkout the server runs from"
    )
    args = parser.parse_args()

    import logging

    logging.disable(logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="vigil-bench-serve-"))
    detector = build_detector(tmp)
    images = demo_images(tmp / "demo", 32)
    if args.soak is not None:
        return soak(detector, tmp, images, args)
    if args.scenario == "slow-urls":
        return slow_urls(detector, tmp, images, args)
    if args.scenario == "batches":
        return batches(detector, tmp, images, args)
    results = {mode: run_server(mode, detector, tmp, images, args) for mode in ("off", "on")}

    off, on = results["off"], results["on"]
    print(
        f"\n/v1/detect, tiny detector (56x56 PNG), {args.clients} clients x {args.seconds:g} s per mode, "
        f"{os.cpu_count()} CPU cores, loopback\n"
    )
    print(
        "| micro-batching | requests | throughput (req/s) | p50 (ms) | p99 (ms) | errors | server peak RSS (MB) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for mode, r in (("OFF (baseline)", off), (f"ON (size {args.batch_size}, wait {args.wait_ms:g} ms)", on)):
        print(
            f"| {mode} | {r['requests']} | {r['throughput']:.1f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['errors']} "
            f"| {r['peak_rss_mb']:.0f} |"
        )
    ratio = lambda key: on[key] / off[key] if off[key] else float("nan")  # noqa: E731
    print(
        f"| ratio ON / OFF | | {ratio('throughput'):.2f}x | {ratio('p50'):.2f}x | {ratio('p99'):.2f}x | "
        f"| {ratio('peak_rss_mb'):.2f}x |"
    )
    return 0 if on["errors"] == off["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
