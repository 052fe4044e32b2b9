"""DAG files are parsed every 30 s by every Airflow component, and `vigil --help` must answer at once:
neither may import the heavy libraries (the lint rule bans them at module level; this checks what a
module-level import of Vigil's own code pulls in transitively)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
HEAVY = (
    "torch",
    "transformers",
    "peft",
    "mlflow",
    "pandas",
    "pyarrow",
    "great_expectations",
    "matplotlib",
    "sklearn",
    "tweepy",
    "docker",
    "onnxruntime",
    "evidently",
    "PIL",
    "skimage",
)


def new_heavy_modules(statement: str) -> list[str]:
    code = (
        "import json, sys, airflow.sdk\n"
        f"sys.path.insert(0, {str(DAGS)!r})\n"
        "before = set(sys.modules)\n"
        f"{statement}\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in set(sys.modules) - before}} & set({list(HEAVY)!r}))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("dag_file", sorted(p.stem for p in DAGS.glob("*.py")))
def test_parsing_a_dag_file_imports_nothing_heavy(dag_file):
    assert new_heavy_modules(f"import {dag_file}") == []


def test_the_cli_parser_imports_nothing_heavy():
    # PIL is fine for the CLI (tens of milliseconds); the libraries that cost seconds are not.
    assert set(new_heavy_modules("import tasks.cli; tasks.cli.build_parser()")) <= {"PIL"}
