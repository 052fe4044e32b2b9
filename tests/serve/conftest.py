"""Fixtures of the serving tests (helpers in serve_helpers.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tasks.settings import Settings
from tests.helpers.serve import ImageHost, LiveServer, make_settings


@pytest.fixture(scope="session")
def detector(trained_dir):
    """The trained tiny detector, loaded once and shared by the servers of this session."""
    from tasks.model.detector import Detector

    return Detector.load(trained_dir)


@pytest.fixture
def serve(tmp_path) -> Callable[..., LiveServer]:
    """``serve(model_source, **settings)`` starts a live server (stopped at the end of the test)."""
    from tasks.serve import create_app

    started: list[LiveServer] = []

    def start(model_source=None, *, settings: Settings | None = None, **options) -> LiveServer:
        root = tmp_path / f"server{len(started)}"
        server = LiveServer(create_app(settings or make_settings(root, **options), model_source=model_source))
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def test_images(demo_root) -> dict[str, list[Path]]:
    """Generator A's test images by label."""
    folder = demo_root / "demo_a" / "test"
    return {
        "real": sorted((folder / "0_real").glob("*.png")),
        "fake": sorted((folder / "1_fake").glob("*.png")),
    }


@pytest.fixture
def image_host():
    host = ImageHost()
    yield host
    host.close()
