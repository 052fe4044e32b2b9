"""Redeploying the detection API after a promotion: sandbox smoke test, roll-out, post-check, rollback.

1. **Sandbox**: the serving app starts on the new champion apart from the live one and is
   smoke-tested (:mod:`tasks.deploy.smoke`): ready, the expected model version, verdicts on known
   images at least ``deploy.smoke_min_accuracy`` right, p95 latency within ``deploy.smoke_max_p95_ms``.
2. **Roll-out**: the strategy of ``deploy.rollout`` (:mod:`tasks.deploy.rollout`) makes the live
   server serve the version.
3. **Post-deploy check**: the same smoke test against the live server.

Any failure rolls back: ``champion`` returns to ``previous`` and the live server gets it again.
Each detector family has its own champion: a VLM champion (the cascade's second stage) is tested alone
in the sandbox and reaches the live server by reload, next to the serving model.
"""

from __future__ import annotations

import logging
from typing import Any

from tasks.deploy.rollout import rollout_for
from tasks.deploy.smoke import DeployError, is_second_stage, known_images, model_uri, smoke_test
from tasks.registry import CHAMPION, Registry
from tasks.settings import Settings
from tasks.tune import tune_inference

log = logging.getLogger("vigil.deploy")


class NothingToDeploy(Exception):
    """A champion that serving does not use (a VLM with ``serving.cascade`` off): the run is skipped."""


def deploy_model(
    settings: Settings, requested: str | None = None, event_extras: list[dict] | None = None
) -> str:
    """The form's model, else the newest triggering ``champion`` event's, else the serving model."""
    named = [extra["model_name"] for extra in event_extras or [] if extra and extra.get("model_name")]
    name = requested or (named[-1] if named else settings.model_name)
    if name not in (settings.model_name, settings.vlm_model_name):
        raise DeployError(
            f"no registered model {name!r}: serving uses {settings.model_name} and {settings.vlm_model_name}"
        )
    return name


def champion_version(
    settings: Settings,
    requested: str | None = None,
    event_extras: list[dict] | None = None,
    model_name: str | None = None,
) -> str:
    """The form's version, else the triggering ``champion`` event's (of ``model_name``), else the alias."""
    name = model_name or settings.model_name
    extras = [e for e in event_extras or [] if e and e.get("model_name", name) == name]
    try:
        version = Registry(settings, name=name).pick(requested, extras, CHAMPION)
    except LookupError as exc:
        raise DeployError(f"nothing to deploy: {exc}") from exc
    if is_second_stage(settings, name) and not settings.serving.cascade:
        raise NothingToDeploy(
            f"{name} version {version} is the VLM champion, but serving.cascade is off: serving does not "
            "use it (turn the cascade on to serve it as the second stage)"
        )
    return version


def validate_in_sandbox(settings: Settings, version: str, model_name: str | None = None) -> dict[str, Any]:
    """The version alone in a sandbox server (a VLM too): ready, right version, verdicts, latency."""
    images = known_images(settings, version, model_name=model_name)
    with rollout_for(settings).sandbox(version, model_name) as url:
        return smoke_test(settings, url, version, images)


def roll_out(settings: Settings, version: str, model_name: str | None = None) -> dict[str, Any]:
    return rollout_for(settings).roll_out(version, model_name)


def post_check(settings: Settings, version: str, model_name: str | None = None) -> dict[str, Any]:
    """The live server: a VLM version is reached through the cascade (every request explained)."""
    images = known_images(settings, version, model_name=model_name)
    second = is_second_stage(settings, model_name)
    return smoke_test(settings, settings.serving_url, version, images, second_stage=second)


def rollback(settings: Settings, version: str, reason: str, model_name: str | None = None) -> str:
    """Give ``champion`` back to ``previous`` and roll it out; returns the message the failed run shows."""
    registry = Registry(settings, name=model_name)
    current = registry.version(CHAMPION)
    what = f"{registry.name} version {version}"
    if current is None or str(current.version) != str(version):
        restored = current.version if current else None
        message = f"deployment of {what} failed ({reason}); champion already moved to {restored}"
    else:
        try:
            restored = registry.rollback(reason).champion
        except LookupError:
            registry.withdraw_champion(version, reason)
            restored = None
        message = f"deployment of {what} failed ({reason}); rolled back: champion is " + (
            f"version {restored} again" if restored else "unset (there was no previous version)"
        )
    if restored:
        try:
            rollout_for(settings).roll_out(str(restored), model_name)
            message += f"; serving is back on version {restored}"
        except DeployError as exc:
            message += f"; serving could not get version {restored} back: {exc}"
    log.error(message)
    return message


def tune_champion(settings: Settings, version: str, model_name: str | None = None) -> dict[str, Any]:
    """Inference tuning for ``version`` on this machine; returns its JSON summary."""

    return tune_inference(model_uri(settings, version, model_name), settings).summary()


def run_deploy(
    settings: Settings, version: str, *, tune: bool = True, model_name: str | None = None
) -> dict[str, Any]:
    """The ``deploy`` DAG's steps in one process (``vigil deploy``); rolls back and raises on failure."""
    steps: list[tuple[str, Any]] = [("tune", tune_champion)] if tune else []
    steps += [
        ("smoke_test_sandbox", validate_in_sandbox),
        ("roll_out", roll_out),
        ("post_deploy_check", post_check),
    ]
    results: dict[str, Any] = {"model_name": model_name or settings.model_name, "version": version}
    for name, step in steps:
        try:
            results[name] = step(settings, version, model_name)
        except Exception as exc:
            raise DeployError(rollback(settings, version, f"{name}: {exc}", model_name)) from exc
    return results
