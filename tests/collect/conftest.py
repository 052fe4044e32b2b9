"""Fixtures of the collection tests: settings reading a given sources.yaml."""

from __future__ import annotations

import textwrap

import pytest


@pytest.fixture
def with_sources(settings, tmp_path):
    """Settings (on the parametrized store) reading ``sources.yaml`` from the given text.

    The inbox is ``tmp_path/inbox``; ``loopback=True`` lets downloads reach the fixtures, fast.
    """

    def make(body: str, *, loopback: bool = False, **updates):
        include = tmp_path / "include"
        include.mkdir(exist_ok=True)
        (include / "sources.yaml").write_text(textwrap.dedent(body))
        if loopback:
            updates["download"] = settings.download.model_copy(
                update={
                    "allow_private_networks": True,
                    "backoff_s": 0.05,
                    "politeness_delay_s": 0,
                    "timeout_s": 5,
                }
            )
        return settings.model_copy(
            update={"include_dir": include, "inbox": str(tmp_path / "inbox"), **updates}
        )

    return make
