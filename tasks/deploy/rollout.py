"""How a new version reaches the serving app: one strategy, chosen once from ``deploy.rollout``.

* ``reload`` (embedded): the sandbox is a subprocess of this venv on a free loopback port; the
  roll-out is ``POST /admin/reload`` on the live server, which swaps models without failing
  in-flight requests.
* ``docker`` (compose): the sandbox is a throwaway container of the serving image; the roll-out
  recreates the serving container on the pinned version through the Docker API
  (:mod:`tasks.deploy.docker`), removing the old one only once the new one is healthy.

A VLM version (the cascade's second stage) is tested alone in the sandbox and reaches the live
server by ``POST /admin/reload`` in both modes: the serving model stays as it is.

Both answer the same three questions — where can a sandbox on version N answer, how does the live
server get version N, and how does it get the restored version after a rollback — so the deploy
steps (:mod:`tasks.deploy.run`) never ask which one is in use.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

from tasks.deploy import docker
from tasks.deploy.smoke import DeployError, is_second_stage, model_uri, request
from tasks.settings import Settings
from tasks.stack.services import free_port, start, stop

log = logging.getLogger("vigil.deploy")


class Rollout(Protocol):
    def sandbox(self, version: str, model_name: str | None = None) -> AbstractContextManager[str]:
        """A serving app on ``version`` (of ``model_name``, default the serving model) apart from the
        live one; yields its URL. A VLM version is served there alone (no cascade): its own test."""

    def roll_out(self, version: str, model_name: str | None = None) -> dict[str, Any]:
        """Make the live server serve ``version``; what was done, for the task's result."""


ALONE = {"VIGIL_SERVING__CASCADE": "false"}  # a sandbox tests one model


def reload_live(settings: Settings, uri: str) -> dict[str, Any]:
    """``POST /admin/reload`` on the live server: the first or the second (VLM) stage swaps in place."""
    if settings.admin_token is None:
        raise DeployError("no admin token (VIGIL_ADMIN_TOKEN): cannot ask the serving app to reload")
    headers = {
        "Authorization": f"Bearer {settings.admin_token.get_secret_value()}",
        "Content-Type": "application/json",
    }
    try:
        status, answer = request(
            f"{settings.serving_url}/admin/reload",
            data=json.dumps({"model": uri}).encode(),
            headers=headers,
            timeout=settings.deploy.startup_timeout_s,
        )
    except OSError as exc:
        raise DeployError(f"serving at {settings.serving_url} unreachable: {exc}") from exc
    if status != 200:
        raise DeployError(
            f"serving at {settings.serving_url} refused to reload: HTTP {status} {answer.get('message', answer)}"
        )
    log.info("serving at %s reloaded with %s", settings.serving_url, uri)
    return {"rollout": "reload", "url": settings.serving_url, "loaded": answer.get("model", answer)}


class ReloadRollout:
    """Embedded mode: a subprocess sandbox, and ``POST /admin/reload`` on the live server."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @contextmanager
    def sandbox(self, version: str, model_name: str | None = None) -> Iterator[str]:
        port = free_port()
        name = model_name or self.settings.model_name
        log_file = Path(self.settings.home) / "deploy" / f"sandbox-{name}-v{version}.log"
        cmd = [sys.executable, "-m", "tasks.serve", "--host", "127.0.0.1", "--port", str(port)]
        service = start(
            "sandbox",
            [*cmd, "--model", model_uri(self.settings, version, model_name)],
            port=port,
            health_path="/healthz",
            log=log_file,
            env={**os.environ, **(ALONE if is_second_stage(self.settings, model_name) else {})},
        )
        try:
            yield service.url
        except DeployError as exc:
            raise DeployError(f"{exc} (sandbox log: {log_file})") from exc
        finally:
            stop(service)

    def roll_out(self, version: str, model_name: str | None = None) -> dict[str, Any]:
        return reload_live(self.settings, model_uri(self.settings, version, model_name))


class DockerRollout:
    """Compose: a throwaway sandbox container, and the serving container recreated on the version."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @contextmanager
    def sandbox(self, version: str, model_name: str | None = None) -> Iterator[str]:
        alone = ALONE if is_second_stage(self.settings, model_name) else {}
        uri = model_uri(self.settings, version, model_name)
        with docker.sandbox_container(self.settings, uri, env=alone) as url:
            yield url

    def roll_out(self, version: str, model_name: str | None = None) -> dict[str, Any]:
        uri = model_uri(self.settings, version, model_name)
        if is_second_stage(self.settings, model_name):  # the serving container keeps its first stage
            return reload_live(self.settings, uri)
        return docker.recreate_serving(self.settings, uri)


STRATEGIES: dict[str, type] = {"reload": ReloadRollout, "docker": DockerRollout}


def rollout_for(settings: Settings) -> Rollout:
    """The strategy of ``settings.deploy.rollout``."""
    return STRATEGIES[settings.deploy.rollout](settings)
