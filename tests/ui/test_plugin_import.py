"""Every Airflow component imports plugins: importing Vigil's must not pull in the pages' dependencies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
HEAVY = (
    "mlflow",
    "pandas",
    "torch",
    "great_expectations",
    "jinja2",
    "fastapi",
    "airflow.api_fastapi",
    "tasks",
)


def test_importing_the_plugin_loads_nothing_heavy():
    code = f"""
import json, sys
import airflow.plugins_manager
before = set(sys.modules)
sys.path.insert(0, {str(PLUGINS)!r})
import vigil_ui
new = sorted(m for m in set(sys.modules) - before)
print(json.dumps({{"new": new, "plugin": vigil_ui.VigilUIPlugin.name,
                   "views": [v["href"] for v in vigil_ui.VigilUIPlugin.external_views]}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    heavy = [m for m in result["new"] if m.split(".")[0] in HEAVY or m.startswith(HEAVY)]
    assert heavy == [], heavy
    assert result["plugin"] == "vigil_ui"
    assert result["views"] == [
        "/vigil/data-quality",
        "/vigil/models",
        "/vigil/runs/{DAG_ID}/{RUN_ID}",
        "/vigil/monitoring",
        "/vigil/review",
    ]
