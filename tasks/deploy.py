"""Redeploying the detection API after a promotion: sandbox smoke test, roll-out, post-check, rollback.

1. **Sandbox**: the serving app starts on the new champion apart from the live one (embedded: a
   subprocess on a free loopback port; compose: the same command in a throwaway container) and is
   smoke-tested: ready, the expected model version, verdicts on known images (a fixed, seeded sample of
   the model's own test split) at least ``deploy.smoke_min_accuracy`` right, p95 latency within
   ``deploy.smoke_max_p95_ms``.
2. **Roll-out**: ``reload`` — ``POST /admin/reload`` on the running server (it swaps models without
   failing in-flight requests); ``docker`` — the serving container is recreated with the version
   pinned, through the Docker API, and the old one is removed only once the new one is healthy.
3. **Post-deploy check**: the same smoke test against the live server.

Any failure rolls back: ``champion`` returns to ``previous`` and the server reloads it.
"""

from __future__ import annotations

import json
import logging
import secrets
import statistics
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.settings import Settings

if TYPE_CHECKING:
    from tasks.storage import ObjectStore

log = logging.getLogger("vigil.deploy")


class DeployError(RuntimeError):
    """A deployment step failed; the message says which check and with what numbers."""


@dataclass(frozen=True)
class KnownImage:
    image_id: str
    data: bytes
    label: str  # "real" or "fake"


def model_uri(settings: Settings, version: str) -> str:
    return f"models:/{settings.model_name}/{version}"


def champion_version(
    settings: Settings, requested: str | None = None, event_extras: list[dict] | None = None
) -> str:
    """The form's version, else the triggering ``champion`` event's, else the alias."""
    from tasks.registry import CHAMPION, Registry

    try:
        return Registry(settings).pick(requested, event_extras, CHAMPION)
    except LookupError as exc:
        raise DeployError(f"nothing to deploy: {exc}") from exc


def known_images(settings: Settings, version: str, store: ObjectStore | None = None) -> list[KnownImage]:
    """A fixed sample of the version's own test split: ``smoke_images_per_class`` per label, by image id."""
    from tasks.registry import Registry
    from tasks.snapshots import read_snapshot
    from tasks.storage import ObjectStore

    store = store or ObjectStore.from_settings(settings)
    snapshot = Registry(settings).get(version).tags.get("snapshot") or "latest"
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


