"""Fixtures of the deployment tests: the compose file as a user's generated .env would render it, and
fresh virtualenvs built from each image's requirements file (in parallel, once per session)."""

from __future__ import annotations

import sys

import pytest

from .deploy_files import ENV_EXAMPLE, REPO, load_compose
from .image_venvs import ImageVenvs

sys.path.insert(0, str(REPO / "docker"))
import make_env  # noqa: E402  (docker/make_env.py: the script users run on the host)


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
