"""Fixtures of the deployment tests: the compose file as a user's generated .env would render it, and
fresh virtualenvs built from each image's requirements file (in parallel, once per session)."""

from __future__ import annotations

import importlib.util

import pytest

from tests.helpers.deploy_files import ENV_EXAMPLE, REPO, load_compose
from tests.helpers.image_venvs import ImageVenvs

# docker/make_env.py: the script users run on the host (not part of the `tasks` package).
_spec = importlib.util.spec_from_file_location("make_env", REPO / "docker" / "make_env.py")
make_env = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_env)


@pytest.fixture(scope="session")
def generated_env() -> dict[str, str]:
    """The .env that ``docker/make_env.py`` writes on a host whose Docker socket has group 998."""
    text, missing = make_env.render(ENV_EXAMPLE.read_text(), docker_gid=998)
    assert missing == []
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


@pytest.fixture(scope="session")
def compose(generated_env) -> dict:
    """docker-compose.yaml interpolated with the generated .env."""
    return load_compose(generated_env)


@pytest.fixture(scope="session")
def image_venvs(tmp_path_factory) -> ImageVenvs:
    """Fresh venvs of every docker/*/requirements.txt, all building in the background from first use."""
    venvs = ImageVenvs(tmp_path_factory.mktemp("image-venvs"))
    yield venvs
    venvs.close()


@pytest.fixture(scope="session", autouse=True)
def _start_image_venvs_early(request) -> None:
    """Start the venv builds with the first test of this folder, so they overlap the quick tests."""
    if any("image_venvs" in getattr(item, "fixturenames", ()) for item in request.session.items):
        request.getfixturevalue("image_venvs")