def _request(
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


def _detect(base_url: str, image: KnownImage) -> tuple[int, dict[str, Any], float]:
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
    status, answer = _request(
        f"{base_url}/v1/detect",
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
            status, answer = _request(f"{base_url}/readyz", timeout=5)
            if status == 200:
                return answer
            last = answer
        except OSError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise DeployError(f"{base_url} not ready after {timeout:.0f}s: {last}")


# -- the smoke test -------------------------------------------------------------------------------


def smoke_test(settings: Settings, base_url: str, version: str, images: list[KnownImage]) -> dict[str, Any]:
    """Ready, right version, accurate enough on known images, fast enough; raises :class:`DeployError`."""
    deploy = settings.deploy
    wait_ready(base_url, deploy.startup_timeout_s)
    latencies, correct, problems = [], 0, []
    for image in images:
        status, answer, latency_ms = _detect(base_url, image)
        if status != 200:
            problems.append(f"{image.image_id}: HTTP {status} {answer.get('message', answer)}")
            continue
        served = str((answer.get("model") or {}).get("version"))
        if served != str(version):
            problems.append(f"{image.image_id}: answered by version {served}, expected {version}")
        latencies.append(latency_ms)
        correct += (answer["label"] == "synthetic") == (image.label == "fake")
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


@contextmanager
def sandbox(settings: Settings, version: str) -> Iterator[str]:
    """The serving app on ``version`` apart from the live one; yields its URL.

    Embedded: a subprocess on a free loopback port. Compose (``deploy.rollout: docker``): a throwaway
    container of the serving image on the compose network.
    """
    if settings.deploy.rollout == "docker":
        from tasks.docker_rollout import sandbox_container

        with sandbox_container(settings, model_uri(settings, version)) as url:
            yield url
        return
    from tasks.stack import free_port, start, stop

    port = free_port()
    log_file = Path(settings.home) / "deploy" / f"sandbox-v{version}.log"
    cmd = [
        sys.executable,
        "-m",
        "tasks.serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--model",
        model_uri(settings, version),
    ]
    service = start("sandbox", cmd, port=port, health_path="/healthz", log=log_file)
    try:
        yield service.url
    except DeployError as exc:
        raise DeployError(f"{exc} (sandbox log: {log_file})") from exc
    finally:
        stop(service)


def validate_in_sandbox(settings: Settings, version: str) -> dict[str, Any]:
    images = known_images(settings, version)
    with sandbox(settings, version) as url:
        return smoke_test(settings, url, version, images)


# -- roll-out and rollback ------------------------------------------------------------------------


def reload_serving(settings: Settings, version: str | None) -> dict[str, Any]:
    """``POST /admin/reload`` on the live server: ``version``, or the current champion alias when None."""
    if settings.admin_token is None:
        raise DeployError("no admin token (VIGIL_ADMIN_TOKEN): cannot ask the serving app to reload")
    body = json.dumps({"model": model_uri(settings, version)} if version else {}).encode()
    headers = {
        "Authorization": f"Bearer {settings.admin_token.get_secret_value()}",
        "Content-Type": "application/json",
    }
    try:
        status, answer = _request(
            f"{settings.serving_url}/admin/reload",
            data=body,
            headers=headers,
            timeout=settings.deploy.startup_timeout_s,
        )
    except OSError as exc:
        raise DeployError(f"serving at {settings.serving_url} unreachable: {exc}") from exc
    if status != 200:
        raise DeployError(
            f"serving at {settings.serving_url} refused to reload: HTTP {status} "
            f"{answer.get('message', answer)}"
        )
    return answer


def roll_out(settings: Settings, version: str) -> dict[str, Any]:
    if settings.deploy.rollout == "docker":
        from tasks.docker_rollout import recreate_serving

        return recreate_serving(settings, model_uri(settings, version))
    answer = reload_serving(settings, version)
    log.info("serving at %s reloaded with version %s", settings.serving_url, version)
    return {"rollout": "reload", "url": settings.serving_url, "loaded": answer.get("loaded", answer)}


def post_check(settings: Settings, version: str) -> dict[str, Any]:
    return smoke_test(settings, settings.serving_url, version, known_images(settings, version))


def rollback(settings: Settings, version: str, reason: str) -> str:
    """Give ``champion`` back to ``previous`` and reload it; returns the message the failed run shows."""
    from tasks.registry import CHAMPION, Registry

    registry = Registry(settings)
    current = registry.version(CHAMPION)
    if current is None or str(current.version) != str(version):
        restored = current.version if current else None
        message = f"deployment of version {version} failed ({reason}); champion already moved to {restored}"
    else:
        try:
            move = registry.rollback(reason)
            restored = move.champion
        except LookupError:
            registry.client.delete_registered_model_alias(registry.name, CHAMPION)
            registry.client.set_model_version_tag(registry.name, str(version), "rolled_back", "true")
            restored = None
        message = f"deployment of version {version} failed ({reason}); rolled back: champion is " + (
            f"version {restored} again" if restored else "unset (there was no previous version)"
        )
    if restored and settings.deploy.rollout == "reload":
        try:
            reload_serving(settings, str(restored))
            message += f"; serving reloaded version {restored}"
        except DeployError as exc:
            message += f"; serving could not reload: {exc}"
    elif restored:
        from tasks.docker_rollout import recreate_serving

        recreate_serving(settings, model_uri(settings, str(restored)))
        message += f"; serving container recreated with version {restored}"
    log.error(message)
    return message


def tune_champion(settings: Settings, version: str) -> dict[str, Any]:
    """Inference tuning for ``version`` on this machine; returns its JSON summary."""
    from tasks.tune import tune_inference

    return tune_inference(model_uri(settings, version), settings).summary()


def run_deploy(settings: Settings, version: str, *, tune: bool = True) -> dict[str, Any]:
    """The ``deploy`` DAG's steps in one process (``vigil deploy``); rolls back and raises on failure."""
    steps: list[tuple[str, Any]] = [("tune", tune_champion)] if tune else []
    steps += [
        ("smoke_test_sandbox", validate_in_sandbox),
        ("roll_out", roll_out),
        ("post_deploy_check", post_check),
    ]
    results: dict[str, Any] = {"version": version}
    for name, step in steps:
        try:
            results[name] = step(settings, version)
        except Exception as exc:
            raise DeployError(rollback(settings, version, f"{name}: {exc}")) from exc
    return results
