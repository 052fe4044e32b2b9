"""Each image's requirements file installs into a fresh virtualenv, and the image's code runs with it.

This is what ``docker build`` would find out about missing or conflicting packages, without Docker:
the venvs hold exactly docker/<image>/requirements.txt (built in parallel by the ``image_venvs``
fixture) and the repository on PYTHONPATH, as the image holds the installed ``tasks`` package.
"""

from __future__ import annotations

import json
import warnings

import pytest

from .deploy_files import REPO, trainer_pending
from .image_venvs import run_in

# Imported by what runs in the Airflow image: DAG wiring, the data-plane tasks, the gate's MLflow client.
AIRFLOW_IMPORTS = [
    "tasks.settings", "tasks.storage", "tasks.batches", "tasks.snapshots", "tasks.images", "tasks.airflow_objects",
    "great_expectations", "mlflow", "boto3", "s3fs", "tweepy", "imagehash", "PIL", "pandas", "pyarrow", "yaml",
    "airflow.providers.docker.operators.docker", "airflow.providers.amazon.aws.hooks.s3",
    "airflow.providers.standard.operators.python",
]
# Libraries the DAG files must not import at module level (they slow every parse; some are absent here).
HEAVY_AT_PARSE = ["torch", "transformers", "peft", "great_expectations", "mlflow", "PIL", "pandas", "tweepy"]
SERVING_IMPORTS = [
    "tasks.settings", "tasks.storage", "tasks.images", "fastapi", "uvicorn", "multipart", "prometheus_client",
    "torch", "transformers", "peft", "mlflow.pyfunc", "pandas", "PIL", "boto3", "s3fs",
]


def entry_point_or_fallback(module: str, fallback: list[str]) -> list[str]:
    """The image's entry-point module when it exists; until then, what it will import (and a warning)."""
    if (REPO / "tasks" / f"{module}.py").exists() or (REPO / "tasks" / module / "__init__.py").exists():
        return [f"tasks.{module}", *fallback]
    warnings.warn(f"tasks.{module} does not exist yet: checked {', '.join(fallback)} instead", stacklevel=2)
    return fallback


def imports_code(modules: list[str]) -> str:
    return "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules) + "print('imported')\n"


DAGBAG_CHECK = """
import importlib, json, sys, tempfile
from airflow.dag_processing.dagbag import DagBag
DagBag(tempfile.mkdtemp())  # what Airflow itself loads to parse, before any DAG file
before = set(sys.modules)
bag = DagBag("dags")
heavy = sorted(m for m in {heavy!r} if m in sys.modules and m not in before)
stats = sorted(s.file.lstrip("/") for s in bag.dagbag_stats)
for module in {imports!r}:
    importlib.import_module(module)
print("RESULT " + json.dumps({{"dags": sorted(bag.dag_ids), "errors": {{k: str(v) for k, v in bag.import_errors.items()}},
                              "heavy": heavy, "files": stats}}))
"""


def test_airflow_image_parses_the_dags_and_imports_the_task_code(image_venvs, tmp_path):
    python = image_venvs.python("airflow")
    env = {"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"), "GX_ANALYTICS_ENABLED": "false"}
    out = run_in(python, DAGBAG_CHECK.format(heavy=HEAVY_AT_PARSE, imports=AIRFLOW_IMPORTS), env=env)
    result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    print(f"DAGs parsed in the airflow image's venv: {result['dags']}")
    assert result["errors"] == {}
    assert result["heavy"] == [], "DAG files import heavy libraries at module level"
    parsed = {f.rsplit("/", 1)[-1] for f in result["files"]}
    assert parsed and parsed <= {p.name for p in (REPO / "dags").glob("*.py")}, parsed  # it read our folder


def test_airflow_image_has_no_model_libraries(image_venvs):
    out = run_in(image_venvs.python("airflow"), "import importlib.util as u; print([m for m in "
                 "('torch', 'transformers', 'peft') if u.find_spec(m)])")
    assert out.strip() == "[]"


def test_serving_image_imports_its_entry_point(image_venvs):
    modules = entry_point_or_fallback("serve", SERVING_IMPORTS)
    assert "imported" in run_in(image_venvs.python("serving"), imports_code(modules), env={"HF_HUB_OFFLINE": "1"})


def test_serving_image_torch_is_the_cpu_build_pinned_at_root(image_venvs):
    out = run_in(image_venvs.python("serving"), "import torch; print(torch.__version__, torch.version.cuda)")
    version, cuda = out.split()
    root = next(line for line in (REPO / "requirements.txt").read_text().splitlines() if line.startswith("torch=="))
    assert version.split("+")[0] == root.split("==")[1] and cuda == "None"


def test_trainer_image_imports_its_entry_point(image_venvs):
    if not (REPO / "docker" / "trainer" / "requirements.txt").exists():
        if trainer_pending():
            pytest.skip("docker/trainer/ and tasks/train.py are the model helper's; neither is on this branch yet")
        pytest.fail("tasks/train exists but docker/trainer/requirements.txt does not")
    modules = entry_point_or_fallback("train", ["tasks.settings", "tasks.storage", "tasks.snapshots", "torch",
                                                "transformers", "peft", "mlflow"])
    assert "imported" in run_in(image_venvs.python("trainer"), imports_code(modules), env={"HF_HUB_OFFLINE": "1"})
