"""`vigil sources` and `vigil collect SOURCE` run the same code as the DAG, from a shell."""

from __future__ import annotations

import json
import shutil

from tasks.cli import main
from tasks.demo.data import DemoSpec, generate
from tasks.settings import DEFAULT_INCLUDE_DIR

SMALL = DemoSpec(per_split=(("train", 3), ("val", 1), ("test", 1)))


def test_sources_lists_every_source(capsys):
    assert main(["sources", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["kind"], r["enabled"]) for r in rows] == [
        ("inbox", "folder", True),
        ("x_ai_art", "x", False),
        ("mastodon_photography", "mastodon", False),
    ]
    assert rows[0]["dag_id"] == "collect_inbox" and rows[0]["schedule"] == "*/10 * * * *"


def test_collect_the_inbox_twice(settings, store, capsys):
    generate(settings.inbox, SMALL)
    assert main(["collect", "inbox", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["images"] == 10 and first["labels"] == {"real": 5, "fake": 5}
    assert store.exists(first["manifest"].removeprefix(store.url + "/"))
    assert main(["collect", "inbox", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["batch_id"] is None


def test_errors_are_one_clear_line(settings, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("X_BEARER_TOKEN", raising=False)
    assert main(["collect", "x_ai_art"]) == 2
    assert "needs a token" in capsys.readouterr().err
    assert main(["collect", "nope"]) == 2
    assert "no source named 'nope'" in capsys.readouterr().err
    include = tmp_path / "include"
    shutil.copytree(DEFAULT_INCLUDE_DIR, include)
    (include / "sources.yaml").write_text("sources:\n  - {name: broken, kind: folder, schedule: '@often'}\n")
    monkeypatch.setenv("VIGIL_INCLUDE_DIR", str(include))
    assert main(["sources"]) == 2
    assert "sources[0] (name='broken').schedule" in capsys.readouterr().err
