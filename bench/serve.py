"""Load test of the detection API on loopback: micro-batching ON against OFF, same model, same run.

Starts ``python -m tasks.serve`` twice as a subprocess (the untrained tiny detector, built offline: the
forward pass costs the same as a trained one), drives it with N concurrent clients for T seconds each
(asyncio + aiohttp, each client posting one demo PNG after the other) and prints one table:
throughput, p50/p99 latency, errors and the server's peak RSS, with the ON/OFF ratio. The baseline
(OFF) is one ``Detector.score`` call per request.

    PYTHONPATH=. python bench/serve.py [--clients 16] [--seconds 15] [--warmup 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
import time
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


def run_server(mode: str, detector: Path, tmp: Path, images: list[bytes], args) -> dict:
    from tasks import stack

    port = stack.free_port()
    env = {
        "VIGIL_HOME": str(tmp / mode),
        "VIGIL_STORE_URL": (tmp / mode / "store").as_uri(),
        "VIGIL_INBOX": str(tmp / mode / "inbox"),
        "VIGIL_SERVING__MICRO_BATCHING": str(mode == "on").lower(),
        "VIGIL_SERVING__MICRO_BATCH_SIZE": str(args.batch_size),
        "VIGIL_SERVING__MICRO_BATCH_WAIT_MS": str(args.wait_ms),
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    cmd = [sys.executable, "-m", "tasks.serve", "--port", str(port), "--model", str(detector)]
    service = stack.start(
        f"serving-{mode}", cmd, port=port, health_path="/readyz", log=tmp / f"{mode}.log", env=env
    )
    try:
        stack.wait_healthy(service, timeout=120)
        rss = PeakRss(service.pid)
        result = asyncio.run(load(service.url, images, args.clients, args.seconds, args.warmup))
        result["peak_rss_mb"] = rss.stop() / 2**20
    finally:
        stack.stop(service)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=15, help="measured seconds per mode")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of load before measuring")
    parser.add_argument("--batch-size", type=int, default=16, help="serving.micro_batch_size")
    parser.add_argument("--wait-ms", type=float, default=5, help="serving.micro_batch_wait_ms")
    args = parser.parse_args()

    import logging

    logging.disable(logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="vigil-bench-serve-"))
    detector = build_detector(tmp)
    images = demo_images(tmp / "demo", 32)
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
