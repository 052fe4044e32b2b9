"""The smoke test of a serving app: ready, the expected model version, right on known images, fast enough.

The deploy DAG runs it twice: against a sandbox on the new version (before any live traffic sees it)
and against the live server after the roll-out. Known images are a fixed sample of the version's own
test split (``deploy.smoke_images_per_class`` per label, by image id).
"""

from __future__ import annotations

import json
import logging
import secrets
import statistics
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from tasks.data.snapshots import read_snapshot
from tasks.registry import Registry, Tags
from tasks.settings import Settings
from tasks.storage import ObjectStore

log = logging.getLogger("vigil.deploy")


class DeployError(RuntimeError):
    """A deployment step failed; the message says which check and with what numbers."""


@dataclass(frozen=True)
class KnownImage:
    image_id: str
    data: bytes
    label: str  # "real" or "fake"


def model_uri(settings: Settings, version: str, model_name: str | None = None) -> str:
    return f"models:/{model_name or settings.model_name}/{version}"


def is_second_stage(settings: Settings, model_name: str | None) -> bool:
    """Whether a deployment is of the VLM: the cascade's second stage, next to the serving model."""
    return bool(model_name) and model_name == settings.vlm_model_name and model_name != settings.model_name


def known_images(
    settings: Settings, version: str, store: ObjectStore | None = None, model_name: str | None = None
) -> list[KnownImage]:
    """A fixed sample of the version's own test split: ``smoke_images_per_class`` per label, by image id."""
    store = store or ObjectStore.from_settings(settings)
    snapshot = Registry(settings, name=model_name).get(version).tags.get(Tags.SNAPSHOT) or "latest"
    table = read_snapshot(store, snapshot).labeled("test").sort_values("image_id")
    per_class = settings.deploy.smoke_images_per_class
    picked = [
        row
        for label in ("real", "fake")
        for row in table[table["label"] == label].head(per_class).itertuples()
    ]
    if not picked:
        raise DeployError(f"snapshot {snapshot} has no labeled test images to smoke-test with")
    return [KnownImage(row.image_id, store.read_bytes(row.key), row.label) for row in picked]


# -- HTTP -----------------------------------------------------------------------------------------


def request(
    url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 60.0
) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        url, data=data, headers=headers or {}, method="POST" if data is not None else "GET"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, {"message": body.decode(errors="replace")[:500]}


def _detect(base_url: str, image: KnownImage, explain: bool = False) -> tuple[int, dict[str, Any], float]:
    boundary = secrets.token_hex(16)
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{image.image_id}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + image.data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    started = time.perf_counter()
    status, answer = request(
        f"{base_url}/v1/detect" + ("?explain=true" if explain else ""),
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    return status, answer, (time.perf_counter() - started) * 1000


def wait_ready(base_url: str, timeout: float) -> dict[str, Any]:
    """Poll ``/readyz`` until the model is loaded."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            status, answer = request(f"{base_url}/readyz", timeout=5)
            if status == 200:
                return answer
            last = answer
        except OSError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise DeployError(f"{base_url} not ready after {timeout:.0f}s: {last}")


# -- the smoke test -------------------------------------------------------------------------------


def smoke_test(
    settings: Settings,
    base_url: str,
    version: str,
    images: list[KnownImage],
    *,
    second_stage: bool = False,
) -> dict[str, Any]:
    """Ready, right version, accurate enough on known images, fast enough; raises :class:`DeployError`.

    ``second_stage``: the version is the cascade's VLM behind the serving model, so every request asks
    for an explanation (``explain=true`` sends an image to the VLM, which then decides and answers).
    """
    deploy = settings.deploy
    wait_ready(base_url, deploy.startup_timeout_s)
    latencies, correct, problems = [], 0, []
    for image in images:
        status, answer, latency_ms = _detect(base_url, image, explain=second_stage)
        if status != 200:
            problems.append(f"{image.image_id}: HTTP {status} {answer.get('message', answer)}")
            continue
        served = str((answer.get("model") or {}).get("version"))
        if served != str(version):
            problems.append(f"{image.image_id}: answered by version {served}, expected {version}")
        latencies.append(latency_ms)
        # The model's verdict (P(fake) at its threshold), so an "uncertain" answer in the abstain band
        # counts for what the model leans to.
        correct += (answer["p_fake"] >= answer["threshold"]) == (image.label == "fake")
    accuracy = correct / len(images)
    p95 = (
        statistics.quantiles(latencies, n=20)[-1] if len(latencies) > 1 else (latencies or [float("inf")])[0]
    )
    result = {
        "url": base_url,
        "version": str(version),
        "images": len(images),
        "accuracy": accuracy,
        "p50_ms": statistics.median(latencies) if latencies else None,
        "p95_ms": p95,
        "errors": problems,
    }
    if accuracy < deploy.smoke_min_accuracy:
        problems.append(
            f"accuracy on {len(images)} known images {accuracy:.2f} < {deploy.smoke_min_accuracy}"
        )
    if p95 > deploy.smoke_max_p95_ms:
        problems.append(f"p95 latency {p95:.0f} ms > {deploy.smoke_max_p95_ms:.0f} ms")
    if problems:
        raise DeployError(
            f"smoke test of version {version} at {base_url} failed: " + "; ".join(problems[:10])
        )
    log.info(
        "smoke test of version %s at %s passed: accuracy %.2f on %d known images, p95 %.0f ms",
        version,
        base_url,
        accuracy,
        len(images),
        p95,
    )
    return result
