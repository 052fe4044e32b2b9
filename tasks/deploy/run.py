"""Redeploying the detection API after a promotion: sandbox smoke test, roll-out, post-check, rollback.

1. **Sandbox**: the serving app starts on the new champion apart from the live one and is
   smoke-tested (:mod:`tasks.deploy.smoke`): ready, the expected model version, verdicts on known
   images at least ``deploy.smoke_min_accuracy`` right, p95 latency within ``deploy.smoke_max_p95_ms``.
2. **Roll-out**: the strategy of ``deploy.rollout`` (:mod:`tasks.deploy.rollout`) makes the live
   server serve the version.
3. **Post-deploy check**: the same smoke test against the live server.

Any failure rolls back: ``champion`` returns to ``previous`` and the live server gets it again.
"""

from __future__ import annotations

import logging
from typing import Any

from tasks.deploy.rollout import rollout_for
from tasks.deploy.smoke import DeployError, known_images, model_uri, smoke_test
from tasks.registry import CHAMPION, Registry
from tasks.settings import Settings
from tasks.tune import tune_inference

log = logging.getLogger("vigil.deploy")


def champion_version(
    settings: Settings, requested: str | None = None, event_extras: list[dict] | None = None
) -> str:
    """The form's version, else the triggering ``champion`` event's, else the alias."""
    try:
        return Registry(settings).pick(requested, event_extras, CHAMPION)
    except LookupError as exc:
        raise DeployError(f"nothing to deploy: {exc}") from exc


def validate_in_sandbox(settings: Settings, version: str) -> dict[str, Any]:
    images = known_images(settings, version)
    with rollout_for(settings).sandbox(version) as url:
        return smoke_test(settings, url, version, images)


def roll_out(settings: Settings, version: str) -> dict[str, Any]:
    return rollout_for(settings).roll_out(version)


def post_check(settings: Settings, version: str) -> dict[str, Any]:
    return smoke_test(settings, settings.serving_url, version, known_images(settings, version))


def rollback(settings: Settings, version: str, reason: str) -> str:
    """Give ``champion`` back to ``previous`` and roll it out; returns the message the failed run shows."""
    registry = Registry(settings)
    current = registry.version(CHAMPION)
    if current is None or str(current.version) != str(version):
        restored = current.version if current else None
        message = f"deployment of version {version} failed ({reason}); champion already moved to {restored}"
    else:
        try:
            restored = registry.rollback(reason).champion
        except LookupError:
            registry.withdraw_champion(version, reason)
            restored = None
        message = f"deployment of version {version} failed ({reason}); rolled back: champion is " + (
            f"version {restored} again" if restored else "unset (there was no previous version)"
        )
    if restored:
        try:
            rollout_for(settings).roll_out(str(restored))
            message += f"; serving is back on version {restored}"
        except DeployError as exc:
            message += f"; serving could not get version {restored} back: {exc}"
    log.error(message)
    return message


def tune_champion(settings: Settings, version: str) -> dict[str, Any]:
    """Inference tuning for ``version`` on this machine; returns its JSON summary."""

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
