"""One real embedded stack for tests/stack: ``tasks.stack.up`` exactly as ``make demo`` starts it
(MLflow, Airflow on its private PostgreSQL, serving), on free ports and a temporary state folder.

Its include folder is the repository's, except that the X source is enabled against a loopback fake
of the X API (tests/helpers/collect.py), so that a test can run a real collection that needs a token.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.helpers.collect import FakeX, FixtureServer

X_TOKEN = "edited-in-the-ui-7c1e"  # what a person types into vigil_x's password field


@dataclass
class Embedded:
    settings: object
    info: dict
    fake_x: FakeX

    @property
    def airflow_home(self) -> Path:
        return Path(self.info["airflow_home"])

    def client(self, url: str | None = None, **options):
        from tasks.stack.airflow_client import AirflowClient

        return AirflowClient(
            url or self.settings.airflow_url, "admin", self.info["airflow_password"], **options
        )

    def services(self):
        from tasks import stack

        return stack.load_stack(self.settings.home / "stack.json")[0]

    def restart(self) -> None:
        """``vigil stack down`` then ``vigil stack up`` on the same state folder."""
        from tasks import stack

        stack.down(self.settings)
        self.info = stack.up(self.settings)


@pytest.fixture(scope="session")
def embedded(tmp_path_factory):
    from tasks import stack
    from tasks.settings import DEFAULT_INCLUDE_DIR, Settings

    tmp = tmp_path_factory.mktemp("stack")
    server = FixtureServer()
    fake_x = FakeX(server, token=X_TOKEN)
    include = tmp / "include"
    shutil.copytree(DEFAULT_INCLUDE_DIR, include)
    doc = yaml.safe_load((include / "sources.yaml").read_text())
    x_source = next(s for s in doc["sources"] if s["kind"] == "x")
    x_source.update(enabled=True, options={"api_base_url": server.url})
    (include / "sources.yaml").write_text(yaml.safe_dump(doc))
    # The fake's media are on loopback, which collectors refuse unless told otherwise.
    (include / "vigil.yaml").write_text(yaml.safe_dump({"download": {"allow_private_networks": True}}))
    ports: set[int] = set()
    while len(ports) < 3:
        ports.add(stack.free_port())
    airflow, mlflow, serving = (f"http://127.0.0.1:{port}" for port in ports)
    settings = Settings(
        home=tmp / "vigil",
        include_dir=include,
        airflow_url=airflow,
        mlflow_tracking_uri=mlflow,
        serving_url=serving,
    )
    try:
        yield Embedded(settings, stack.up(settings), fake_x)
    finally:
        stack.down(settings)
        server.close()
