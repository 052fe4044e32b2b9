"""Admin token, hot reload under load with no failed request, and a start before any champion exists."""

from __future__ import annotations

import os
import sys
import threading
import uuid
from collections import Counter

import requests

from tasks import stack
from tests.helpers.serve import ADMIN_TOKEN, register

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def detect(url: str, data: bytes) -> requests.Response:
    return requests.post(url + "/v1/detect", files={"file": ("a.png", data, "image/png")}, timeout=60)


def test_admin_needs_the_token_and_a_failed_reload_keeps_the_old_model(
    serve, detector, test_images, tmp_path
):
    server = serve(detector)
    reload_url = server.url + "/admin/reload"

    for headers in (
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        {"Authorization": "Bearer"},
    ):
        refused = requests.post(reload_url, headers=headers, timeout=10)
        assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
        assert refused.headers["WWW-Authenticate"] == "Bearer"

    # Registry URIs of this server's model only: no folders, no artifact stores, no other model.
    for model in (
        str(tmp_path / "detector"),
        "file:///etc",
        "s3://bucket/model",
        "runs:/0123/model",
        "models:/other-model/1",
        "models:/vigil-detector@x/../1",
    ):
        refused = requests.post(reload_url, headers=AUTH, json={"model": model}, timeout=60)
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_model_uri", refused.text
        assert "models:/vigil-detector/<version>" in refused.json()["message"]
        assert len(refused.json()["message"]) < 600
    huge = requests.post(reload_url, headers=AUTH, json={"model": "models:/x/1" + "0" * 50_000}, timeout=60)
    assert huge.status_code == 422 and len(huge.json()["message"]) < 600  # the input is not echoed whole
    assert detect(server.url, test_images["real"][0].read_bytes()).status_code == 200
    assert requests.get(server.url + "/readyz", timeout=10).json()["model"]["source"] == detector.source
    bad_body = requests.post(reload_url, headers=AUTH, json={"modle": "x"}, timeout=10)
    assert bad_body.status_code == 422 and bad_body.json()["field"] == "modle"

    disabled = serve(detector, admin_token=None)
    answer = requests.post(disabled.url + "/admin/reload", headers=AUTH, timeout=10)
    assert answer.status_code == 403 and answer.json()["error"] == "admin_disabled"
    assert "admin disabled" in answer.json()["message"]


def test_reload_under_concurrent_requests_fails_none(serve, trained_dir, mlflow_server, test_images):
    name = f"serve-{uuid.uuid4().hex[:8]}"
    first = register(mlflow_server, trained_dir, name)
    second = register(mlflow_server, trained_dir, name, alias="champion")
    server = serve(f"models:/{name}/{first}", mlflow_uri=mlflow_server, model_name=name)
    assert server.wait_ready()["model"]["version"] == first
    images = [p.read_bytes() for p in test_images["real"][:2] + test_images["fake"][:2]]
    statuses: Counter = Counter()
    versions: Counter = Counter()
    stop = threading.Event()

    def client(index: int) -> None:
        while not stop.is_set():
            try:
                response = detect(server.url, images[index % len(images)])
            except requests.RequestException as exc:  # a dropped connection counts as a failure
                statuses[type(exc).__name__] += 1
                continue
            statuses[response.status_code] += 1
            if response.status_code == 200:
                versions[response.json()["model"]["version"]] += 1

    clients = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for thread in clients:
        thread.start()
    try:
        # The default source is models:/{model_name}@{serving.model_alias}: the champion, version `second`.
        swapped = requests.post(server.url + "/admin/reload", headers=AUTH, timeout=120)
        assert swapped.status_code == 200, swapped.text
        assert swapped.json()["model"]["version"] == second and swapped.json()["previous"]["version"] == first
        back = requests.post(
            server.url + "/admin/reload", headers=AUTH, json={"model": f"models:/{name}/{first}"}, timeout=120
        )
        assert back.status_code == 200 and back.json()["model"]["version"] == first
        before = sum(statuses.values())
        while sum(statuses.values()) < before + 8:  # and some more requests on the reloaded model
            threading.Event().wait(0.05)
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=60)

    assert set(statuses) == {200}, statuses
    # A version the registry does not have: 409, and the model keeps serving.
    missing = requests.post(
        server.url + "/admin/reload", headers=AUTH, json={"model": f"models:/{name}/999"}, timeout=120
    )
    assert missing.status_code == 409 and missing.json()["error"] == "reload_failed", missing.text
    assert "still serving" in missing.json()["message"]
    missing_alias = requests.post(
        server.url + "/admin/reload", headers=AUTH, json={"model": f"models:/{name}@nobody"}, timeout=120
    )
    assert missing_alias.status_code == 409, missing_alias.text
    assert versions[first] > 0 and versions[second] > 0, versions
    metrics = requests.get(server.url + "/metrics", timeout=10).text
    assert f'vigil_model_info{{name="{name}",version="{first}"}} 1.0' in metrics
    assert 'vigil_model_reloads_total{outcome="success"} 3.0' in metrics


def test_the_server_starts_without_a_champion_and_becomes_ready_on_reload(
    tmp_path, mlflow_server, trained_dir, test_images
):
    name = f"serve-{uuid.uuid4().hex[:8]}"  # nothing registered under this name yet
    port = stack.free_port()
    env = {
        "VIGIL_HOME": str(tmp_path / "home"),
        "VIGIL_STORE_URL": (tmp_path / "store").as_uri(),
        "VIGIL_INBOX": str(tmp_path / "inbox"),
        "MLFLOW_TRACKING_URI": mlflow_server,
        "VIGIL_MODEL_NAME": name,
        "VIGIL_ADMIN_TOKEN": ADMIN_TOKEN,
        "PYTHONPATH": os.environ.get("PYTHONPATH", os.getcwd()),
    }
    service = stack.start(
        "serving",
        [sys.executable, "-m", "tasks.serve", "--port", str(port)],
        port=port,
        health_path="/healthz",
        log=tmp_path / "serving.log",
        env=env,
    )
    try:
        stack.wait_healthy(service, timeout=90)
        image = test_images["fake"][0].read_bytes()
        not_ready = requests.get(service.url + "/readyz", timeout=10)
        assert not_ready.status_code == 503 and "no model loaded yet" in not_ready.json()["message"]
        assert f"models:/{name}@champion" in not_ready.json()["message"]
        refused = detect(service.url, image)
        assert refused.status_code == 503 and refused.json()["error"] == "no_model"

        version = register(mlflow_server, trained_dir, name, alias="champion")
        loaded = requests.post(service.url + "/admin/reload", headers=AUTH, timeout=120)

        assert loaded.status_code == 200, loaded.text
        assert loaded.json()["model"]["version"] == version and loaded.json()["previous"] is None
        assert requests.get(service.url + "/readyz", timeout=10).json()["model"]["version"] == version
        answer = detect(service.url, image)
        assert answer.status_code == 200 and answer.json()["model"] == {"name": name, "version": version}
    finally:
        stack.stop(service)
    # SIGTERM is a graceful shutdown: the prediction log was flushed.
    assert list((tmp_path / "store" / "predictions").glob("date=*/*.parquet"))


def test_vigil_serve_is_a_subcommand():
    from tasks.cli import build_parser
    from tasks.serve.cli import run

    args = build_parser().parse_args(["serve", "--port", "8123", "--model", "models:/vigil-detector/7"])
    assert (args.func, args.port, args.model, args.host) == (run, 8123, "models:/vigil-detector/7", None)
