"""Helpers of the serving tests: the app on a real uvicorn on loopback, settings, registry, an image server."""

from __future__ import annotations

import contextlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

from tasks.settings import Settings
from tasks.stack import free_port

ADMIN_TOKEN = "test-admin-token-1234"
RELABEL_TOKEN = "test-curator-token-5678"  # the token "curator", scope relabel (make_settings configures it)


class LiveServer:
    """``create_app(...)`` served by uvicorn in a thread on a free loopback port."""

    def __init__(self, app) -> None:
        import uvicorn

        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.02)

    @property
    def service(self):
        return self.app.state.service

    def wait_ready(self, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = requests.get(self.url + "/readyz", timeout=5)
            if response.status_code == 200:
                return response.json()
            time.sleep(0.1)
        raise TimeoutError(f"{self.url}/readyz not ready after {timeout}s: {response.text}")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def make_settings(
    root: Path,
    *,
    admin_token: str | None = ADMIN_TOKEN,
    mlflow_uri: str | None = None,
    model_name: str = "vigil-detector",
    vlm_model_name: str = "vigil-detector-vlm",
    images: dict | None = None,
    **serving,
) -> Settings:
    """Settings of a test server under ``root``. Rate limits are off unless a test sets them (the tests
    send many requests from one address); the token ``curator`` has the relabel scope."""
    import hashlib

    extra = {"mlflow_tracking_uri": mlflow_uri} if mlflow_uri else {}
    curator = {
        "name": "curator",
        "sha256": hashlib.sha256(RELABEL_TOKEN.encode()).hexdigest(),
        "scopes": ["relabel"],
    }
    serving = {
        "micro_batch_wait_ms": 2,
        "rate_limits": {"detect": None, "feedback": None},
        "tokens": [curator],
        **serving,
    }
    return Settings(
        home=root / "home",
        store_url=(root / "store").as_uri(),
        inbox=str(root / "inbox"),
        admin_token=admin_token,
        model_name=model_name,
        vlm_model_name=vlm_model_name,
        images=images or {},
        serving=serving,
        **extra,
    )


def register(mlflow_uri: str, folder: Path, name: str, alias: str | None = None) -> str:
    """Register ``folder`` as a new version of ``name`` the way training does; optionally alias it."""
    import mlflow

    from tasks.registry import Registry
    from tasks.train.tracking import log_and_register

    settings = Settings(mlflow_tracking_uri=mlflow_uri, model_name=name)
    mlflow.set_tracking_uri(mlflow_uri)
    mlflow.set_registry_uri(mlflow_uri)
    mlflow.set_experiment("serving-tests")
    with mlflow.start_run():
        version = log_and_register(folder, settings, tags={"test": "serving"}, description="serving test")[
            "version"
        ]
    if alias:
        Registry(settings).client.set_registered_model_alias(name, alias, version)
    return version


class ImageHost:
    """A loopback HTTP server for URL input: ``route(path, status, body, headers, delay)``."""

    def __init__(self) -> None:
        routes: dict[str, tuple[int, bytes, dict[str, str], float]] = {}
        self.routes = routes
        self.hits = 0
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                host.hits += 1
                status, body, headers, delay = routes.get(self.path, (404, b"not found", {}, 0.0))
                time.sleep(delay)
                self.send_response(status)
                for key, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(key, value)
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def route(
        self,
        path: str,
        body: bytes = b"",
        status: int = 200,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
    ) -> str:
        self.routes[path] = (status, body, headers or {}, delay)
        return self.url + path

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class DripServer:
    """A loopback HTTP server that answers one byte every ``interval`` seconds (a slow-drip attacker).

    ``phase="body"``: the headers at once (``Content-Length: size``), then the body byte by byte;
    ``phase="headers"``: even the status line drips. ``active`` counts connections being dripped to;
    ``sent`` the body bytes sent in all. ``close()`` ends every drip.
    """

    def __init__(self, phase: str = "body", size: int = 1000, interval: float = 0.5) -> None:
        import socket

        self.phase, self.size, self.interval = phase, size, interval
        self.active = 0
        self.sent = 0
        self.lock = threading.Lock()
        self.stopped = threading.Event()
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

    def _drip(self, conn) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {self.size}\r\n\r\n".encode()
        with self.lock:
            self.active += 1
        try:
            conn.settimeout(5)
            conn.recv(65536)  # the request
            if self.phase == "body":
                conn.sendall(head)
                payload = b"\x89" * self.size
            else:
                payload = head
            for i in range(len(payload)):
                if self.stopped.wait(self.interval):
                    return
                conn.sendall(payload[i : i + 1])
                if self.phase == "body":
                    with self.lock:
                        self.sent += 1
        except OSError:
            return  # the client gave up
        finally:
            with self.lock:
                self.active -= 1
            conn.close()

    def wait_active(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.active < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {self.active} of {count} connections reached {self.url}")
            time.sleep(0.02)

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()


@contextlib.contextmanager
def serving_process(root: Path, model: Path, **env: str):
    """``python -m tasks.serve`` as its own process (its RSS and its log are its own), ready on a free
    port; ``env``: extra ``VIGIL_*`` variables. Yields the :class:`tasks.stack.Service`."""
    import os
    import sys

    from tasks import stack

    port = stack.free_port()
    service = stack.start(
        "serving",
        [sys.executable, "-m", "tasks.serve", "--port", str(port), "--model", str(model)],
        port=port,
        health_path="/readyz",
        log=root / "serving.log",
        env={
            "VIGIL_HOME": str(root / "home"),
            "VIGIL_STORE_URL": (root / "store").as_uri(),
            "VIGIL_INBOX": str(root / "inbox"),
            "VIGIL_SERVING__RATE_LIMITS__DETECT": "null",
            "PYTHONPATH": os.environ.get("PYTHONPATH", os.getcwd()),
            **env,
        },
    )
    try:
        stack.wait_healthy(service, timeout=120)
        yield service
    finally:
        stack.stop(service)
