"""How a new version reaches the serving app: one strategy, chosen once from ``deploy.rollout``.

* ``reload`` (embedded): the sandbox is a subprocess of this venv on a free loopback port; the
  roll-out is ``POST /admin/reload`` on the live server, which swaps models without failing
  in-flight requests.
* ``docker`` (compose): the sandbox is a throwaway container of the serving image; the roll-out
  recreates the serving container on the pinned version through the Docker API
  (:mod:`tasks.deploy.docker`), removing the old one only once the new one is healthy.

Both answer the same three questions — where can a sandbox on version N answer, how does the live
server get version N, and how does it get the restored version after a rollback — so the deploy
steps (:mod:`tasks.deploy.run`) never ask which one is in use.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

from tasks.deploy import docker
from tasks.deploy.smoke import DeployError, model_uri, request
from tasks.settings import Settings
from tasks.stack.services import free_port, start, stop

log = logging.getLogger("vigil.deploy")


class Rollout(Protocol):
    def sandbox(self, version: str) -> AbstractContextManager[str]:
        """A serving app on ``version`` apart from the live one; yields its URL."""

    def roll_out(self, version: str) -> dict[str, Any]:
        """Make the live server serve ``version``; what was done, for the task's result."""


class ReloadRollout:
    """Embedded mode: a subprocess sandbox, and ``POST /admin/reload`` on the live server."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @contextmanager
    def sandbox(self, version: str) -> Iterator[str]:
        port = free_port()
        log_file = Path(self.settings.home) / "deploy" / f"sandbox-v{version}.log"
        cmd = [sys.executable, "-m", "tasks.serve", "--host", "127.0.0.1", "--port", str(port)]
        service = start(
            "sandbox",
            [*cmd, "--model", model_uri(self.settings, version)],
            port=port,
            health_path="/healthz",
            log=log_file,
        )
        try:
            yield service.url
        except DeployError as exc:
            raise DeployError(f"{exc} (sandbox log: {log_file})") from exc
        finally:
            stop(service)

    def roll_out(self, version: str) -> dict[str, Any]:
        settings = self.settings
        if settings.admin_token is None:
            raise DeployError("no admin token (VIGIL_ADMIN_TOKEN): cannot ask the serving app to reload")
        headers = {
            "Authorization": f"Bearer {settings.admin_token.get_secret_value()}",
            "Content-Type": "application/json",
        }
        body = json.dumps({"model": model_uri(settings, version)}).encode()
        try:
            status, answer = request(
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
        log.info("serving at %s reloaded with version %s", settings.serving_url, version)
        return {"rollout": "reload", "url": settings.serving_url, "loaded": answer.get("model", answer)}


class DockerRollout:
    """Compose: a throwaway sandbox container, and the serving container recreated on the version."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @contextmanager
    def sandbox(self, version: str) -> Iterator[str]:
        with docker.sandbox_container(self.settings, model_uri(self.settings, version)) as url:
            yield url

    def roll_out(self, version: str) -> dict[str, Any]:
        return docker.recreate_serving(self.settings, model_uri(self.settings, version))


STRATEGIES: dict[str, type] = {"reload": ReloadRollout, "docker": DockerRollout}


def rollout_for(settings: Settings) -> Rollout:
    """The strategy of ``settings.deploy.rollout``."""
    return STRATEGIES[settings.deploy.rollout](settings)
