"""The compose roll-out: recreate the serving container on a pinned model version through the Docker API.

The new container copies the old one's image, environment, labels (so compose still owns it), mounts,
restart policy, healthcheck and network aliases (so ``http://serving:8000`` keeps resolving), with the
command ``python -m tasks.serve --model models:/<name>/<version>``. It starts next to the old one and
replaces it only once Docker reports it healthy; an unhealthy one is removed and the old one keeps serving.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tasks.deploy.smoke import DeployError
from tasks.settings import Settings

log = logging.getLogger("vigil.deploy")

SERVE_COMMAND = ["python", "-m", "tasks.serve"]


def recreate_spec(inspect: dict[str, Any], model: str) -> dict[str, Any]:
    """From ``docker inspect`` of the running container: what to create the replacement with."""
    config, host = inspect["Config"], inspect["HostConfig"]
    networks = inspect.get("NetworkSettings", {}).get("Networks", {}) or {}
    return {
        "image": config["Image"],
        "command": [*SERVE_COMMAND, "--model", model],
        "environment": list(config.get("Env") or []),
        "labels": dict(config.get("Labels") or {}),
        "healthcheck": config.get("Healthcheck"),
        "user": config.get("User") or None,
        "working_dir": config.get("WorkingDir") or None,
        "host_config": {
            "binds": list(host.get("Binds") or []),
            "restart_policy": host.get("RestartPolicy") or None,
            "shm_size": host.get("ShmSize") or None,
            "device_requests": host.get("DeviceRequests") or None,
        },
        "networks": {
            name: sorted({a for a in (net.get("Aliases") or []) if a}) for name, net in networks.items()
        },
    }


def _wait_healthy(api, container_id: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    status = "starting"
    while time.monotonic() < deadline:
        state = api.inspect_container(container_id)["State"]
        if not state.get("Running"):
            raise RuntimeError(f"exited with code {state.get('ExitCode')}")
        status = (state.get("Health") or {}).get("Status", "healthy")
        if status == "healthy":
            return
        if status == "unhealthy":
            raise RuntimeError("Docker reports it unhealthy")
        time.sleep(2)
    raise TimeoutError(f"not healthy after {timeout:.0f}s (status {status})")


def sandbox_spec(inspect: dict[str, Any], model: str) -> dict[str, Any]:
    """A throwaway copy of the serving container on ``model``: same image and settings, no compose labels
    (compose must not adopt it), no network alias (it must not receive live traffic), no restart."""
    spec = recreate_spec(inspect, model)
    spec["labels"] = {"vigil.role": "sandbox"}
    spec["networks"] = {name: [] for name in spec["networks"]}
    spec["host_config"]["restart_policy"] = None
    spec["host_config"]["binds"] = []
    return spec


def _api(settings: Settings):
    import docker

    return docker.APIClient(base_url=settings.deploy.docker_url)


def _inspect_serving(api, settings: Settings) -> dict[str, Any]:
    import docker

    name = settings.deploy.serving_container
    try:
        return api.inspect_container(name)
    except docker.errors.NotFound as exc:
        raise DeployError(f"no container named {name!r} (deploy.serving_container)") from exc


def _create(api, name: str, spec: dict[str, Any]) -> str:
    networks = list(spec["networks"].items())
    endpoint = None
    if networks:
        first, aliases = networks[0]
        endpoint = api.create_networking_config({first: api.create_endpoint_config(aliases=aliases or None)})
    created = api.create_container(
        spec["image"],
        command=spec["command"],
        name=name,
        environment=spec["environment"],
        labels=spec["labels"],
        healthcheck=spec["healthcheck"],
        user=spec["user"],
        working_dir=spec["working_dir"],
        host_config=api.create_host_config(**{k: v for k, v in spec["host_config"].items() if v}),
        networking_config=endpoint,
    )
    for network, aliases in networks[1:]:
        api.connect_container_to_network(created["Id"], network, aliases=aliases or None)
    return created["Id"]


@contextmanager
def sandbox_container(settings: Settings, model: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """The serving image on ``model`` in a throwaway container on the compose network (``env`` on top
    of the serving container's); yields its URL."""
    api = _api(settings)
    name = f"{settings.deploy.serving_container}-sandbox-{secrets.token_hex(3)}"
    spec = sandbox_spec(_inspect_serving(api, settings), model)
    overridden = {f"{key}=" for key in env or {}}
    spec["environment"] = [e for e in spec["environment"] if not any(e.startswith(k) for k in overridden)] + [
        f"{key}={value}" for key, value in (env or {}).items()
    ]
    container_id = _create(api, name, spec)
    try:
        api.start(container_id)
        yield f"http://{name}:8000"
    finally:
        api.remove_container(container_id, force=True)


def recreate_serving(settings: Settings, model: str) -> dict[str, Any]:
    """Replace the serving container with one on ``model``; the old one is removed only after success."""
    api = _api(settings)
    name = settings.deploy.serving_container
    old = _inspect_serving(api, settings)
    new_id = _create(api, f"{name}-next-{secrets.token_hex(3)}", recreate_spec(old, model))
    try:
        api.start(new_id)
        _wait_healthy(api, new_id, settings.deploy.startup_timeout_s)
    except Exception as exc:
        logs = api.logs(new_id, tail=40).decode(errors="replace")
        api.remove_container(new_id, force=True)
        raise DeployError(
            f"the new serving container on {model} did not become healthy: {exc}\n{logs}"
        ) from exc
    api.stop(old["Id"], timeout=30)
    api.remove_container(old["Id"])
    api.rename(new_id, name)
    log.info("serving container %s recreated on %s", name, model)
    return {"rollout": "docker", "container": name, "id": new_id[:12], "model": model}
